"""Objects ⇄ a small header, one pickle stream and out-of-band buffers.

A payload is a named set of variables. Each variable is pickled by the same
``cloudpickle`` pickler in turn, so the pickle memo is shared — two names bound
to one object, views of one storage, tied weights all stay one object after the
trip — while a failure still names the variable it happened on. Large data
(torch storages, numpy arrays) leaves the stream as protocol-5 buffers, which a
transport sends as they are and the receiver turns into the new objects'
memory without copying.

Public helpers:

* ``dumps(obj)`` / ``loads(data, map_location="cpu")`` — one object as one
  bytes value. ``loads`` also accepts *any* (cloud)pickle bytes made on a GPU
  machine, mapping CUDA storages to ``map_location`` (the classic
  "Attempting to deserialize object on a CUDA device" fix), float8/uint16
  tensors that torch 2.13 cannot unpickle, and CuPy arrays (to numpy).
* ``pack(variables)`` / ``unpack(payload)`` — what the magic uses.
"""

from __future__ import annotations

import builtins as builtins_module
import contextlib
import functools
import gc
import importlib
import io
import pickle
import pickletools
import struct
import sys
import sysconfig
import types
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import cloudpickle
from cloudpickle import cloudpickle as _cloudpickle_internals

from . import process_state, sources
from .files import ELSEWHERE, Disks, Files, StaysBehind
from .identity import view_within

__all__ = ["Payload", "PackError", "UnpackError", "Refs", "MainGlobals", "Disks", "pack", "unpack", "dumps", "loads",
           "versions"]

PROTOCOL = 5
_MAGIC = b"MMWIRE1\n"


class PackError(pickle.PicklingError, TypeError):
    """A variable could not be pickled; ``name`` says which.

    A ``pickle.PicklingError``, so code written against pickle or cloudpickle
    catches it where it caught theirs (and still a ``TypeError``, as before).
    Its ``args`` are its constructor's arguments, so it survives pickling: a
    process pool sends it back as itself, not as ``BrokenProcessPool``.
    """

    def __init__(self, name: str, reason: BaseException) -> None:
        super().__init__(name, reason)
        self.name = name
        self.reason = reason

    @property
    def why(self) -> str:
        """What went wrong, in words: a ``StaysBehind`` says it in its own sentence."""
        return why_left_out(self.reason)

    def __str__(self) -> str:
        if isinstance(self.reason, StaysBehind):
            return f"variable {self.name!r} cannot be sent: {self.reason}."
        return f"variable {self.name!r} cannot be sent: {self.why}. Leave it out of the cell, or make it picklable."


def why_left_out(reason: BaseException) -> str:
    """Why a variable could not be sent, as ``Payload.skipped`` and ``PackError`` say it."""
    return str(reason) if isinstance(reason, StaysBehind) else f"{type(reason).__name__}: {reason}"


