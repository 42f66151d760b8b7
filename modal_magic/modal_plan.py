"""What a Modal run would need, decided offline: credentials, GPU spec, image spec.

Nothing here talks to Modal's servers or imports the ``modal`` SDK, so it is
cheap to run every cell and testable anywhere. The Modal backend builds its
app and image from these values; ``--dry-run`` prints them.

* ``modal_credentials()`` follows Modal's own precedence (``reference/modal_api.md`` §7):
  ``MODAL_TOKEN_ID``/``MODAL_TOKEN_SECRET``, else the active profile of
  ``MODAL_CONFIG_PATH`` or ``~/.modal.toml``.
* ``parse_gpu()`` refuses unknown GPU types before anything starts: Modal's
  client only upper-cases the name, and a typo would surface at app start.
* ``ImageSpec.for_this_kernel()`` pins the container to the notebook's Python,
  torch, numpy, cloudpickle and IPython, so pickles load on both sides and the
  same kernel gives the same spec (no rebuilds).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from .errors import UsageProblem

__all__ = ["GPU_TYPES", "parse_gpu", "modal_credentials", "ImageSpec", "HOW_TO_CONFIGURE"]

# Modal's GPU types (guide/gpu.md) and the most of each one container may have.
GPU_TYPES: dict[str, int] = {
    "T4": 8, "L4": 8, "A10": 4, "A10G": 4, "L40S": 8, "A100": 8, "A100-40GB": 8, "A100-80GB": 8,
    "RTX-PRO-6000": 8, "H100": 8, "H100!": 8, "H200": 8, "B200": 8, "B200+": 8,
}
HOW_TO_CONFIGURE = ("run `modal setup` in a terminal (or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET), "
                    "then restart the kernel")


def parse_gpu(spec: str) -> list[str]:
    """'h100:2, a100' → ['H100:2', 'A100'] (an ordered fallback list); unknown types are refused."""
    choices = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, count = part.partition(":")
        name = name.strip().upper()
        if name not in GPU_TYPES:
            raise UsageProblem(f"--gpu {part!r}: unknown GPU type {name!r}. Modal has: {', '.join(GPU_TYPES)}.")
        if count:
            if not count.strip().isdigit() or not 1 <= int(count) <= GPU_TYPES[name]:
                raise UsageProblem(f"--gpu {part!r}: the count must be a whole number from 1 to "
                                   f"{GPU_TYPES[name]} for {name}.")
            choices.append(f"{name}:{int(count)}")
        else:
            choices.append(name)
    if not choices:
        raise UsageProblem("--gpu needs a GPU type, e.g. --gpu A10G or --gpu H100:2,A100")
    return choices


def modal_credentials() -> str | None:
    """Where Modal credentials were found ('environment' / a profile in a file), or None. No network."""
    if os.environ.get("MODAL_TOKEN_ID") and os.environ.get("MODAL_TOKEN_SECRET"):
        return "environment (MODAL_TOKEN_ID)"
    path = Path(os.environ.get("MODAL_CONFIG_PATH") or Path.home() / ".modal.toml")
    try:
        profiles = _read_toml(path)
    except (OSError, ValueError):
        return None
    wanted = os.environ.get("MODAL_PROFILE")
    if wanted is None:
        active = [name for name, table in profiles.items() if isinstance(table, dict) and table.get("active")]
        wanted = active[0] if active else "default"
    profile = profiles.get(wanted)
    if isinstance(profile, dict) and profile.get("token_id") and profile.get("token_secret"):
        return f"profile {wanted!r} in {path}"
    return None


def _read_toml(path: Path) -> dict:
    text = path.read_text()
    try:
        import tomllib
    except ImportError:  # Python 3.10: modal depends on `toml`
        import toml

        return toml.loads(text)
    return tomllib.loads(text)


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
    def for_this_kernel(cls, extra: tuple[str, ...] = ()) -> "ImageSpec":
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

    def import_check(self) -> str:
        """A build step that imports torch and every extra package, naming the one that fails (seed 002)."""
        names = ["torch", *(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0] for r in self.extra)]
        return ("python -c \"import importlib, importlib.metadata as m, sys\n"
                f"for dist in {names!r}:\n"
                "    try:\n"
                "        tops = (m.distribution(dist).read_text('top_level.txt') or dist.replace('-', '_')).split()\n"
                "        for top in tops:\n"
                "            importlib.import_module(top)\n"
                "    except Exception as exc:\n"
                "        sys.exit(f'modal_magic: package {dist} was installed but does not import: {exc!r}')\"")

    def describe(self) -> list[str]:
        """The spec as lines (for --dry-run); equal specs describe identically."""
        torch_line = self.torch + (f" (from {self.torch_index_url})" if self.torch_index_url else " (PyPI, CUDA build)")
        return [f"debian_slim, python {self.python}", torch_line, *self.pinned,
                *(f"{pkg} (--pip)" for pkg in self.extra), "then: import check of torch and every --pip package",
                "then: modal_magic itself (add_local_python_source)"]
