"""How torch objects cross the wire: storages as out-of-band buffers, rebuilt on a chosen device.

torch's own pickling sends every storage as a legacy ``torch.save`` blob tagged
with its device (``'cuda:0'``), which a CPU-only machine refuses to load, copies
the data four or five times, and sends a view's whole storage once per view.
Here a storage becomes one ``StorageData`` per storage per payload (pickle's
memo keeps views and tied weights aliased), holding a protocol-5
``PickleBuffer`` over the host bytes; the receiver turns the received buffer
*into* the storage (``torch.frombuffer``, no copy) and moves it to the target
device only if that is not the CPU. ``docs/design.md`` ("The wire format") gives
the measurements behind this.

This module is imported only when torch already is: nothing here imports torch
at module level for the sake of processes that never see a tensor.
"""

from __future__ import annotations

import ctypes
import io
import pickle
import threading
from collections.abc import Callable
from typing import Any

import numpy
import torch

from .parametrized import is_parametrized, reduce_parametrized

__all__ = ["HostMemory", "reduce_torch", "stands_for", "tensor_under", "resolve_device", "map_location",
           "legacy_storage_loader", "rebuild_tensor_v3_compat"]

# The receiving side's device choice, set by wire.unpack for the duration of one load.
_target = threading.local()


def resolve_device(stored: str, choice: str | None) -> torch.device:
    """Where a storage that was on ``stored`` should live here.

    ``cpu`` (the default) always maps to the CPU; ``auto`` keeps a CUDA storage
    on CUDA when this machine has it; ``cuda`` insists on CUDA.
    """
    choice = choice or "cpu"
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "auto":
        if stored.startswith("cuda") and torch.cuda.is_available():
            return torch.device(stored if torch.cuda.device_count() > _index(stored) else "cuda")
        return torch.device("cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={choice!r} was asked for, but this machine has no CUDA device; "
            "use device 'cpu' or 'auto'."
        )
    return torch.device(choice)


def _index(device: str) -> int:
    return int(device.split(":")[1]) if ":" in device else 0


class map_location:
    """Context manager: storages loaded in this thread go to ``choice``'s device."""

    def __init__(self, choice: str | None) -> None:
        self.choice = choice

    def __enter__(self) -> None:
        self._saved = getattr(_target, "choice", None)
        _target.choice = self.choice
        # torch consults this private thread-local for wrapper subclasses' outer device.
        tls = getattr(torch.serialization, "_serialization_tls", None)
        if tls is not None:
            self._saved_tls = getattr(tls, "map_location", None)
            tls.map_location = _torch_map_location(self.choice)

    def __exit__(self, *exc: object) -> None:
        _target.choice = self._saved
        tls = getattr(torch.serialization, "_serialization_tls", None)
        if tls is not None:
            tls.map_location = self._saved_tls


def _torch_map_location(choice: str | None):
    """The same choice expressed as a ``torch.load`` map_location."""
    return lambda storage, location: _place(storage, resolve_device(location, choice))


def _place(storage: torch.UntypedStorage, target: torch.device) -> torch.UntypedStorage:
    """``storage`` on ``target`` (``UntypedStorage.to`` takes the device by keyword only)."""
    return storage if storage.device == target else storage.to(device=target)


# --------------------------------------------------------------------- sending
def _device_tag(storage: torch.UntypedStorage) -> str:
    """The device a storage is recorded as coming from (tests patch this, as torch's location_tag)."""
    return str(storage.device)


def _host_view(host: torch.UntypedStorage) -> Any:
    """A buffer over a CPU storage's bytes, without copying (~10x cheaper than ``.numpy()``).

    The view holds a reference to the storage: the buffer outlives the pickler
    (it travels in the payload), and the storage may be a temporary's.
    """
    nbytes = host.nbytes()
    if not nbytes:
        return b""
    view = (ctypes.c_uint8 * nbytes).from_address(host.data_ptr())
    view.owner = host  # type: ignore[attr-defined]  # a ctypes instance takes attributes; its stubs say none
    return view