class UnpackError(pickle.UnpicklingError, RuntimeError):
    """A variable could not be rebuilt on this side; ``name`` says which.

    A ``pickle.UnpicklingError`` (and a ``RuntimeError``, as before); pickles
    as itself, like ``PackError``.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(name, message)
        self.name = name
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass
class Payload:
    """A packed set of variables: what a transport moves."""

    stream: bytes
    buffers: list[memoryview]
    names: list[str]
    versions: dict[str, str]
    skipped: dict[str, str] = field(default_factory=dict)
    """Variables left out (name → reason), when packing was lenient."""
    sizes: dict[str, int] = field(default_factory=dict)
    """Bytes each variable added (shared objects count for the first name that holds them)."""
    memo: dict[int, Any] = field(default_factory=dict, repr=False)
    """Sender only, with ``keep_memo``: memo index → object (never sent)."""
    memo_ends: list[int] = field(default_factory=list, repr=False)
    """Sender only, with ``keep_memo``: per name, in order, one past the last memo index its pickling made
    (an object's index says which variable it was sent as part of)."""
    notes: list[str] = field(default_factory=list)
    """One-line notes about values that changed on the way (e.g. detached tensors)."""
    sources: dict[str, sources.Source] = field(default_factory=dict)
    """The text of the cells and user files the payload's functions were defined in (``sources``)."""
    starts: list[tuple[int, int]] = field(default_factory=list)
    """Per name, in order: where its pickle begins in ``stream`` and the index of its first out-of-band
    buffer. Each name is a pickle of its own over one shared memo, so a receiver can go on at the next name
    when one fails to rebuild (``unpack(..., failed=...)``)."""

    @property
    def nbytes(self) -> int:
        return len(self.stream) + sum(memoryview(b).nbytes for b in self.buffers)

    def meta(self) -> dict[str, Any]:
        """Everything but the buffers, as a plain dict for a frame's metadata."""
        return {"stream": self.stream, "names": self.names, "versions": self.versions,
                "skipped": self.skipped, "notes": self.notes, "starts": self.starts, "sources": self.sources}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], buffers: list[Any]) -> Payload:
        return cls(stream=meta["stream"], buffers=buffers, names=meta["names"], versions=meta["versions"],
                   skipped=dict(meta.get("skipped", {})), notes=list(meta.get("notes", [])),
                   starts=[tuple(start) for start in meta.get("starts", ())],
                   sources={name: tuple(source) for name, source in meta.get("sources", {}).items()})


def versions() -> dict[str, str]:
    """The library versions that decide whether a payload can be read elsewhere."""
    found = {"python": ".".join(map(str, sys.version_info[:3])), "cloudpickle": cloudpickle.__version__}
    for name in ("torch", "numpy"):
        module = sys.modules.get(name)
        if module is not None:
            found[name] = module.__version__
    return found


