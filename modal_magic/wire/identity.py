"""Keep the notebook's own objects across a remote cell: references and in-place updates.

Both ends of a payload number the objects they memoise in the same order, so
memo index *i* names the same object on either side. The runner remembers
which of its objects arrived as inputs (and, for tensors and arrays, what they
looked like on arrival). When it packs the results, such an object travels as

* ``("ref", i)`` — unchanged (or immutable: functions, classes, modules): the
  notebook uses its own object as it is;
* ``("upd", i, value)`` — changed, or a container that may have been: ``value``
  is its new content, and the notebook updates its *own* object in place, so a
  trained ``model`` is the notebook's model, an optimizer built remotely over
  ``model.parameters()`` steps the notebook's parameters, and a numpy array
  sharing a tensor's memory sees the tensor's new values.

Updates are recorded while unpickling and applied only once every value has
been rebuilt (``LocalObjects.apply``), so a failure leaves nothing half-changed.
"""

from __future__ import annotations

import pickle
import sys
import types
import zlib
from typing import Any

from .files import in_its_file
from .updates import Updates, array_type, is_array, is_tensor, random_states, state_access, storage_types, tensor_type

__all__ = ["RemoteInputs", "LocalObjects"]

_ALWAYS_REF = (types.FunctionType, types.BuiltinFunctionType, types.ModuleType, type, types.MethodType)
_IMMUTABLE = frozenset({str, bytes, int, float, complex, bool, type(None), tuple, frozenset, range})


def _snapshot(obj: Any) -> Any:
    """What a tensor, array or random generator looked like on arrival (tensors: their version counter);
    a tensor's first item is its content (``_storage_unchanged`` compares just that)."""
    if isinstance(obj, tensor_type()):
        grad = obj.grad if obj.is_leaf else None
        return ((obj._version, obj.data_ptr()), tuple(obj.shape), obj.requires_grad,
                None if grad is None else (id(grad), grad._version))
    if isinstance(obj, array_type()):
        if obj.dtype == object:
            return None  # an object array can change without its bytes changing
        return (obj.shape, obj.dtype.str, zlib.crc32(obj.data if obj.flags.c_contiguous else obj.tobytes()))
    if isinstance(obj, types.FunctionType):
        return _attributes(obj)
    access = state_access(obj)
    assert access is not None, "only tensors, arrays, functions and random states are measured on arrival"
    get_state, _ = access
    return pickle.dumps(get_state(obj))  # comparable whatever the state holds (tuples of arrays...)


def _attributes(function: types.FunctionType) -> tuple:
    """A function's attributes as (name, identity) pairs: ``wrapper.calls += 1`` binds a new object.
    (The memo keeps the arrived values alive, so their ids are not reused.)"""
    return tuple((name, id(value)) for name, value in function.__dict__.items())


