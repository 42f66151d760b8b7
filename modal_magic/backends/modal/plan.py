"""What a Modal run would need, decided offline: credentials, GPU spec, image spec.

Nothing here talks to Modal's servers or imports the ``modal`` SDK, so it is
cheap to run every cell and testable anywhere. The Modal backend builds its
app and image from these values; ``--dry-run`` prints them.

* ``modal_credentials()`` follows Modal's own lookup (``modal/config.py``): each
  key from ``MODAL_<KEY>`` first, independently, else from the profile named by
  ``MODAL_PROFILE`` (empty means unset), the active one, or ``default``, in
  ``MODAL_CONFIG_PATH`` or ``~/.modal.toml``; several profiles with none active
  is an error to Modal, so it is "not configured" here.
* ``parse_gpu()`` normalises ``--gpu`` and checks counts of the types we know;
  a type we do not know is passed on with a warning, since Modal validates GPU
  names on its server and new types must not be blocked by us.
* ``ImageSpec.for_this_kernel()`` pins the container to the notebook's Python,
  torch, numpy, cloudpickle and IPython, so pickles load on both sides and the
  same kernel gives the same spec (no rebuilds).
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ...errors import UsageProblem

__all__ = ["GPU_TYPES", "DEFAULT_GPU", "IDLE", "MAP_IDLE", "parse_gpu", "modal_credentials", "ImageSpec",
           "HOW_TO_CONFIGURE"]

# Modal's GPU types (guide/gpu.md) and the most of each one container may have.
GPU_TYPES: dict[str, int] = {
    "T4": 8, "L4": 8, "A10": 4, "A10G": 4, "L40S": 8, "A100": 8, "A100-40GB": 8, "A100-80GB": 8,
    "RTX-PRO-6000": 8, "H100": 8, "H100!": 8, "H200": 8, "B200": 8, "B200+": 8,
}
DEFAULT_GPU = "L4"
"""``%%modal_gpu`` without ``--gpu``: cheap, current (bf16, 24 GB); ``%modal_config gpu=…`` changes it."""
IDLE = 300
"""Seconds the single-cell container waits, billed, for the next cell, unless ``%modal_config idle=…``.

Five minutes: long enough for the think-time between cells (reading an output, editing the next cell),
so a working session keeps its warm container and resident values, and a quarter of the twenty minutes
it used to be, so a notebook left alone bills at most five idle minutes of its GPU (about $0.33 on an
H100) where it billed twenty. Modal takes 2 to 3600 s.
"""
MAP_IDLE = 20
"""Seconds a ``--map`` pool's containers wait after their last element (Modal's ``scaledown_window``).

While a map runs, its containers are never idle for long: a finished element's container takes the next
one at once. After it, every container of the pool (up to one per element) would idle, billed: 100 H100
containers for 20 s are 0.6 GPU-hours (about $2), for the old 20 minutes 33 GPU-hours (about $130).
Twenty seconds still catches a map re-run straight away on warm containers.
"""
NO_GPU = "none"
"""``--gpu none``: a CPU-only container."""
# Packages built against one torch: installed with it, from its index, so a --pip of them cannot replace it.
TORCH_FAMILY = frozenset({"torch", "torchvision", "torchaudio", "torchtext", "torchdata", "torchrec", "torchao",
                          "triton", "pytorch-triton"})
HOW_TO_CONFIGURE = ("run `modal setup` in a terminal (or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET), "
                    "then restart the kernel")


def parse_gpu(spec: str) -> list[str]:
    """'h100:2, a100' → ['H100:2', 'A100'] (an ordered fallback list); 'none' → [] (a CPU container).

    Counts are checked for the types we know; a type we do not know is passed
    on, with a warning on stderr: Modal decides, and a new type must work here
    the day Modal offers it.
    """
    if spec.strip().lower() == NO_GPU:
        return []
    choices = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, count = part.partition(":")
        name = name.strip().upper()
        most = GPU_TYPES.get(name)
        if most is None:
            print(f"modal_gpu: --gpu {part!r}: {name!r} is not a GPU type we know ({', '.join(GPU_TYPES)}); "
                  "passing it to Modal, which decides.", file=sys.stderr)
        if count:
            if not count.strip().isdigit() or not 1 <= int(count) <= (most or 64):
                raise UsageProblem(f"--gpu {part!r}: the count must be a whole number from 1 to "
                                   f"{most or 64} for {name}.")
            choices.append(f"{name}:{int(count)}")
        else:
            choices.append(name)
    if not choices:
        raise UsageProblem(f"--gpu needs a GPU type, e.g. --gpu A10G or --gpu H100:2,A100 (or --gpu {NO_GPU} "
                           "for a CPU container)")
    return choices


def modal_credentials() -> str | None:
    """Where Modal will find its credentials ('environment', a profile in a file), or None. No network.

    Mirrors ``modal.config``: each key from the environment first, each on its
    own, then from the profile; ``auto`` must not pick Modal where Modal's
    client would refuse to start.
    """
    path = Path(os.environ.get("MODAL_CONFIG_PATH") or Path.home() / ".modal.toml")
    try:
        profiles = {name: table for name, table in _read_toml(path).items() if isinstance(table, dict)}
    except (OSError, ValueError):
        profiles = {}
    active = [name for name, table in profiles.items() if table.get("active")]
    named = os.environ.get("MODAL_PROFILE") or None  # Modal reads an empty MODAL_PROFILE as unset
    if named is None and len(profiles) > 1 and not active:
        return None  # Modal refuses to start: "No Modal profile is active"
    profile = named or (active[0] if active else "default")
    table = profiles.get(profile, {})
    sources = []
    for key in ("token_id", "token_secret"):
        if os.environ.get(f"MODAL_{key.upper()}"):
            sources.append("environment (MODAL_TOKEN_ID)")
        elif table.get(key):
            sources.append(f"profile {profile!r} in {path}")
        else:
            return None
    return " and ".join(dict.fromkeys(sources))


def _read_toml(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads(text)
    import toml  # Python 3.10: modal depends on `toml`

    return toml.loads(text)


def _dist_name(requirement: str) -> str:
    """'Scikit_Learn[extra]>=1.5' → 'scikit-learn' (PEP 503 normalised)."""
    name = re.split(r"[<>=!~\[;@ ]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


# Run in the image at build time (see ImageSpec.import_check): readable here, sent base64-encoded.
_IMPORT_CHECK = """
import importlib, importlib.metadata as m, re, sys
norm = lambda name: re.sub(r'[-_.]+', '-', name).lower()
provides = {}
for top, dists in m.packages_distributions().items():
    for dist in dists:
        provides.setdefault(norm(dist), []).append(top)