class StorageData:
    """One storage's bytes and device; pickled once per payload thanks to the memo.

    It keeps the storage it was made from: the receiver may answer with a reference to it
    (a view it made of one of our tensors), and ``stands_for`` turns the memo entry back into it.
    """

    __slots__ = ("buffer", "device", "storage")

    def __init__(self, storage: torch.UntypedStorage) -> None:
        self.storage = storage
        self.device = _device_tag(storage)
        host = storage if storage.device.type == "cpu" else storage.cpu()
        self.buffer = pickle.PickleBuffer(_host_view(host))

    def __reduce__(self):
        return _make_storage, (self.buffer, self.device)


class _ArrayMemory:
    """A storage whose memory is a numpy array's (``torch.from_numpy``) that went first: it
    travels as that array (pickled once, thanks to the memo), so both arrive sharing it."""

    __slots__ = ("array", "storage")

    def __init__(self, array: numpy.ndarray, storage: torch.UntypedStorage) -> None:
        self.array = array
        self.storage = storage

    def __reduce__(self):
        return _storage_of_array, (self.array,)


class SharedWithArray:
    """An input's storage that a numpy array views: its content may have changed with no version counter
    saying so. ``resident.Sender`` sends its bytes; anything else sends it as the storage itself."""

    __slots__ = ("storage",)

    def __init__(self, storage: torch.UntypedStorage) -> None:
        self.storage = storage

    def __reduce__(self):
        return _same, (self.storage,)


class HostMemory:
    """What one payload has sent of torch storages, and of numpy arrays that may share their memory.

    A storage goes once however many tensors view it (keyed by ``_cdata``). A
    numpy array and a tensor over the same bytes (``n = t.numpy()``,
    ``t = torch.from_numpy(a)``) must arrive sharing them as well, whichever is
    pickled first: an array over a tensor's memory says so through its
    ``base``; a storage over an array's memory is found by its address.
    """

    __slots__ = ("_by_storage", "_storage_at", "_arrays", "_array_at", "inputs", "resident_at")

    def __init__(self) -> None:
        self.resident_at: Callable[[int], torch.UntypedStorage | None] | None = None
        """The storage of a resident tensor at a memory address (``resident``), for arrays over it."""
        self.inputs: Callable[[Any], bool] | None = None
        """Results only: whether a storage arrived with the inputs (it then goes as itself, so that
        the pickler's ``persistent_id`` sends a reference to the notebook's own storage)."""
        self._by_storage: dict[int, StorageData | _ArrayMemory] = {}
        self._storage_at: dict[int, torch.UntypedStorage] = {}  # data address → CPU storage sent
        self._arrays: list[numpy.ndarray] = []  # arrays sent by numpy itself, not yet indexed:
        self._array_at: dict[int, numpy.ndarray] = {}  # (their addresses cost ~1.5 µs, paid only if a storage asks)

    def storage(self, storage: torch.UntypedStorage) -> torch.UntypedStorage | StorageData | _ArrayMemory:
        """How a tensor's or array's ``storage`` travels: an input's storage as itself (a view the cell made
        of a notebook tensor must arrive over the notebook's memory), any other by value."""
        if self.inputs is not None and self.inputs(storage):
            return storage
        return self.by_value(storage)

    def by_value(self, storage: torch.UntypedStorage) -> StorageData | _ArrayMemory:
        """``storage``'s bytes (the same object each time it is asked, for the pickle memo)."""
        key = storage._cdata
        sent = self._by_storage.get(key)
        if sent is None:
            sent = self._by_storage[key] = self._first_time(storage)
        return sent

    def _first_time(self, storage: torch.UntypedStorage) -> StorageData | _ArrayMemory:
        nbytes = storage.nbytes()
        if nbytes and storage.device.type == "cpu":
            address = storage.data_ptr()
            self._storage_at[address] = storage  # for arrays over this memory still to come
            array = self._array_at_address(address)
            if array is not None and array.nbytes == nbytes:
                return _ArrayMemory(array, storage)
        return StorageData(storage)

    def _array_at_address(self, address: int) -> numpy.ndarray | None:
        for array in self._arrays:
            self._array_at.setdefault(_address(array), array)
        self._arrays.clear()
        return self._array_at.get(address)

    def storage_holding(self, array: numpy.ndarray) -> torch.UntypedStorage | None:
        """The storage sent already, or a resident tensor's, whose memory ``array`` is (``array`` was given to
        ``torch.from_numpy``)."""
        if not (self._storage_at or self.resident_at) or not array.flags.c_contiguous:
            return None
        storage = self._storage_at.get(_address(array))
        if storage is None and self.resident_at is not None:
            storage = self.resident_at(_address(array))
        return storage if storage is not None and array.nbytes <= storage.nbytes() else None

    def array_memory(
            self, storage: torch.UntypedStorage) -> torch.UntypedStorage | SharedWithArray | StorageData | _ArrayMemory:
        """How the storage under a numpy array travels: as ``storage``, but an input's marked, because numpy
        writes to it leave no trace on a tensor's version counter: its bytes must go (``resident``)."""
        if self.inputs is not None and self.inputs(storage):
            return SharedWithArray(storage)
        return self.by_value(storage)

    def sent_as_itself(self, array: numpy.ndarray) -> None:
        """``array`` goes as numpy sends it; a storage sent later over its memory will refer to it."""
        if array.flags.c_contiguous and not array.dtype.hasobject:
            self._arrays.append(array)