# ------------------------------------------------------------------ pickling
class _Pickler(cloudpickle.Pickler):
    """cloudpickle plus torch storages as out-of-band buffers (see ``tensors``), the user's own modules by
    value (see ``_users_modules``), and memmaps and open files as their files (see ``files``)."""

    def __init__(self, file: io.BytesIO, buffer_callback: Callable[[pickle.PickleBuffer], None],
                 by_value: frozenset[str] = frozenset(), disks: Disks = ELSEWHERE) -> None:
        # Read by the C pickler at init. Well-known singletons go as references to the other side's
        # own (``process_state``). One flat dict: the pickler looks every object's type up in it,
        # and cloudpickle's ChainMap costs a Python call per lookup (half the time of a plain object).
        self.code_files: set[str] = set()
        """The files the code objects sent by value were defined in (``sources``)."""
        # Not a bound method: the pickler would then hold itself, and with it (through its memo) every value
        # it pickled until the cyclic GC came by, so tensors a cell let go were released remotely too late.
        self.dispatch_table = {**cloudpickle.Pickler.dispatch_table, **process_state.reducers(),
                               types.CodeType: functools.partial(_code_where_defined, self.code_files)}
        super().__init__(file, protocol=PROTOCOL, buffer_callback=buffer_callback)
        self.notes: list[str] = []
        self._files = Files(disks, self.notes)
        self._reduce_torch, self.host_memory = _torch_support()
        self._by_value = by_value
        self._refs: Refs | None = None
        numpy = sys.modules.get("numpy")
        self._ndarray: type | None = numpy.ndarray if numpy is not None else None
        self._arrays_sent: dict[int, Any] = {}
        """Contiguous arrays numpy sent as their memory in this payload, by their id and their base's: a later
        view of one (``a[::2]`` beside ``a``) goes as that view, not as a copy of its own."""
        self.keeps_graphs = False
        """Non-leaf tensors go as values that say their graph stayed behind (``resident``), not as detached ones."""

    def refer_to(self, refs: Refs) -> None:
        """Send the inputs ``refs`` knows, storages they own and views of their arrays by reference."""
        self._refs = refs
        self.persistent_id = refs.persistent_id
        self.keeps_graphs = getattr(refs, "keeps_graphs", False)
        if self.host_memory is not None:
            self.host_memory.inputs = refs.is_input
            self.host_memory.resident_at = getattr(refs, "storage_at", None)

    def reducer_override(self, obj: Any) -> Any:
        if self._reduce_torch is not None:
            reduced = self._reduce_torch(self, obj)
            if reduced is not NotImplemented:
                return reduced
        if type(obj) is self._ndarray:
            reduced = self._array(obj)
            if reduced is not None:
                return reduced
        elif type(obj) in self._files.types:
            reduced = self._files.reduce(obj)
            if reduced is not NotImplemented:
                return reduced
        if self._by_value and isinstance(obj, _IMPORTABLE) and _top_package(obj) in self._by_value:
            return self._reduce_by_value(obj)
        if isinstance(obj, BaseException) and type(obj).__reduce__ in _EXCEPTION_REDUCE \
                and type(obj).__module__ != "builtins":
            return _rebuilt_exception, (type(obj), obj.args, obj.__dict__ or None)
        if type(obj) is functools._lru_cache_wrapper and obj.__module__ == "__main__":
            return _lru_cached, (obj.__wrapped__, *obj.cache_parameters().values())
        if isinstance(obj, type) and not _cloudpickle_internals._should_pickle_by_reference(obj):
            exported = _exported_as(obj)
            if exported is not None:
                return _module_attribute, exported
        return super().reducer_override(obj)

    def _array(self, array: Any) -> Any:
        """A view of an input array or of an array sent earlier in this payload, as that view; None for an
        array numpy sends itself (recorded, if contiguous, for the views of it still to come)."""
        reduced = None if self._refs is None else self._refs.array_view(array)
        if reduced is not None or array.dtype.hasobject:
            return reduced
        base = array.base
        owner = None if base is None else self._arrays_sent.get(id(base))
        if owner is not None and owner is not array:
            reduced = view_within(array, owner)
            if reduced is not None:
                return reduced
        if array.flags.c_contiguous or array.flags.f_contiguous:  # numpy sends its memory as it is
            self._arrays_sent[id(array)] = array
            if base is not None:
                self._arrays_sent.setdefault(id(base), array)
        return None

    def _reduce_by_value(self, obj: types.FunctionType | type | types.ModuleType) -> Any:
        """What ``cloudpickle.register_pickle_by_value`` would make of ``obj``, decided for this
        pickler only: the registry is process-wide, and would change how joblib, Dask or Ray
        pickle in the same kernel (cloudpickle's own reducers, which we call, are private API)."""
        if isinstance(obj, types.FunctionType):
            return self._dynamic_function_reduce(obj)
        if isinstance(obj, type):
            return _cloudpickle_internals._dynamic_class_reduce(obj)
        state = dict(vars(obj))
        state.pop("__builtins__", None)  # as cloudpickle does: may hold unpicklable objects
        return _cloudpickle_internals.dynamic_subimport, (obj.__name__, state)


def _lru_cached(function: Callable, maxsize: int | None, typed: bool) -> Callable:
    """A notebook's ``@lru_cache`` function rebuilt around its function (its cache starts empty): pickle
    would send it by name, which the other side's ``__main__`` may not hold yet (a cell just defined it)."""
    return functools.lru_cache(maxsize=maxsize, typed=typed)(function)


def _exported_as(cls: type) -> tuple[str, str] | None:
    """(module, name) where an installed module holds ``cls`` under another name than its own: pybind11
    enums ``torch.nn.functional`` re-exports, which pickle cannot find by their qualified name and which
    cannot go by value. Only a class of neither ``__main__`` nor the user's own modules (those go by value)."""
    module = getattr(cls, "__module__", None)
    attributes = _library_globals(module) if isinstance(module, str) else None
    if attributes is None or not isinstance(module, str):
        return None
    return next(((module, name) for name, value in list(attributes.items()) if value is cls), None)


def _module_attribute(module: str, name: str) -> Any:
    """What ``module`` holds as ``name``, on this side."""
    return getattr(importlib.import_module(module), name)


_IMPORTABLE = (types.FunctionType, type, types.ModuleType)
"""What cloudpickle pickles by reference to an importable module (unless sent by value)."""


