"""What a caller asks of one cell (``CellOptions``) and what it gets back (``CellOutcome``).

Their own module, because every way of running a cell shares them: the single
cell (``driver``), ``--map`` (``fanout``), the magic that fills them from its
flags and ``torch.compile``'s remote graphs (``compile/``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .options import session_default

if TYPE_CHECKING:
    from .fanout import MapSpec

__all__ = ["CellOptions", "CellOutcome", "NO_VALUE"]

NO_VALUE: Any = type("NoValue", (), {"__repr__": lambda self: "NO_VALUE", "__bool__": lambda self: False})()
"""The ``value`` of a cell that does not end in a displayed expression."""


@dataclass(frozen=True)
class CellOptions:
    """What the user asked for (the magic's flags; unset, the defaults of ``options.SETTINGS``)."""

    backend: str = session_default("backend")
    inputs: tuple[str, ...] = ()
    """Extra names to send, on top of the ones detected (``--in``)."""
    outputs: tuple[str, ...] | None = None
    """Only these names come back (``--out``); ``None`` = every name the cell binds."""
    device: str = session_default("device")
    """Where returned tensors land: ``cpu``, ``auto`` (CUDA if this machine has it) or ``cuda``."""
    timeout: float | None = None
    quiet: bool = False
    env: tuple[str, ...] = ()
    """Environment variables to set for the cell there (none are forwarded otherwise)."""
    max_input_bytes: int | None = session_default("max_input")
    """Refuse to send more than this (a typo'd 40 GB upload is better caught here)."""
    gpu: tuple[str, ...] = session_default("gpu")
    """Modal GPU types in order of preference, normalised (``modal_plan.parse_gpu``); empty: a CPU container."""
    cpu: float | None = None
    memory_mib: int | None = None
    pip: tuple[str, ...] = ()
    """Extra packages for the container image."""
    fresh: bool = False
    """Run without the remote-resident session (``--fresh``): every input goes as a value, nothing stays."""
    idle: float = session_default("idle")
    """Seconds the single-cell Modal container may wait idle for the next cell (the next container started)."""
    prices: str | None = session_default("prices")
    """A JSON file of prices over the package's table, for cost estimates; None: the package's."""
    mapping: MapSpec | None = None
    """``--map``: run one copy of the cell per element (``fanout.py``)."""


@dataclass
class CellOutcome:
    """What happened, for callers that want more than the namespace change."""

    value: Any = NO_VALUE
    injected: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error: BaseException | None = None
    """The cell's own exception (``run_cell`` raises it; what the cell bound before it is injected)."""