def _address(array: numpy.ndarray) -> int:
    return array.__array_interface__["data"][0]


def reduce_torch(pickler: Any, obj: Any) -> Any:
    """``reducer_override`` for torch objects (and numpy arrays sharing their memory), or
    ``NotImplemented`` for anything else.

    ``pickler.host_memory`` is the payload's ``HostMemory`` and ``pickler.notes``
    collects one-line notes about objects changed on the way.
    """
    cls = type(obj)
    if cls is torch.Tensor:
        if _is_plain_dense(obj):
            return _dense_reduce(pickler, obj)
        if obj.requires_grad and not obj.is_leaf:  # a meta, sparse, conj... result of a graph
            return _graph_reduce(pickler, obj)
        return _torch_reduce(obj, pickler.proto)
    if cls is torch.nn.Parameter:
        if _is_plain_dense(obj.data):
            # The parameter's own storage, not ``obj.data``: that is a new tensor object at every access,
            # which the remote-resident session would take for a new value to keep.
            return _rebuild_parameter, (*_dense_args(pickler, obj), obj.requires_grad, _grad(obj),
                                        _python_state(obj))
        return _torch_reduce(obj, pickler.proto)
    if cls is torch.UntypedStorage:
        return _same, (pickler.host_memory.by_value(obj),)
    if cls is torch.storage.TypedStorage:
        return _typed_storage, (obj._untyped_storage, obj.dtype)
    if cls is numpy.ndarray:
        return _reduce_array(pickler, obj)
    if isinstance(obj, torch.Tensor):  # subclasses: torch's reduce, our storages inside
        return _torch_reduce(obj, pickler.proto)
    if is_parametrized(obj):
        return reduce_parametrized(obj)
    return NotImplemented


def _is_plain_dense(t: torch.Tensor) -> bool:
    return (
        t.layout == torch.strided
        and not t.is_quantized
        and not t.is_nested
        and t.device.type in ("cpu", "cuda")
        and not t.is_conj()
        and not t.is_neg()
        and not (hasattr(t, "__dict__") and t.__dict__)
    )


def _reduce_array(pickler: Any, array: numpy.ndarray) -> Any:
    """An array over a torch storage's memory goes as a view of that storage, so that the two
    arrive sharing one buffer; any other array goes as numpy sends it (out of band)."""
    memory = pickler.host_memory
    tensor = tensor_under(array)
    storage = tensor.untyped_storage() if tensor is not None else memory.storage_holding(array)
    if storage is None:
        memory.sent_as_itself(array)
        return NotImplemented
    offset = _address(array) - storage.data_ptr()
    return _array_over, (memory.array_memory(storage), offset, array.shape, array.dtype, array.strides,
                         bool(array.flags.writeable))


