"""What Modal bills for a container, estimated from Modal's published per-second prices.

The prices are data (``prices.json`` beside this module: its source, the date it
was read, a rate per GPU type, per CPU core and per GiB of memory), so a price
change is a one-line change there, or in a file of the user's own
(``%modal_config prices=path.json``) that overrides any of its entries.

Modal bills a container for its whole life, from start to scale-down, busy or
idle, at the higher of what it reserved and what it used. We know what we
reserved (``--cpu``/``--memory``, else Modal's defaults) and how long our calls
and idle windows lasted, not what the container used: every figure here is an
estimate, and is said to be one wherever it is shown. Region and
non-preemptible multipliers and a plan's credits are not applied.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ...errors import UsageProblem

__all__ = ["Prices", "Machine", "device_type", "dollars", "ESTIMATE"]

ESTIMATE = "estimate at Modal's list prices"
"""How every figure is labelled: what it is, and that it is not Modal's bill."""

_KEYS = ("source", "read", "gpu_per_second", "gpu_aliases", "cpu_per_core_second", "memory_per_gib_second",
         "default_cpu_cores", "default_memory_mib")
# A reported device name (``nvidia-smi``, ``torch.cuda.get_device_name``) → Modal's type: most specific first.
_DEVICE_NAMES = (("B200", "B200"), ("H200", "H200"), ("H100", "H100"), ("RTX PRO 6000", "RTX-PRO-6000"),
                 ("A100.*80GB", "A100-80GB"), ("A100", "A100-40GB"), ("L40S", "L40S"), ("A10", "A10"),
                 ("L4", "L4"), ("T4", "T4"))


@dataclass(frozen=True)
class Machine:
    """What one container has, as far as its price goes."""

    gpu: str | None = None
    """A GPU type as Modal names it (``H100``, ``A100-80GB``), or None: no GPU."""
    count: int = 1
    cpu: float | None = None
    """Cores reserved; None: Modal's default."""
    memory_mib: int | None = None
    """Memory reserved; None: Modal's default."""

    @classmethod
    def asked(cls, gpu: str | None, cpu: float | None = None, memory_mib: int | None = None) -> Machine:
        """The machine a ``--gpu`` entry (``H100:2``) asks for."""
        if gpu is None:
            return cls(None, 1, cpu, memory_mib)
        name, _, count = gpu.partition(":")
        return cls(name, int(count or 1), cpu, memory_mib)

    def words(self) -> str:
        """'H100', '2× A100-80GB', 'CPU only'."""
        if self.gpu is None:
            return "CPU only"
        return self.gpu if self.count == 1 else f"{self.count}× {self.gpu}"


@dataclass(frozen=True)
class Prices:
    """Modal's per-second list prices, with where and when they were read."""

    source: str
    read: str
    gpu_per_second: dict[str, float]
    gpu_aliases: dict[str, str]
    cpu_per_core_second: float
    memory_per_gib_second: float
    default_cpu_cores: float
    default_memory_mib: int

    @classmethod
    def load(cls, override: str | None = None) -> Prices:
        """The package's table, with the entries of the JSON file ``override`` (if given) put over it.

        A file need hold only what changed, e.g. ``{"gpu_per_second": {"H100": 0.0012}}``. Raises
        ``UsageProblem`` saying what is wrong with the file, and what a file holds.
        """
        table: dict[str, Any] = json.loads(resources.files(__package__).joinpath("prices.json").read_text())
        if override:
            mine = _read_override(override)
            for key, value in mine.items():
                table[key] = {**table[key], **value} if isinstance(table.get(key), dict) else value
        return cls(**{key: table[key] for key in _KEYS})

    def type_of(self, gpu: str | None) -> str | None:
        """The table's name for GPU type ``gpu`` (``A10G`` → ``A10``), or None when the table has no price for it."""
        if gpu is None:
            return None
        name = self.gpu_aliases.get(gpu.upper(), gpu.upper())
        return name if name in self.gpu_per_second else None

    def per_second(self, machine: Machine) -> float | None:
        """Dollars per second for one such container, reservation-priced; None when its GPU type has no price."""
        cpu = self.default_cpu_cores if machine.cpu is None else machine.cpu
        memory = self.default_memory_mib if machine.memory_mib is None else machine.memory_mib
        rate = cpu * self.cpu_per_core_second + memory / 1024 * self.memory_per_gib_second
        if machine.gpu is None:
            return rate
        name = self.type_of(machine.gpu)
        if name is None:
            return None
        return rate + machine.count * self.gpu_per_second[name]

    def cost(self, machine: Machine, seconds: float) -> float | None:
        """Dollars for ``seconds`` of one such container; None when its GPU type has no price."""
        rate = self.per_second(machine)
        return None if rate is None else rate * seconds

    def cite(self) -> str:
        """Where the prices come from, for a line under a figure."""
        return f"{self.source}, read {self.read}"


def _read_override(path: str) -> dict[str, Any]:
    shape = ('a JSON object with any of "gpu_per_second" ({"H100": 0.001097, …}), "cpu_per_core_second", '
             '"memory_per_gib_second", "source" and "read"')
    try:
        mine = json.loads(Path(path).expanduser().read_text())
    except OSError as exc:
        raise UsageProblem(f"prices={path}: cannot read it ({exc.strerror or exc}); give the path of {shape}.") \
            from None
    except json.JSONDecodeError as exc:
        raise UsageProblem(f"prices={path}: not JSON ({exc.msg}, line {exc.lineno}); it should be {shape}.") from None
    unknown = [key for key in (mine if isinstance(mine, dict) else {}) if key not in _KEYS]
    if not isinstance(mine, dict) or unknown:
        raise UsageProblem(f"prices={path}: " + (f"unknown entries {', '.join(map(repr, unknown))}"
                                                  if unknown else "not a JSON object") + f"; it should be {shape}.")
    rates = list((mine.get("gpu_per_second") or {}).values()) + [
        mine[key] for key in ("cpu_per_core_second", "memory_per_gib_second") if key in mine]
    if not all(isinstance(rate, (int, float)) and rate >= 0 for rate in rates):
        raise UsageProblem(f"prices={path}: every price must be a number of dollars per second, 0 or more.")
    return mine


def device_type(name: str) -> str | None:
    """Modal's GPU type for a device name as the container reports it ('NVIDIA H100 80GB HBM3' → 'H100')."""
    for pattern, gpu in _DEVICE_NAMES:
        if re.search(rf"\b{pattern}", name.upper()):
            return gpu
    return None


def dollars(amount: float | None) -> str:
    """'$0.0042', '$1.27', or 'unknown' (a GPU type the table does not price)."""
    if amount is None:
        return "unknown (no price for that GPU type; %modal_config prices=FILE adds one)"
    if amount >= 1:
        return f"${amount:.2f}"
    if amount >= 0.01:
        return f"${amount:.3f}"
    return f"${amount:.4f}" if amount >= 0.0001 else f"${amount:.6f}"