class RemoteInputs:
    """Runner side: which objects came in, and how to refer to them when results go out."""

    def __init__(self, memo: dict[int, Any]) -> None:
        self._objects = memo  # keeps every input object alive, so ids stay unique
        measurable = (tensor_type(), array_type(), *random_states())
        storages = storage_types()
        memmap = getattr(sys.modules.get("numpy"), "memmap", ())
        self._in_file: set[int] = set()
        """Inputs that arrived as memmaps of the notebook's files: what the cell wrote to them is in the
        notebook's memory already, so they go back as references, never read (a memmap may be far bigger
        than memory)."""
        self._index: dict[int, int] = {}
        self.ids = self._index.keys()
        """The ids of the objects it may name: it answers None for any other (a sender in front of it checks)."""
        self._arrival: dict[int, Any] = {}
        for index, obj in memo.items():
            if type(obj) in _IMMUTABLE:
                continue
            if isinstance(obj, memmap) and in_its_file(obj):
                self._in_file.add(id(obj))
            elif isinstance(obj, measurable):
                self._arrival[id(obj)] = _snapshot(obj)
            elif type(obj) is types.FunctionType and obj.__dict__:  # attributes a cell may change
                self._arrival[id(obj)] = _attributes(obj)
            elif not (isinstance(obj, (list, dict, set, bytearray, storages, *_ALWAYS_REF))
                      or hasattr(obj, "__dict__")):
                continue
            self._index[id(obj)] = index
        self._copies = _quiet_buffer_copies(memo.values())
        self._state: dict[int, str] = {}
        self._by_storage: dict[int, list[Any]] | None = None  # built on first use
        self._by_base: dict[int, Any] | None = None  # built on first use

    def reset(self) -> None:
        """Forget what the last packing attempt sent (packing may be retried without a bad variable)."""
        self._state.clear()

    def is_input(self, obj: Any) -> bool:
        return id(obj) in self._index

    def persistent_id(self, obj: Any) -> tuple | None:
        index = self._index.get(id(obj))
        if index is None:  # the common case, called for every object pickled: keep it short
            return None
        key = id(obj)
        if key in self._in_file:
            obj.flush()  # the cell's writes are in the file itself, as well as in the notebook's mapping of it
            return ("ref", index)
        state = self._state.get(key)
        if state == "pending":  # the object inside its own ("upd", i, obj) entry: pickle it by value
            self._state[key] = "sent"
            return None
        if state == "sent" or (isinstance(obj, _ALWAYS_REF) and id(obj) not in self._arrival) \
                or self._unchanged(obj):
            return ("ref", index)
        if type(obj) is types.FunctionType:  # only its attributes can have changed: they go, not the function
            self._state[key] = "sent"
            return ("upd", index, dict(obj.__dict__))
        self._state[key] = "pending"
        return ("upd", index, obj)

    def _unchanged(self, obj: Any) -> bool:
        arrival = self._arrival.get(id(obj))
        if arrival is not None:
            return arrival == _snapshot(obj) and self.same_values(obj)
        return isinstance(obj, storage_types()) and self._storage_unchanged(obj)

    def _content_unchanged(self, obj: Any) -> bool:
        """Whether a tensor's or an array's values are as they arrived (whatever became of its ``grad``)."""
        arrival = self._arrival[id(obj)]
        if not isinstance(obj, tensor_type()):
            return arrival == _snapshot(obj)
        return arrival[0] == _snapshot(obj)[0] and self.same_values(obj)

    def same_values(self, tensor: Any) -> bool:
        """For the buffers ``_quiet_buffer_copies`` kept: whether their values are still the kept ones."""
        kept = self._copies.get(id(tensor))
        return kept is None or _equal(kept, tensor)

    def _storage_unchanged(self, storage: Any) -> bool:
        """Whether no input viewing ``storage`` was written to: a storage has no version counter of its own,
        but every tensor over it that arrived has one, and views made here share their base's."""
        if self._by_storage is None:
            self._by_storage = self._inputs_by_storage()
        viewing = self._by_storage.get(id(storage), ())
        return all(self._content_unchanged(obj) for obj in viewing)

    def _inputs_by_storage(self) -> dict[int, list[Any]]:
        """Input tensors, and input arrays over a tensor's memory, by (the id of) the storage they view."""
        from . import tensors

        found: dict[int, list[Any]] = {}
        for obj in self._objects.values():
            if id(obj) not in self._arrival:
                continue
            if isinstance(obj, tensor_type()):
                tensor = obj
            elif isinstance(obj, array_type()):
                tensor = tensors.tensor_under(obj)
            else:
                continue
            if tensor is not None:
                found.setdefault(id(tensor.untyped_storage()), []).append(obj)
        return found

    def array_view(self, array: Any) -> tuple | None:
        """How ``array`` travels if it views an input array's memory (``a[::2]`` of a notebook array): as
        that input (a reference to the notebook's) and where in it, so it arrives as a view of the notebook's
        array; ``None`` otherwise (it then goes as numpy sends it, a copy)."""
        base = array.base
        if base is None or array.dtype.hasobject:
            return None
        if self._by_base is None:
            self._by_base = self._arrays_by_base()
        owner = self._by_base.get(id(base))
        if owner is None or owner is array:
            return None
        return view_within(array, owner)

    def _arrays_by_base(self) -> dict[int, Any]:
        """Input arrays by themselves and by their base (what numpy makes the base of a view of them)."""
        found: dict[int, Any] = {}
        for obj in self._objects.values():
            if isinstance(obj, array_type()) and id(obj) in self._arrival:
                found[id(obj)] = obj
                if obj.base is not None and (obj.flags.c_contiguous or obj.flags.f_contiguous):
                    found.setdefault(id(obj.base), obj)
        return found


_QUIET_BUFFER_MAX = 64 << 10


