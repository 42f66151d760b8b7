"""Process-wide state that a remote cell shares with the notebook, as if both were one process.

A remote cell runs in another process, with its own random number generators
and its own torch defaults: ``torch.manual_seed(0)`` in the notebook would not
decide what a remote ``torch.rand(1)`` draws, and a remote
``torch.set_default_dtype(torch.float64)`` would not be seen by the next cell.
So each request carries the notebook's state (``capture``), the runner applies
it before the cell and sends back what the cell changed (``changed_since``),
and the notebook applies that (``apply``). Values are plain Python (bytes,
str, bool, tuples), so they travel in a frame's metadata.

Only the CPU's state travels: CUDA generators belong to their device (a GPU
in the container is not the notebook's), and so do the default device and
thread counts, which are left alone.

Well-known singletons (``torch.default_generator``, numpy's and ``random``'s
global generators) travel as references to the receiving process's own
(``reducers``), so ``g = torch.manual_seed(1)`` brings back the notebook's
``torch.default_generator``, not a copy.
"""

from __future__ import annotations

import array
import importlib
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["State", "capture", "apply", "changed_since", "reducers"]

State = dict[str, Any]
"""Setting name → its value, for the settings whose module is imported."""


@dataclass(frozen=True)
class _Setting:
    module: str
    """The module that holds it: a process that has not imported it has no such state."""
    get: Callable[[types.ModuleType], Any]
    set: Callable[[types.ModuleType, Any], None]


def _random_state(random: types.ModuleType) -> tuple[Any, ...]:
    """``random.getstate()`` with its 625 ints as bytes: pickling them as ints costs 50 µs a cell."""
    version, internal, gauss_next = random.getstate()
    return version, array.array("I", internal).tobytes(), gauss_next  # Mersenne Twister words: 32 bits


def _set_random_state(random: types.ModuleType, state: tuple[Any, ...]) -> None:
    version, internal, gauss_next = state
    random.setstate((version, tuple(array.array("I", internal)), gauss_next))


def _numpy_state(np_random: types.ModuleType) -> tuple[Any, ...]:
    name, keys, pos, has_gauss, gauss = np_random.get_state(legacy=True)
    return name, keys.tobytes(), pos, has_gauss, gauss


def _set_numpy_state(np_random: types.ModuleType, state: tuple[Any, ...]) -> None:
    import numpy

    name, keys, pos, has_gauss, gauss = state
    np_random.set_state((name, numpy.frombuffer(keys, dtype=numpy.uint32), pos, has_gauss, gauss))


def _set_torch_rng(torch: types.ModuleType, state: bytes) -> None:
    torch.set_rng_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))


def _set_deterministic(torch: types.ModuleType, mode: tuple[bool, bool]) -> None:
    torch.use_deterministic_algorithms(mode[0], warn_only=mode[1])


def _set_anomaly(torch: types.ModuleType, mode: tuple[bool, bool]) -> None:
    torch.set_anomaly_enabled(mode[0], mode[1])


_SETTINGS = {
    "random": _Setting("random", _random_state, _set_random_state),
    "numpy.random": _Setting("numpy.random", _numpy_state, _set_numpy_state),
    "torch.rng": _Setting("torch", lambda torch: torch.get_rng_state().numpy().tobytes(), _set_torch_rng),
    "torch.default_dtype": _Setting(
        "torch", lambda torch: str(torch.get_default_dtype()).removeprefix("torch."),
        lambda torch, name: torch.set_default_dtype(getattr(torch, name))),
    "torch.grad_enabled": _Setting("torch", lambda torch: torch.is_grad_enabled(),
                                   lambda torch, on: torch.set_grad_enabled(on)),
    "torch.deterministic": _Setting(
        "torch", lambda torch: (torch.are_deterministic_algorithms_enabled(),
                                torch.is_deterministic_algorithms_warn_only_enabled()), _set_deterministic),
    "torch.anomaly": _Setting(
        "torch", lambda torch: (torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()), _set_anomaly),
    "torch.float32_matmul_precision": _Setting(
        "torch", lambda torch: torch.get_float32_matmul_precision(),
        lambda torch, precision: torch.set_float32_matmul_precision(precision)),
}


def capture(known: Mapping[str, Any] | None = None) -> State:
    """This process's state, for the modules it has imported (none is imported for it).

    Settings in ``known`` (just applied) are taken from it rather than read again.
    """
    known = known or {}
    state: State = dict(known)
    for name, setting in _SETTINGS.items():
        module = sys.modules.get(setting.module)
        if module is not None and name not in known:
            state[name] = setting.get(module)
    return state


def apply(state: State) -> None:
    """Make ``state`` this process's; a module it needs is imported, as the other process had it.

    Only what differs is set: some setters are slow (``use_deterministic_algorithms``
    takes 1.5 s the first time), and most cells change nothing.
    """
    for name, value in state.items():
        setting = _SETTINGS.get(name)
        if setting is None:
            continue
        module = importlib.import_module(setting.module)
        if setting.get(module) != value:
            setting.set(module, value)


def changed_since(before: State) -> State:
    """The settings whose value differs from ``before`` (or that did not exist then)."""
    return {name: value for name, value in capture().items() if before.get(name) != value}


# Where the well-known singletons live: (module, attribute).
_SINGLETONS = (("torch", "default_generator"), ("numpy.random.mtrand", "_rand"), ("random", "_inst"))


def reducers() -> dict[type, Callable[[Any], Any]]:
    """Pickler ``dispatch_table`` entries for the singletons' types (of the modules imported):
    a singleton goes as a lookup of its name, any other instance as it would otherwise."""
    present = [(sys.modules[module], attr) for module, attr in _SINGLETONS if module in sys.modules]
    return {type(getattr(module, attr)): _reduce_singleton for module, attr in present}


def _reduce_singleton(obj: Any) -> Any:
    for module_name, attr in _SINGLETONS:
        module = sys.modules.get(module_name)
        if module is not None and getattr(module, attr, None) is obj:
            return getattr, (module, attr)
    return obj.__reduce_ex__(5)  # the wire's protocol
