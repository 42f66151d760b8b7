"""How an object on this side takes new content in place, and a payload's list of such updates.

A payload that changes one of this side's objects carries its new content; the
object itself must stay (everything holding it sees the change), so unpacking
resolves the reference to it and records the content, and the content is copied
in once the whole payload is unpacked (``Updates.apply``, innermost first, as
recorded) or dropped unapplied (``Updates.discard``). Both kinds of reference
run this: the memo references of a cell's inputs (``identity.LocalObjects``) and
the resident session's keys (``resident.Receiver``). An object that cannot take
the new content is replaced by it, with the one note that says so.
"""

from __future__ import annotations

import functools
import io
import random
import sys
import types
from collections.abc import Callable
from typing import Any

__all__ = ["Updates", "array_type", "is_array", "is_tensor", "random_states", "state_access", "storage_types",
           "tensor_type", "updatable", "update_in_place"]


class Updates:
    """The new contents one payload brings for this side's objects, until ``apply`` or ``discard``."""

    def __init__(self, where: str) -> None:
        self._where = where  # where the change was made, for the note ("remotely", "on the other side")
        self._pending: list[tuple[Any, Any]] = []
        self.notes: list[str] = []

    def record(self, local: Any, new: Any) -> Any:
        """What stands for ``new`` in the payload: ``local``, which takes ``new``'s content on ``apply``; or
        ``new`` itself, with a note, when ``local`` cannot take it."""
        if not updatable(local, new):
            self.notes.append(f"a {type(local).__name__} changed {self._where} could not be updated in place; "
                              "it was replaced (other references to the old one do not see the change)")
            return new
        self._pending.append((local, new))
        return local

    def defer(self, local: Any, new: Any) -> None:
        """Record an update the caller knows ``local`` can take (a function's attributes, a storage's bytes)."""
        self._pending.append((local, new))

    def apply(self) -> None:
        for local, new in self._pending:
            update_in_place(local, new)
        self._pending.clear()

    def discard(self) -> list[tuple[Any, Any]]:
        """Drop the updates unapplied: the (object, new content) pairs they were."""
        pending, self._pending = self._pending, []
        return pending


def tensor_type() -> Any:
    torch = sys.modules.get("torch")
    return torch.Tensor if torch is not None else ()


def array_type() -> Any:
    numpy = sys.modules.get("numpy")
    return numpy.ndarray if numpy is not None else ()


def storage_types() -> tuple:
    torch = sys.modules.get("torch")
    return (torch.UntypedStorage, torch.storage.TypedStorage) if torch is not None else ()


_StateAccess = tuple[Callable[[Any], Any], Callable[[Any, Any], None]]


def random_states() -> dict[type, _StateAccess]:
    """Random generators that keep their state in C, where neither pickling nor a ``__dict__`` update can
    carry a change back into the notebook's object: how to read and set that state."""
    return _random_states_with(sys.modules.get("numpy"), sys.modules.get("torch"))


@functools.cache
def _random_states_with(numpy: types.ModuleType | None, torch: types.ModuleType | None) -> dict[type, _StateAccess]:
    """``random_states`` once numpy and torch are (or are not) imported: asked for every object updated."""
    holders: dict[type, _StateAccess] = {random.Random: (random.Random.getstate, random.Random.setstate)}
    if numpy is not None:
        holders[numpy.random.Generator] = (lambda g: g.bit_generator.state,
                                           lambda g, state: setattr(g.bit_generator, "state", state))
        holders[numpy.random.RandomState] = (numpy.random.RandomState.get_state, numpy.random.RandomState.set_state)
    if torch is not None:
        holders[torch.Generator] = (torch.Generator.get_state, torch.Generator.set_state)
    return holders


def state_access(obj: Any) -> _StateAccess | None:
    holders = random_states()
    return next((holders[cls] for cls in type(obj).__mro__ if cls in holders), None)


def is_tensor(obj: Any) -> bool:
    return isinstance(obj, tensor_type())


def is_array(obj: Any) -> bool:
    return isinstance(obj, array_type())


def updatable(local: Any, new: Any) -> bool:
    """Whether ``new``'s content can be copied into ``local`` (so that everything holding ``local`` sees it)."""
    if type(local) is not type(new) and not _memmap_of_plain(local, new) and not _parametrized_alike(local, new):
        return False
    if is_array(local):
        return bool(local.flags.writeable) and local.shape == new.shape and local.dtype == new.dtype
    if isinstance(local, io.IOBase):
        return local.closed or new.closed or local.seekable()
    if is_tensor(local):
        return local.layout == new.layout and not local.is_quantized and not local.is_nested
    if isinstance(local, storage_types()):
        return local.nbytes() == new.nbytes()
    return isinstance(local, (list, dict, set, bytearray)) or hasattr(local, "__dict__") \
        or state_access(local) is not None


def update_in_place(local: Any, new: Any) -> None:
    """Make ``local`` hold ``new``'s content, keeping ``local``'s identity (and its memory, where it can)."""
    if is_tensor(local):
        _update_tensor(local, new)
    elif isinstance(local, storage_types()):
        local.copy_(new)  # every tensor and array over the notebook's storage sees the new bytes
    elif is_array(local):
        import numpy

        numpy.copyto(local, new)
        if type(local) is not type(new):  # a memmap's values from a plain array: its own attributes stay
            return
    elif isinstance(local, io.IOBase):
        _update_file(local, new)
    elif isinstance(local, (list, bytearray)):
        local[:] = new
    elif isinstance(local, (dict, set)):
        local.clear()
        local.update(new)
    elif (access := state_access(local)) is not None:
        get_state, set_state = access
        set_state(local, get_state(new))
    if hasattr(local, "__dict__") and not is_tensor(local) and local.__dict__ is not new.__dict__:
        local.__dict__.clear()
        local.__dict__.update(new.__dict__)
        if type(local) is not type(new) and _parametrized_alike(local, new):  # a tensor parametrized in the cell
            from .parametrized import give_properties

            give_properties(local)


def _parametrized_alike(local: Any, new: Any) -> bool:
    """A parametrized module and its rebuilt copy, whose class is another of the same kind (``parametrized``)."""
    if "torch" not in sys.modules:
        return False
    from .parametrized import alike

    return alike(local, new)


def _memmap_of_plain(local: Any, new: Any) -> bool:
    """Whether ``local`` is a memmap that went as a plain array (the other side has another disk) and ``new``
    that array's new values: they go into ``local``, and so into its file."""
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(local, numpy.memmap) and type(new) is numpy.ndarray


def _update_file(local: Any, new: Any) -> None:
    """The notebook's open file where the other side left its copy (``wire.files``): at the same position, or
    closed. ``new`` is closed either way: it was opened only to say where."""
    if new.closed or local.closed:
        local.close()
        return
    local.flush()
    local.seek(new.tell())
    new.close()


def _update_tensor(local: Any, new: Any) -> None:
    import torch

    with torch.no_grad():
        if local.shape == new.shape and local.dtype == new.dtype and local.device == new.device:
            if local.data_ptr() != new.data_ptr():
                local.copy_(new)  # the same memory: views and numpy arrays sharing it see the change
        else:
            local.data = new.data  # resized or re-typed remotely (`p.data = …`)
    if local.is_leaf:
        if local.requires_grad != new.requires_grad:
            local.requires_grad_(new.requires_grad)
        if local.grad is not new.grad:
            local.grad = new.grad