def tensor_under(array: numpy.ndarray) -> torch.Tensor | None:
    """The tensor whose memory ``array`` views (``t.numpy()`` and its slices), if any."""
    base = array.base
    while isinstance(base, numpy.ndarray):
        base = base.base
    return base if isinstance(base, torch.Tensor) else None


def stands_for(sent: Any) -> Any:
    """The object a sender's memo entry stands for: the storage behind a ``StorageData`` or ``_ArrayMemory``
    (what the receiver's memo holds at that index), anything else as itself."""
    return sent.storage if type(sent) in (StorageData, _ArrayMemory) else sent


def _grad(t: torch.Tensor) -> torch.Tensor | None:
    return t.grad if t.is_leaf else None


def _dense_args(pickler: Any, t: torch.Tensor) -> tuple:
    """Where a dense tensor's values are: its storage (as the payload sends it), offset, shape, stride, dtype."""
    storage = pickler.host_memory.storage(t.untyped_storage())
    return storage, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype


def _dense_reduce(pickler: Any, t: torch.Tensor):
    if t.requires_grad and not t.is_leaf:
        return _graph_reduce(pickler, t)
    return _rebuild_dense, (*_dense_args(pickler, t), t.requires_grad, _grad(t))


def _graph_reduce(pickler: Any, t: torch.Tensor):
    """A non-leaf tensor: its value, and (where the graph stays in the remote session, which answers this tensor's
    key) a stand-in grad_fn, so that it looks as a local non-leaf does (``remote_graph``): on the meta device too,
    where a result has no values but does have ``requires_grad`` and a ``grad_fn``."""
    keeps = getattr(pickler, "keeps_graphs", False)
    if not keeps:  # an autograd graph cannot cross a process boundary; what arrives is its value
        pickler.notes.append("a non-leaf tensor (part of an autograd graph) arrived detached")
    if not _is_plain_dense(t):
        detached = t.detach()
        return (_remote_graph_over, (detached, type(t.grad_fn).__name__)) if keeps else (_same, (detached,))
    if keeps:
        return _rebuild_remote_graph, (*_dense_args(pickler, t), type(t.grad_fn).__name__)
    return _rebuild_dense, (*_dense_args(pickler, t), False, None)


def _same(x: Any) -> Any:
    """Identity at load time; at dump time it makes pickle go through the storage memo."""
    return x


def _python_state(t: torch.Tensor) -> dict | None:
    return dict(t.__dict__) or None


def _torch_reduce(obj: torch.Tensor, proto: int):
    """torch's own reduction, with the 2.13 float8/uint16 rebuild swapped for one that works."""
    if obj.requires_grad and not obj.is_leaf:
        obj = obj.detach()
    func, args, *rest = obj.__reduce_ex__(proto)
    func, args = _compat_call(func, args)
    return (func, args, *rest)


def _compat_call(func, args):
    if func is torch._utils._rebuild_tensor_v3:
        return rebuild_tensor_v3_compat, args
    if func is torch._tensor._rebuild_from_type_v2:
        inner, cls, inner_args, state = args
        inner, inner_args = _compat_call(inner, inner_args)
        return func, (inner, cls, inner_args, state)
    return func, args


# ------------------------------------------------------------------- receiving
def _make_storage(buffer: Any, device: str) -> torch.UntypedStorage:
    if len(memoryview(buffer)) == 0:
        storage = torch.UntypedStorage(0)
    else:
        if memoryview(buffer).readonly:  # torch.frombuffer needs a writable buffer
            buffer = bytearray(buffer)
        storage = torch.frombuffer(buffer, dtype=torch.uint8).untyped_storage()
    return _place(storage, resolve_device(device, getattr(_target, "choice", None)))