def _quiet_buffer_copies(objects: Any) -> dict[int, Any]:
    """Copies of modules' small floating-point buffers, by tensor id.

    A training-mode forward of BatchNorm (and InstanceNorm with running stats) writes ``running_mean`` and
    ``running_var`` from C++ without bumping their version counters, the only change signal a tensor has
    here; those buffers are compared by value instead. Every module's, whatever its mode on arrival (the
    cell may call ``.train()``), but only buffers of at most 64 KiB: parameters (changed through counted
    in-place ops) and big masks cost nothing.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    module = torch.nn.Module
    return {
        id(buffer): buffer.detach().clone()
        for obj in objects if isinstance(obj, module)
        for buffer in obj._buffers.values()
        if buffer is not None and buffer.is_floating_point() and buffer.nbytes <= _QUIET_BUFFER_MAX
    }


def _equal(kept: Any, tensor: Any) -> bool:
    import torch

    return kept.shape == tensor.shape and kept.dtype == tensor.dtype and torch.equal(kept, tensor.detach())


def _address(array: Any) -> int:
    return array.__array_interface__["data"][0]


def _byte_bounds(array: Any) -> tuple[int, int]:
    """The first and one-past-the-last byte ``array`` can reach."""
    low = high = _address(array)
    if array.size:
        for size, stride in zip(array.shape, array.strides, strict=True):
            if stride < 0:
                low += (size - 1) * stride
            else:
                high += (size - 1) * stride
        high += array.itemsize
    return low, high


def view_within(array: Any, owner: Any) -> tuple | None:
    """``array`` as a view of the contiguous array ``owner`` (a reduce value that ``_view_within`` rebuilds) when
    every byte it reaches lies within ``owner``'s memory; None otherwise."""
    offset = _address(array) - _address(owner)
    low, high = _byte_bounds(array)
    if low < _address(owner) or high > _address(owner) + owner.nbytes:
        return None
    return _view_within, (owner, offset, array.shape, array.dtype, array.strides, bool(array.flags.writeable))


def _view_within(owner: Any, offset: int, shape: tuple, dtype: Any, strides: tuple, writeable: bool) -> Any:
    """The receiver's rebuild of ``view_within``: a view of ``owner`` (the notebook's own array, for
    ``RemoteInputs.array_view``; or one that came earlier in the same payload).

    The sender's copy of ``owner`` had the same bytes in the same order when ``owner`` is contiguous (numpy
    sends such an array as its memory); any other array was sent as a C-ordered copy, so the view is
    made of such a copy here: the same values, but not the notebook's memory.
    """
    import numpy

    if not (owner.flags.c_contiguous or owner.flags.f_contiguous):
        owner = numpy.ascontiguousarray(owner)
    memory = owner.reshape(-1, order="A").view(numpy.uint8)
    view = numpy.ndarray(shape, dtype, buffer=memory, offset=offset, strides=strides)
    view.flags.writeable = writeable and bool(owner.flags.writeable)
    return view


class LocalObjects:
    """Notebook side: resolve references to the notebook's objects; update them in place after unpacking."""

    def __init__(self, memo: dict[int, Any]) -> None:
        self._objects = memo
        self._updates = Updates("remotely")
        self._updated: list[int] = []  # the memo index of each update's object, for ``discard``
        self.notes = self._updates.notes

    def persistent_load(self, pid: tuple) -> Any:
        kind, index, *rest = pid
        local = _stands_for(self._objects[index])
        if kind == "ref":
            return local
        new = rest[0]
        if type(local) is types.FunctionType:  # ``new`` is its attributes (``wrapper.calls += 1``)
            self._updates.defer(local.__dict__, new)
            self._updated.append(index)
            return local
        if self._updates.record(local, new) is not local:
            return new
        self._updated.append(index)
        return local

    def apply(self) -> None:
        """Copy the new contents into the notebook's objects (innermost first, as they were recorded)."""
        self._updates.apply()
        self._updated.clear()

    def discard(self) -> list[int]:
        """Drop the updates unapplied; the memo indices of the objects they would have changed.

        For ``--map``, whose copies' changes cannot be merged. Containers and
        plain objects always travel as updates (they may have changed), so they
        are compared with what came back; tensors, arrays and random states
        travel as updates only when they changed.
        """
        changed = [index for index, (local, new) in zip(self._updated, self._updates.discard(), strict=True)
                   if _differs(local, new)]
        self._updated.clear()
        return changed


def _differs(local: Any, new: Any) -> bool:
    """Whether applying ``new`` would change ``local`` (the objects inside both are the notebook's own)."""
    if isinstance(local, (list, dict, set, bytearray)) and type(local) is type(new):
        return _unequal(local, new)
    if hasattr(local, "__dict__") and hasattr(new, "__dict__") and not is_tensor(local) and not is_array(local) \
            and state_access(local) is None:
        return _unequal(local.__dict__, new.__dict__)
    return True


def _unequal(a: Any, b: Any) -> bool:
    try:
        return bool(a != b)
    except Exception:  # noqa: BLE001 - an array inside compares elementwise: count it as changed
        return True


def _stands_for(sent: Any) -> Any:
    """The notebook object a memo entry of the inputs names (a storage went as a stand-in holding its bytes)."""
    tensors = sys.modules.get("modal_magic.wire.tensors")
    return sent if tensors is None else tensors.stands_for(sent)
