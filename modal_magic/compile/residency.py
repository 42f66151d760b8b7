"""Which of the notebook's parameters and buffers a remote place holds for compiled graphs, and at which version.

A compiled call sends only activations: a parameter goes once, and again only
when the notebook changed it (an optimizer step bumps the tensor's ``_version``;
a new ``nn.Parameter`` is another object, so another key). A change made through
``.data`` is not seen: torch gives ``p.data`` a version counter of its own. Each tensor object
gets one key for the kernel's life; when it is garbage-collected the places
that held it are told to let it go with their next call.

Why this is not the remote-resident session (``notebook/session.py``,
``wire/resident.py``), though the keys live in the same table type
(``wire.resident.Table``, weakly held, here) and the remote side keeps both in
its store (``worker/store.py``, as two namespaces): the session names every
plain tensor that crosses, either way, keeps each remotely until the notebook's
mirror dies, and tells a change by fingerprints that sum a parameter's values,
on both sides, every cell. A compiled graph is called once per forward and per
backward, in a training loop: its activations and outputs must not stay remote,
and its parameters must cost a call nothing. So its calls go as ``fresh`` cells
(``channel.py``), the notebook alone mints its keys (parameters, buffers, the
stand-ins of saved activations), and the version counter alone tells a change.
One protocol for both would need a session ``Sender`` that names only what a
graph plan marks resident, with a change test per namespace.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Iterable

import torch

from ..wire.resident import Table

__all__ = ["ResidentTensors", "key", "existing_key"]

_KEYS = Table(f"{uuid.uuid4().hex[:8]}.", weak=True)  # this kernel: keys from two notebooks never meet remotely
"""Every tensor object given a key, held weakly: its death releases the key (``Table.released``)."""
_places: weakref.WeakSet[ResidentTensors] = weakref.WeakSet()


def key(tensor: torch.Tensor) -> str:
    """This tensor object's key, the same on every call while it lives."""
    entry = _KEYS.entry_of(tensor)
    if entry is None:
        entry = _KEYS.put(_KEYS.mint_key(), tensor, None, ())  # no version or fingerprint: each place has its own
    return entry.key


def existing_key(tensor: torch.Tensor) -> str | None:
    """This tensor object's key if it has one (it was, or stands for, something kept remotely)."""
    entry = _KEYS.entry_of(tensor)
    return None if entry is None else entry.key


def _tell_places() -> None:
    """Every place learns of the keys whose tensors died since this was last asked."""
    gone, _KEYS.released = _KEYS.released, []  # a death while this runs appends to the new list
    for place in list(_places):
        for name in gone:
            place.release(name)


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
        _tell_places()
        return tuple(self._dropped)

    def delivered(self, names: Iterable[str]) -> None:
        """The remote side freed these."""
        self._dropped.difference_update(names)