def travels_by_value(obj: types.FunctionType | type) -> bool:
    """Whether ``pack`` sends ``obj``'s code and what it holds, not its importable name: the user's own modules'
    functions and classes (``_users_modules``), and whatever cloudpickle itself sends by value (``__main__``'s).
    The credential guard asks this, so it looks into exactly what leaves the machine."""
    if _top_package(obj) in _users_modules():
        return True
    try:
        return not _cloudpickle_internals._should_pickle_by_reference(obj)
    except Exception:  # noqa: BLE001 - cloudpickle could not say: it will try to send it by value
        return True


def _top_package(obj: Any) -> str | None:
    """The top-level package ``obj`` (a function, class or module) belongs to."""
    name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    return name.partition(".")[0] if isinstance(name, str) else None


def _torch_support() -> tuple[Callable[[Any, Any], Any] | None, Any]:
    """``tensors``' reducer and a fresh record of the host memory one payload sends."""
    if "torch" not in sys.modules:  # nothing can hold a tensor yet; keep torch unimported
        return None, None
    from . import tensors

    return tensors.reduce_torch, tensors.HostMemory()


class Refs(Protocol):
    """Lets the pickler send some objects as references (see ``identity``, and ``resident`` for tensors
    that stay remote); one with a true ``keeps_graphs`` attribute keeps autograd graphs where they are."""

    def reset(self) -> None: ...

    def persistent_id(self, obj: Any) -> Any: ...

    def is_input(self, obj: Any) -> bool: ...

    def array_view(self, array: Any) -> Any: ...


def pack(variables: Mapping[str, Any], *, lenient: bool = False, refs: Refs | None = None,
         keep_memo: bool = False, disks: Disks = ELSEWHERE,
         stand_in: Callable[[str, Any, str], Any] | None = None) -> Payload:
    """Pickle ``variables`` into a payload.

    Strict (inputs): the first variable that cannot be pickled raises
    ``PackError`` naming it. Lenient (outputs): such variables are left out and
    listed in ``payload.skipped``; the others still go. ``refs`` may replace
    objects by references; ``keep_memo`` records which object got which memo
    index (``payload.memo``), so that the receiver's references can be resolved. ``disks`` says whether the
    receiver sees this side's files (memmaps and open files then go as those files; see ``files``): by default
    it does not. ``stand_in(name, value, why)``, when lenient, may give what goes in the place of a variable
    that cannot be pickled (a remote handle, ``handles``); None leaves it out.
    """
    by_value = _users_modules()
    skipped: dict[str, str] = {}
    replaced: dict[str, Any] = {}
    while True:
        todo = {k: replaced.get(k, v) for k, v in variables.items() if k not in skipped}
        try:
            return _pack_once(todo, skipped, refs, keep_memo, by_value, disks)
        except _VariableFailed as failed:
            if not lenient:
                raise PackError(failed.name, failed.reason) from None
            why = why_left_out(failed.reason)
            substitute = None if stand_in is None or failed.name in replaced else \
                stand_in(failed.name, variables[failed.name], why)
            if substitute is None:
                skipped[failed.name] = why
            else:
                replaced[failed.name] = substitute


class _VariableFailed(Exception):
    def __init__(self, name: str, reason: BaseException) -> None:
        self.name, self.reason = name, reason


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Keep the cyclic GC out of bulk (un)pickling: with thousands of new objects
    alive it runs over and over and doubles the per-tensor cost, while a payload
    creates no garbage for it to find."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@gc_paused()
