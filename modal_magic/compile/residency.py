"""Which of the notebook's parameters and buffers a remote place already holds, and at which version.

A compiled call sends only activations: a parameter goes once, and again only
when the notebook changed it (an optimizer step bumps the tensor's ``_version``;
a new ``nn.Parameter`` is another object, so another key). A change made through
``.data`` is not seen: torch gives ``p.data`` a version counter of its own. Each tensor object
gets one key for the kernel's life; when it is garbage-collected the places
that held it are told to let it go with their next call.

This is deliberately one small class with a narrow interface (``key``,
``stale``, ``held``, ``lost``, ``dropped``/``delivered``): the general
remote-resident object store (issue 15) will replace it, and the compiled
graphs should not notice.
"""

from __future__ import annotations

import itertools
import uuid
import weakref
from typing import Iterable

import torch

__all__ = ["ResidentTensors", "key", "existing_key"]

_TOKEN = uuid.uuid4().hex[:8]  # this kernel: keys from two notebooks never meet in one container
_counter = itertools.count()
_keys: dict[int, str] = {}  # id(tensor) → key, while the tensor lives
_places: "weakref.WeakSet[ResidentTensors]" = weakref.WeakSet()


def key(tensor: torch.Tensor) -> str:
    """This tensor object's key, the same on every call while it lives."""
    found = _keys.get(id(tensor))
    if found is None:
        found = _keys[id(tensor)] = f"{_TOKEN}.{next(_counter)}"
        weakref.finalize(tensor, _forget, id(tensor), found)
    return found


def existing_key(tensor: torch.Tensor) -> str | None:
    """This tensor object's key if it has one (it was, or stands for, something kept remotely)."""
    return _keys.get(id(tensor))


def _forget(ident: int, gone: str) -> None:
    if _keys.get(ident) == gone:
        del _keys[ident]
    for place in list(_places):
        place.release(gone)


class ResidentTensors:
    """One remote place's holdings, as far as the notebook knows; the remote side's own report wins."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}  # key → the tensor's _version when the remote side got it
        self._dropped: set[str] = set()
        _places.add(self)

    def stale(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
        """The (key, tensor) pairs the remote side lacks or holds an older version of: to send."""
        return [(k, t) for k, t in dict(tensors).items() if self._held.get(k) != t._version]

    def held(self, name: str, tensor: torch.Tensor) -> None:
        """The remote side now holds ``tensor`` as it is here."""
        self._held[name] = tensor._version

    def lost(self, names: Iterable[str]) -> None:
        """The remote side lacks these (a new worker or container), or may hold them other than here."""
        for name in names:
            self._held.pop(name, None)

    def release(self, name: str) -> None:
        """The notebook's tensor is gone: the remote side may free its copy."""
        if self._held.pop(name, None) is not None:
            self._dropped.add(name)

    def dropped(self) -> tuple[str, ...]:
        """Keys to tell the remote side to free, with the next call."""
        return tuple(self._dropped)

    def delivered(self, names: Iterable[str]) -> None:
        """The remote side freed these."""
        self._dropped.difference_update(names)
