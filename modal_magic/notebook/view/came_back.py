"""What came back from a cell, said so that the names a user cares about come first.

A cell binds what matters (tensors, arrays, models, results) and, beside it,
what does not need reading (the modules it imported, loop counters): the
first are described one by one (shapes, dtypes, devices; a scalar's value),
the rest are counted by kind, and past a handful of entries the remainder is
counted too ("and 31 more: …"), so the line reads the same for 2 names and
for 40. A string that looks like a credential, by its name or its value, is
never shown: the summary is saved into the notebook.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...wire import handles
from ..secrets import credential_reason

__all__ = ["Item", "Returned", "describe_returned"]

SHOWN = 6
"""Entries described one by one; the rest are counted by kind."""
_SCALARS = (bool, int, float, complex, str, bytes, type(None))
_SHORT = 24  # characters of a scalar's repr worth showing; longer ones show their type only
HIDDEN = "= '…' (hidden: looks like a credential)"


@dataclass(frozen=True)
class Item:
    """One name that came back: its rank (0 shows first), its kind's name, and what to say about it."""

    name: str
    rank: int
    kind: str
    detail: str
    """'Tensor[2, 3] float32 cpu', '= 3', 'Net (1,234 parameters)'; empty for a name only counted."""


@dataclass
class Returned:
    """The names that came back, ranked; ``text()`` and the HTML view say them the same way."""

    items: list[Item] = field(default_factory=list)

    def shown(self) -> list[Item]:
        """The items described one by one: ranked first, at most ``SHOWN``, never the ones only counted."""
        described = [item for item in self.items if item.detail]
        return sorted(described, key=lambda item: item.rank)[:SHOWN]

    def counted(self) -> str:
        """The rest, counted by kind: '6 modules (os, time), 12 int', or nothing."""
        shown = {item.name for item in self.shown()}
        rest = [item for item in self.items if item.name not in shown]
        kinds: dict[str, list[str]] = {}
        for item in rest:
            kinds.setdefault(item.kind, []).append(item.name)
        counts = [_count(kind, names) + (f" ({', '.join(names)})" if len(names) <= 3 else "")
                  for kind, names in sorted(kinds.items(), key=lambda pair: -len(pair[1]))]
        if not counts:
            return ""
        prefix = f"and {len(rest)} more: " if any(item.detail for item in rest) else ""
        return prefix + ", ".join(counts)

    def text(self) -> str:
        """'y Tensor[2, 3] float32 cpu, i = 3; 1 module (time)'."""
        described = ", ".join(f"{item.name} {item.detail}" for item in self.shown())
        return "; ".join(part for part in (described, self.counted()) if part)


def describe_returned(values: Mapping[str, Any]) -> Returned:
    """Rank and describe the values a cell brought back (name → value), in the order they were bound."""
    return Returned([_describe(name, value) for name, value in values.items()])


def _count(kind: str, names: list[str]) -> str:
    """'1 module', '6 modules', '12 int' (a type's name stays as Python spells it)."""
    plural = {"module": "modules", "function": "functions", "class": "classes"}.get(kind, kind)
    return f"{len(names)} {kind if len(names) == 1 else plural}"


def _describe(name: str, value: Any) -> Item:
    if isinstance(value, handles.RemoteHandle):  # what it stands for, not the stand-in's own class
        return Item(name, 1, "remote handle", f"remote {value.kind}")
    kind = type(value).__name__
    shape = getattr(value, "shape", None)
    # Only an array's shape is a tuple (torch.Size is one): a module (`np`, whose `shape` is a
    # function) or a class (`Tensor`, a descriptor) has the attributes but is no array.
    if isinstance(shape, tuple) and not isinstance(value, type):
        described = f"{kind}[{', '.join(map(str, shape))}]"
        dtype, device = getattr(value, "dtype", None), getattr(value, "device", None)
        if dtype is not None:
            described += f" {str(dtype).replace('torch.', '')}"
        return Item(name, 0, kind, described if device is None else f"{described} {device}")
    if isinstance(value, types.ModuleType):
        return Item(name, 3, "module", "")
    if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)):
        return Item(name, 3, "class" if isinstance(value, type) else "function", "")
    parameters = _parameter_count(value)
    if parameters is not None:
        return Item(name, 0, kind, f"{kind} ({parameters:,} parameters)")
    if isinstance(value, _SCALARS):
        if credential_reason(name, value) is not None:
            return Item(name, 2, kind, HIDDEN)
        text = repr(value)
        return Item(name, 2, kind, f"= {text}" if len(text) <= _SHORT else kind)
    try:
        return Item(name, 1, kind, f"{kind}[{len(value)}]")
    except TypeError:
        return Item(name, 1, kind, kind)


def _parameter_count(value: Any) -> int | None:
    """A model's parameter count (anything with ``parameters()`` yielding sized tensors), else None."""
    parameters = getattr(value, "parameters", None)
    if not callable(parameters) or isinstance(value, type):
        return None
    try:
        count: int = sum(p.numel() for p in parameters())
        return count
    except Exception:  # noqa: BLE001 - not a model after all: described as any object
        return None