def _pack_once(variables: Mapping[str, Any], skipped: dict[str, str], refs: Refs | None,
               keep_memo: bool, by_value: frozenset[str], disks: Disks) -> Payload:
    stream = io.BytesIO()
    buffers: list[memoryview] = []
    pickler = _Pickler(stream, lambda b: buffers.append(b.raw()), by_value, disks)
    if refs is not None:
        refs.reset()
        pickler.refer_to(refs)
    notes: list[str] = []
    sizes: dict[str, int] = {}
    memo_ends: list[int] = []
    starts: list[tuple[int, int]] = []
    for name, value in variables.items():
        position, first_buffer = stream.tell(), len(buffers)
        starts.append((position, first_buffer))
        try:
            pickler.dump(value)
        except Exception as exc:
            raise _VariableFailed(name, exc) from exc
        sizes[name] = stream.tell() - position + sum(b.nbytes for b in buffers[first_buffer:])
        notes.extend(f"{name}: {note}" for note in dict.fromkeys(pickler.notes))
        pickler.notes.clear()
        if keep_memo:  # the C pickler's memo has no len(); a copy per variable is cheap beside pickling it
            memo_ends.append(len(pickler.memo.copy()))
    memo = {index: obj for index, obj in pickler.memo.copy().values()} if keep_memo else {}
    return Payload(stream=stream.getvalue(), buffers=buffers, names=list(variables), versions=versions(),
                   skipped=dict(skipped), sizes=sizes, notes=notes, memo=memo, memo_ends=memo_ends,
                   starts=starts, sources=sources.collect(pickler.code_files, _installed_prefixes))


def _code_where_defined(files: set[str], code: types.CodeType) -> Any:
    """cloudpickle's reduce of a code object, but keeping where it was defined (and noting it in ``files``):
    cloudpickle renames every file ``<dynamic-code>`` (for payloads that are the same bytes wherever a function
    was defined), and a traceback through the function then said ``File <dynamic-code>:2``, 'Could not get
    source'."""
    files.add(code.co_filename)
    constructor, arguments = _cloudpickle_internals._code_reduce(code)
    return constructor, tuple(code.co_filename if isinstance(argument, str) and argument == "<dynamic-code>"
                              else argument for argument in arguments)


_EXCEPTION_REDUCE = (BaseException.__reduce__, OSError.__reduce__)
"""An exception class that kept these reduces as they are rebuilds by calling itself with its ``args``."""


def _rebuilt_exception(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any] | None) -> BaseException:
    """An exception as pickle would rebuild it (``cls(*args)``, then its ``__dict__``), or, where its own
    ``__init__`` takes other arguments than the ``args`` it passed on (``BudgetExceeded(spent, limit)``
    calling ``super().__init__(message)``), made without calling it: pickle's own rebuild fails there, and the
    user's exception then arrived as a failure to rebuild the results instead of as itself."""
    try:
        exc = cls(*args)
    except Exception:  # noqa: BLE001 - whatever its __init__ raised, it is made without it
        builtin = next(base for base in cls.__mro__ if base.__module__ == "builtins")  # whose __new__ is safe
        exc = builtin.__new__(cls, *args)
        exc.args = args
    if state:
        exc.__dict__.update(state)
    return exc


# ---------------------------------------------------------------- unpickling
class MainGlobals:
    """Rebuilds the functions a notebook (or a cell) defined with ``namespace`` as their globals, as if defined here.

    cloudpickle gives the ``__main__`` functions of a payload a private dict holding copies of the globals
    they referenced: a function sent to a cell then ignored the cell rebinding ``OFFSET``, and one brought
    back inside another (a decorator's ``__wrapped__``) kept reading stale copies. The names they referenced
    that ``namespace`` lacks are added at once (a function may be called while the payload is rebuilt);
    ``undo`` takes them out again if it could not be.

    A function of an imported module that had to travel by value (a closure, such as the helper
    ``@contextmanager`` wraps around a notebook function) is rebuilt over that module's own globals, as
    pickle rebuilds a module's named functions: its private copy of them differed from the module's.
    """

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self._added: list[str] = []

    def make_function(self, code: types.CodeType, base_globals: dict[str, Any], *args: Any) -> types.FunctionType:
        name = base_globals.get("__name__")
        if name == self.namespace.get("__name__", "__main__"):
            return types.FunctionType(code, self.namespace, *args)
        library = _library_globals(name)
        if library is not None:
            return types.FunctionType(code, library, *args)
        return _cloudpickle_internals._make_function(code, base_globals, *args)

    def set_state(self, func: types.FunctionType, state: tuple[dict, dict]) -> None:
        globals_ = func.__globals__
        if globals_ is not self.namespace and globals_ is not _library_globals(func.__module__):
            return _cloudpickle_internals._function_setstate(func, state)
        attributes, slots = state
        if globals_ is self.namespace:  # a library's globals are its own: the copies that came are not merged
            for name, value in slots["__globals__"].items():
                if name not in self.namespace:
                    self.namespace[name] = value
                    self._added.append(name)
        builtins = globals_.get("__builtins__", builtins_module)
        _cloudpickle_internals._function_setstate(func, (attributes, {**slots, "__globals__": {}}))
        globals_["__builtins__"] = builtins  # cloudpickle sets its own module's

    def undo(self) -> None:
        """Take out the names added for functions of a payload that could not be rebuilt."""
        for name in self._added:
            self.namespace.pop(name, None)
        self._added.clear()