for dist in DISTS:
    own = dist.replace('-', '_')
    tops = sorted(t for t in provides.get(dist, []) if t.isidentifier()) or [own]
    tops = [own] if own in tops else tops  # torch must import itself, not just torchgen beside it
    errors = []
    for top in tops:
        try:
            importlib.import_module(top)
            break
        except Exception as exc:
            errors.append(f'{top}: {exc!r}')
    else:
        sys.exit(f'modal_magic: package {dist} was installed but does not import ({"; ".join(errors)})')
print('modal_magic: import check passed:', ', '.join(DISTS))
"""


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class ImageSpec:
    """The container image for this kernel, as plain values (the backend turns it into a modal.Image)."""

    python: str
    torch: str
    torch_index_url: str | None
    pinned: tuple[str, ...]
    extra: tuple[str, ...] = field(default=())

    @classmethod
    def for_this_kernel(cls, extra: tuple[str, ...] = ()) -> ImageSpec:
        torch_version = _version("torch") or "2.13.0"
        base, _, local = torch_version.partition("+")
        # A CUDA build names its wheel index; for a CPU/unsuffixed build, PyPI's Linux wheels ship CUDA.
        index = f"https://download.pytorch.org/whl/{local}" if re.fullmatch(r"cu\d+", local) else None
        pins = tuple(f"{name}=={version}" for name in ("numpy", "cloudpickle", "ipython")
                     if (version := _version(name)) is not None)
        for requirement in extra:
            if requirement.startswith("-"):
                raise UsageProblem(f"--pip {requirement!r}: give package specifiers (name==version), not pip options.")
        return cls(python=f"{sys.version_info.major}.{sys.version_info.minor}", torch=f"torch=={base}",
                   torch_index_url=index, pinned=pins, extra=tuple(extra))

    def torch_packages(self) -> tuple[str, ...]:
        """The torch layer: torch and the ``--pip`` packages built against it, from torch's own index.

        The torch pin is repeated in the later layer too (``extra_packages``), so
        a package that depends on torch cannot make the installer replace the
        pinned build (a CUDA build from its index) with another.
        """
        return (self.torch, *(r for r in self.extra if _dist_name(r) in TORCH_FAMILY))

    def extra_packages(self) -> tuple[str, ...]:
        """The second layer: the runner's pins, the other ``--pip`` packages, and torch's pin again."""
        return (*self.pinned, *(r for r in self.extra if _dist_name(r) not in TORCH_FAMILY), self.torch)

    def import_check(self) -> str:
        """A one-line build step that imports torch and every ``--pip`` package, naming one that fails (seed 002).

        One line because each ``run_commands`` element is one Dockerfile line.
        Import names come from the installed distribution's metadata
        (``packages_distributions``: beautifulsoup4 → bs4, scikit-learn →
        sklearn), since ``top_level.txt`` is a setuptools-only file. A package
        whose own name is one of them must import that one (torch, not just
        torchgen beside it); any other fails only when none of them imports.
        """
        script = _IMPORT_CHECK.replace("DISTS", repr(["torch", *map(_dist_name, self.extra)]))
        encoded = base64.b64encode(script.encode()).decode("ascii")
        return "python -c " + shlex.quote(f"import base64; exec(base64.b64decode('{encoded}'))")

    def describe(self) -> list[str]:
        """The spec as lines (for --dry-run); equal specs describe identically."""
        torch_line = self.torch + (f" (from {self.torch_index_url})" if self.torch_index_url else " (PyPI, CUDA build)")
        return [f"debian_slim, python {self.python}", torch_line, *self.pinned,
                *(f"{pkg} (--pip)" for pkg in self.extra), "then: import check of torch and every --pip package",
                "then: modal_magic itself (add_local_python_source)"]