def _storage_of_array(array: numpy.ndarray) -> torch.UntypedStorage:
    if not array.flags.writeable:  # its buffer arrived read-only (``wire.loads`` of bytes): torch needs a copy
        array = array.copy()
    storage = torch.from_numpy(array.reshape(-1).view(numpy.uint8)).untyped_storage()
    return _place(storage, resolve_device("cpu", getattr(_target, "choice", None)))


def host_bytes(storage: torch.UntypedStorage) -> Any:
    """A buffer over a storage's bytes (a CUDA one's copied to the host)."""
    return _host_view(storage if storage.device.type == "cpu" else storage.cpu())


def placed_copy(storage: torch.UntypedStorage, device: str) -> torch.UntypedStorage:
    """A copy of ``storage`` on where a storage sent from ``device`` lands here (the current device choice)."""
    target = resolve_device(device, getattr(_target, "choice", None))
    return storage.to(device=target) if storage.device != target else storage.clone()


def _array_over(storage: torch.UntypedStorage, offset: int, shape: tuple, dtype: numpy.dtype, strides: tuple,
                writeable: bool) -> numpy.ndarray:
    """A numpy array over a received storage's memory, as the sender's array was over its tensor's."""
    if storage.device.type != "cpu":  # tensors asked for on CUDA: an array cannot share that memory
        storage = storage.cpu()
    memory = torch.empty(0, dtype=torch.uint8).set_(storage).numpy()
    array = numpy.ndarray(shape, dtype, buffer=memory, offset=offset, strides=strides)
    array.flags.writeable = writeable
    return array


def _rebuild_dense(storage, offset, size, stride, dtype, requires_grad, grad=None):
    t = torch.empty((0,), dtype=dtype, device=storage.device).set_(storage, offset, size, stride)
    if requires_grad:
        t.requires_grad_(True)
    if grad is not None:
        t.grad = grad
    return t


def _rebuild_remote_graph(storage, offset, size, stride, dtype, grad_fn: str):
    return _remote_graph_over(_rebuild_dense(storage, offset, size, stride, dtype, False), grad_fn)


def _remote_graph_over(value: torch.Tensor, grad_fn: str) -> torch.Tensor:
    from .remote_graph import stand_in

    return stand_in(value, grad_fn)


def _rebuild_parameter(storage, offset, size, stride, dtype, requires_grad, grad, state):
    param = torch.nn.Parameter(_rebuild_dense(storage, offset, size, stride, dtype, False), requires_grad)
    if grad is not None:
        param.grad = grad
    if state:
        param.__dict__.update(state)
    return param


def _typed_storage(untyped: torch.UntypedStorage, dtype: torch.dtype):
    return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def rebuild_tensor_v3_compat(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                             metadata=None):
    """``torch._utils._rebuild_tensor_v3`` that accepts an UntypedStorage (broken in torch 2.13)."""
    if isinstance(storage, torch.UntypedStorage):
        storage = torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.uint8, _internal=True)
    return torch._utils._rebuild_tensor_v3(
        storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata)


# ---------------------------------------------------- legacy payload safety net
class _LegacyPickleModule:
    """The ``pickle_module`` handed to ``torch.load`` for legacy storage blobs.

    torch 2.13's legacy loader asks ``storage_type.dtype`` of ``UntypedStorage``
    (which has none) for float8/uint16/... storages; this maps that class to a
    stand-in with ``dtype = uint8`` so those blobs load.
    """

    class _UntypedStand:
        dtype = torch.uint8

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module in ("torch", "torch.storage") and name == "UntypedStorage":
                return _LegacyPickleModule._UntypedStand
            return super().find_class(module, name)

    load = staticmethod(pickle.load)
    __name__ = "pickle"


def legacy_storage_loader(choice: str | None):
    """A replacement for ``torch.storage._load_from_bytes`` that honours the device choice."""

    def load(blob: bytes) -> Any:
        return torch.load(io.BytesIO(blob), map_location=_torch_map_location(choice),
                          pickle_module=_LegacyPickleModule, weights_only=False)

    return load