def _library_globals(name: Any) -> dict[str, Any] | None:
    """The globals of ``name``, an imported module that is not the user's own (the standard library, an
    installed package), whose functions are the same on both sides; None for any other."""
    if not isinstance(name, str) or name == "__main__" or name.partition(".")[0] in _users_modules():
        return None
    module = sys.modules.get(name)
    return vars(module) if isinstance(module, types.ModuleType) else None


class _Rebuilding:
    """Maps what a GPU machine wrote onto this one (legacy storage blobs, v3 rebuilds, CuPy); rebuilds
    ``__main__`` functions over a namespace when given ``MainGlobals``. Mixed into pickle's C unpickler
    (``_Unpickler``) and, after a variable failed, its Python one (``_GoingOn``)."""

    def __init__(self, file: io.BytesIO, *, buffers: Iterable[Any] | None, map_location: str | None,
                 main: MainGlobals | None = None) -> None:
        super().__init__(file, buffers=buffers)  # type: ignore[call-arg]  # pickle's unpicklers take them
        self.map_location = map_location
        self.main = main

    def find_class(self, module: str, name: str) -> Any:
        if self.main is not None and module == "cloudpickle.cloudpickle":
            if name == "_make_function":
                return self.main.make_function
            if name == "_function_setstate":
                return self.main.set_state
        if module == "torch.storage" and name == "_load_from_bytes":
            from . import tensors

            return tensors.legacy_storage_loader(self.map_location)
        if module == "torch._utils" and name == "_rebuild_tensor_v3":
            from . import tensors

            return tensors.rebuild_tensor_v3_compat
        if module.split(".")[0] == "cupy" and name in ("array", "asarray"):
            import numpy

            return numpy.asarray
        return super().find_class(module, name)  # type: ignore[misc]  # from the unpickler mixed in


class _Unpickler(_Rebuilding, pickle.Unpickler):
    """The unpickler of every payload: pickle's own (C), with our mappings."""


class _Lost:
    """Stands in the memo for what a variable that failed to rebuild would have memoized."""


_LOST = _Lost()


class _LostShared(Exception):
    def __str__(self) -> str:
        return "it holds an object that another variable, which could not be rebuilt, shares"


class _Holey(dict[int, Any]):
    """A memo with holes where a failed variable's objects would be: a later variable that names one fails
    too, instead of being rebuilt around a placeholder."""

    def __getitem__(self, index: int) -> Any:
        found = dict.__getitem__(self, index)
        if found is _LOST:
            raise _LostShared()
        return found


class _GoingOn(_Rebuilding, pickle._Unpickler):
    """The rest of a payload after a variable failed: pickle's Python unpickler, whose memo may be
    ``_Holey`` (the C one copies its memo into an array of its own). Slower, but only after a failure."""


