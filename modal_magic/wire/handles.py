"""Remote handles: a value a cell bound that cannot travel stays where the cell ran, and the notebook holds a handle.

A local cell binds ``opt = torch.compile(fn)``, ``out, vjp_fn = torch.func.vjp(f, x)``, a generator, an open file
of the container's disk — values pickle cannot carry. They used to be left out of the results, so the next cells
that used them failed with ``NameError``. Now the worker keeps such a value (``hold``, for as long as the
notebook holds its handle) and sends a ``RemoteHandle`` in its place:

* a later remote cell that reads the name gets the real object back (the handle pickles as its key, and
  ``_resolve`` on the worker's side finds it; on a worker that was replaced since, the handle says so);
* in the notebook, any use of it raises ``RemoteOnly`` with one sentence: what it is, where it lives, why it
  could not come, and that ``%%modal_gpu`` cells can use it;
* one handle per key in the notebook (a second name bound to the same value is the same handle), and when it
  dies its key goes to the worker with the next request (``take_released``), which lets the value go.

Only a worker that keeps a session holds values (``holding``): a ``--fresh`` cell or a ``--map`` copy still
names what it could not bring back.
"""

from __future__ import annotations

import itertools
import traceback
import uuid
import weakref
from typing import Any

__all__ = ["RemoteHandle", "RemoteOnly", "hold", "drop", "is_key", "take_released", "start_holding", "count", "PLACE"]

PLACE = "MODAL_MAGIC_PLACE"
"""The environment variable a worker's host sets to say where it is ('the Modal container'); unset: a local
worker, named by its pid."""

_PREFIX = "h:"
_process = uuid.uuid4().hex[:8]  # keys of another process (a replaced worker) are never found here
_counter = itertools.count(1)
_held: dict[str, Any] = {}
_keys: dict[int, str] = {}  # id(value) -> key, so one value held twice has one key
_holding = False
_handles: weakref.WeakValueDictionary[str, RemoteHandle] = weakref.WeakValueDictionary()
_released: list[str] = []


class RemoteOnly(AttributeError):
    """A remote handle was used where its value is not: in the notebook, or on a worker that lost it.

    An AttributeError, so that ``getattr(handle, name, default)`` and IPython's display probes pass over it. Shown
    as its sentence and the line of the user's code that used the handle, not the frame of ours that raised it.
    """

    def _render_traceback_(self) -> list[str]:
        frames = [frame for frame in traceback.extract_tb(self.__traceback__) if frame.filename != __file__]
        where = [f"  used at line {frames[-1].lineno}: {(frames[-1].line or '').strip()}"] if frames else []
        return [f"{type(self).__name__}: {self}", *where]


class RemoteHandle:
    """Stands for a value that stayed where the cell ran (see the module's docstring)."""

    __slots__ = ("key", "name", "kind", "why", "where", "gone", "__weakref__")

    def __init__(self, key: str, name: str, kind: str, why: str, where: str, gone: bool = False) -> None:
        for field, value in (("key", key), ("name", name), ("kind", kind), ("why", why), ("where", where),
                             ("gone", gone)):
            object.__setattr__(self, field, value)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _resolve, (self.key, self.name, self.kind, self.why, self.where)

    def sentence(self) -> str:
        if self.gone:
            return (f"{self.name!r} stands for a {self.kind} that stayed in {self.where}, which has been replaced "
                    "since, so it is gone: run the cell that made it again.")
        return (f"{self.name!r} is a {self.kind} that stays in {self.where}: it could not come back here "
                f"({self.why}). Use it in %%modal_gpu cells, where it is the real object.")

    def __repr__(self) -> str:
        return f"<remote {self.kind} {self.name!r}, kept in {self.where}{' (gone)' if self.gone else ''}>"

    # Any use of it but its repr and pickling: one sentence.
    def __getattr__(self, attribute: str) -> Any:
        raise RemoteOnly(self.sentence())

    def __setattr__(self, attribute: str, value: Any) -> None:
        raise RemoteOnly(self.sentence())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RemoteOnly(self.sentence())

    def __iter__(self) -> Any:
        raise RemoteOnly(self.sentence())

    def __next__(self) -> Any:
        raise RemoteOnly(self.sentence())

    def __getitem__(self, item: Any) -> Any:
        raise RemoteOnly(self.sentence())

    def __enter__(self) -> Any:
        raise RemoteOnly(self.sentence())

    def __exit__(self, *exc_info: Any) -> None:
        raise RemoteOnly(self.sentence())


def start_holding() -> None:
    """This process keeps values for the notebook (a worker with a session: ``worker/store.py``)."""
    global _holding
    _holding = True


def hold(value: Any, name: str, why: str, where: str) -> RemoteHandle:
    """Keep ``value`` here and return the handle that goes to the notebook in its place."""
    key = _keys.get(id(value))
    if key is None or _held.get(key) is not value:
        key = f"{_PREFIX}{_process}.{next(_counter)}"
        _held[key], _keys[id(value)] = value, key
    return RemoteHandle(key, name, _kind(value), why, where)


def _kind(value: Any) -> str:
    kind = type(value)
    return kind.__name__ if kind.__module__ in ("builtins", "__main__") else f"{kind.__module__}.{kind.__qualname__}"


def is_key(key: str) -> bool:
    return key.startswith(_PREFIX)


def drop(key: str) -> None:
    """The notebook let the handle go: so does this process."""
    value = _held.pop(key, None)
    if value is not None and _keys.get(id(value)) == key:
        del _keys[id(value)]


def count() -> int:
    """How many values this process keeps for remote handles (``%modal_resident``'s report)."""
    return len(_held)


def take_released() -> list[str]:
    """The keys of handles the notebook no longer holds, to tell the worker with the next request."""
    released = _released[:]
    del _released[:]
    return released


def _resolve(key: str, name: str, kind: str, why: str, where: str) -> Any:
    """What a handle pickled as becomes on arrival: the value where it is held, else a (single) handle."""
    if key in _held:
        return _held[key]
    if _holding:  # a worker that should hold it, but was replaced since the handle was made
        return RemoteHandle(key, name, kind, why, where, gone=True)
    handle = _handles.get(key)
    if handle is None:
        handle = _handles[key] = RemoteHandle(key, name, kind, why, where)
        weakref.finalize(handle, _released.append, key)
    return handle