def _memo_size_after(payload: Payload, index: int) -> int:
    """How many objects the sender had memoized once it had pickled the first ``index + 1`` names: protocol
    5's MEMOIZE numbers them as the receiver reads them, so a receiver that stopped mid-variable must know."""
    end = payload.starts[index + 1][0] if index + 1 < len(payload.starts) else len(payload.stream)
    stream, size = io.BytesIO(memoryview(payload.stream)[:end]), 0
    while stream.tell() < end:
        for opcode, argument, _ in pickletools.genops(stream):  # one name's pickle, up to its STOP
            if opcode.name == "MEMOIZE":
                size += 1
            elif opcode.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                size = max(size, int(cast(int, argument)) + 1)
    return size


@gc_paused()
def unpack(payload: Payload, *, map_location: str | None = "cpu",
           persistent_load: Callable[[Any], Any] | None = None,
           memo: dict[int, Any] | None = None, main: MainGlobals | None = None,
           failed: dict[str, str] | None = None) -> dict[str, Any]:
    """Rebuild the variables of ``payload``; tensors land on ``map_location`` (cpu|auto|cuda[:n]).

    All-or-nothing unless ``failed`` is given: an ``UnpackError`` names the first variable that failed and
    explains a version mismatch when there is one. With ``failed`` (the results of a cell: one value that
    cannot be rebuilt here must not drop the others, as a local cell would have bound them all), a variable
    that fails is left out and named there (name → why), and the rest are rebuilt; a later variable that
    shared an object with it fails too, and is named too. ``persistent_load`` resolves the sender's
    references; ``memo``, if given, is filled with memo index → object; ``main`` rebuilds ``__main__``
    functions over a namespace (undone if unpacking fails all-or-nothing).
    """
    lenient = failed is not None and len(payload.starts) == len(payload.names)
    sources.install(payload.sources)  # before any function is rebuilt: a traceback may come while unpacking
    unpickler: Any = _unpickler_at(payload, 0, map_location, persistent_load, main)
    result: dict[str, Any] = {}
    with _device_choice(map_location), warnings.catch_warnings():
        # torch's own rebuild functions (quantized, legacy blobs) touch TypedStorage and warn about it.
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
        for index, name in enumerate(payload.names):
            try:
                result[name] = unpickler.load()
            except Exception as exc:
                message = _explain_load_failure(name, exc, payload.versions)
                if not lenient:
                    if main is not None:
                        main.undo()
                    raise UnpackError(name, message) from exc
                assert failed is not None
                failed[name] = message
                if index + 1 < len(payload.names):  # the next name's pickle, over what was rebuilt so far
                    holey = _Holey(unpickler.memo.copy())
                    for hole in range(len(holey), _memo_size_after(payload, index)):
                        holey[hole] = _LOST
                    unpickler = _unpickler_at(payload, index + 1, map_location, persistent_load, main, holey)
    if memo is not None:
        memo.update(unpickler.memo.copy())
    return result


def _unpickler_at(payload: Payload, index: int, map_location: str | None,
                  persistent_load: Callable[[Any], Any] | None, main: MainGlobals | None,
                  memo: _Holey | None = None) -> Any:
    """An unpickler that starts at the ``index``-th name's pickle; after a failure (``memo`` given), the
    Python one over that memo."""
    position, first_buffer = payload.starts[index] if payload.starts else (0, 0)
    stream = io.BytesIO(payload.stream)
    stream.seek(position)
    kind: type[_Rebuilding] = _Unpickler if memo is None else _GoingOn
    unpickler: Any = kind(stream, buffers=payload.buffers[first_buffer:], map_location=map_location, main=main)
    if memo is not None:
        unpickler.memo = memo
    if persistent_load is not None:
        unpickler.persistent_load = persistent_load  # pickle's documented hook
    return unpickler


def _device_choice(map_location: str | None):
    if "torch" in sys.modules:
        from . import tensors

        return tensors.map_location(map_location)
    return contextlib.nullcontext()


def _explain_load_failure(name: str, exc: BaseException, sender: Mapping[str, str]) -> str:
    here = versions()
    differing = [
        f"{lib} {sender[lib]} there vs {here.get(lib, 'not installed')} here"
        for lib in ("python", "torch", "numpy", "cloudpickle")
        if lib in sender and sender[lib] != here.get(lib)
    ]
    base = f"variable {name!r} could not be rebuilt here: {type(exc).__name__}: {exc}"
    if differing:
        return f"{base}. The sending side used different versions ({'; '.join(differing)}); match them."
    return base


# ------------------------------------------------------------------ bytes API
_HEADER = struct.Struct("<Q")


def dumps(obj: Any) -> bytes:
    """One object as bytes in our format (buffers appended after the stream)."""
    payload = pack({"obj": obj})
    meta = pickle.dumps({"versions": payload.versions, "stream": len(payload.stream),
                         "buffers": [b.nbytes for b in payload.buffers]}, protocol=PROTOCOL)
    out = io.BytesIO()
    out.write(_MAGIC)
    out.write(_HEADER.pack(len(meta)))
    out.write(meta)
    out.write(payload.stream)
    for buf in payload.buffers:
        out.write(buf)
    return out.getvalue()


def loads(data: bytes | bytearray | memoryview, map_location: str | None = "cpu") -> Any:
    """Load bytes from ``dumps`` *or* any (cloud)pickle bytes, mapping CUDA storages to ``map_location``."""
    view = memoryview(data)
    if bytes(view[: len(_MAGIC)]) != _MAGIC:
        unpickler = _Unpickler(io.BytesIO(view), buffers=None, map_location=map_location)
        with _device_choice(map_location):
            return unpickler.load()
    pos = len(_MAGIC)
    (meta_len,) = _HEADER.unpack_from(view, pos)
    pos += _HEADER.size
    meta = pickle.loads(view[pos: pos + meta_len])
    pos += meta_len
    stream = bytes(view[pos: pos + meta["stream"]])
    pos += meta["stream"]
    buffers = []
    for size in meta["buffers"]:
        buffers.append(view[pos: pos + size])
        pos += size
    payload = Payload(stream=stream, buffers=buffers, names=["obj"], versions=meta["versions"])
    return unpack(payload, map_location=map_location)["obj"]


# ---------------------------------------------------- the user's own modules
_NEVER_BY_VALUE = frozenset({"__main__", "modal_magic"})  # __main__: cloudpickle sends it by value anyway
_users_modules_cache: tuple[int, frozenset[str]] = (-1, frozenset())


def _users_modules() -> frozenset[str]:
    """Top-level names of the user's own modules, whose functions and classes travel by value.

    cloudpickle pickles importable modules by reference, which fails in a
    container that lacks the user's files. A module counts as the user's own
    when it was loaded from outside the standard library and site-packages.
    Scanning ``sys.modules`` is redone only when its size changes.
    """
    global _users_modules_cache
    count = len(sys.modules)
    if _users_modules_cache[0] != count:
        installed = _installed_prefixes()
        own = frozenset(
            name for name, module in list(sys.modules.items())
            if "." not in name  # submodules follow their top-level package
            and name not in _NEVER_BY_VALUE
            and isinstance(module, types.ModuleType)  # coverage tools put other objects there (cloudpickle skips them)
            and _is_users_own(module, installed)
        )
        _users_modules_cache = (count, own)
    return _users_modules_cache[1]


def _installed_prefixes() -> tuple[str, ...]:
    """Where installed code lives: the standard library and every site-packages on the path."""
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return tuple(paths | {p for p in sys.path if "site-packages" in p or "dist-packages" in p})


def _is_users_own(module: types.ModuleType, installed: tuple[str, ...]) -> bool:
    """Whether ``module`` was loaded from the user's files: a ``.py`` file, or a folder without
    ``__init__.py`` (a namespace package, which has no ``__file__``), outside ``installed``.

    Reads the module's ``__dict__``: a module-level ``__getattr__`` is not called.
    """
    attrs = vars(module)
    file = attrs.get("__file__")
    try:
        places = [file] if file else [str(p) for p in attrs.get("__path__") or ()]
    except Exception:  # noqa: BLE001 - a foreign __path__ object: treat the module as installed
        return False
    return bool(places) and not any(place.startswith(installed) for place in places)
