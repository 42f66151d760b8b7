"""The notebook's side of the remote-resident session: which of its tensors mirror a remote one.

One ``Session`` per kernel (``extension.current().session``), whatever the backend: keys and
versions are unique to the side that minted them, so a backend that lacks one
(another backend, a recycled worker or container) just asks for its value.
Mirrors are held weakly: a tensor the notebook no longer holds (deleted,
rebound, collected) is released remotely with the next request.

``Crossing`` is one cell's exchange: it packs the inputs, runs them (sending
again, as values, what the remote side says it lacks — one more round trip),
then records the versions both sides now agree on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InternalError
from ..protocol import OnEvent, Resources, ResultFrame, RunRequest, StageEvent
from ..wire import handles
from ..wire import payload as wire
from ..wire.resident import ALL, Receiver, Sender, Table

if TYPE_CHECKING:
    from ..backends.base import Backend

__all__ = ["Session", "Crossing", "HASH_MIN"]

HASH_MIN = 16 << 20
"""Buffers from this size up go as their digest when the remote side was sent that content before, where the
backend asks for it (``Backend.hashes_buffers``)."""

_ROUNDS = 3  # a cell whose inputs are asked for again more often than this is our bug


class Session:
    """The notebook's mirrors (weakly held), and what to tell the remote side with the next request."""

    def __init__(self) -> None:
        self.table = Table("n", weak=True)
        self.resync = False
        """A result could not be rebuilt here: the remote side must stop vouching for what it holds."""

    def crossing(self, variables: Mapping[str, Any], *, fresh: bool, disks: wire.Disks) -> Crossing:
        return Crossing(self, variables, fresh=fresh, disks=disks)

    def forget(self) -> None:
        """The remote sides were stopped (``%modal_stop``): nothing is resident any more."""
        self.table.clear()
        self.resync = False

    def take_released(self) -> list[str]:
        """The keys the notebook let go since the last request: mirrors of remote tensors, remote handles."""
        released, self.table.released = self.table.released, []  # a finalizer appends to the new list
        return released + handles.take_released()


class Crossing:
    """One cell's inputs and results through the session (``fresh``: without it, as every cell once did);
    ``disks`` says whether the cell sees this machine's files (``wire.files``)."""

    def __init__(self, session: Session, variables: Mapping[str, Any], *, fresh: bool, disks: wire.Disks) -> None:
        self._session = session
        self._disks = disks
        self._hash_min: int | None = None
        self._variables = variables
        self._fresh = fresh
        self._pins = [] if fresh else session.table.pin()  # nothing is released while the cell runs
        self._receiver: Receiver | None = None
        self._lost_graphs: list[str] = []
        self._pack(())

    def _pack(self, missing: tuple[str, ...]) -> None:
        self._sender = None if self._fresh else Sender(self._session.table, missing=missing, hash_min=self._hash_min)
        self.inputs = wire.pack(self._variables, refs=self._sender, keep_memo=True, disks=self._disks)

    def pack_for(self, hashes_buffers: bool) -> None:
        """Pack as the request will go to a backend that does (or not) take big buffers as their digest
        (``Backend.hashes_buffers``): the run, and the dry run that says what it will send."""
        if hashes_buffers and self._sender is not None and self._hash_min is None \
                and any(memoryview(b).nbytes >= HASH_MIN for b in self.inputs.buffers):
            self._hash_min = HASH_MIN
            self._pack(())

    def pack_for_a_new_worker(self) -> None:
        """Pack every mirrored value as a value: what the run ends up sending to a worker or container that holds
        none of them (one not running yet), once it has said what it lacks. For the dry run's sizes."""
        if self._sender is not None:
            self._pack((ALL,))

    def run(self, backend: Backend, request: RunRequest, resources: Resources, on_event: OnEvent,
            timeout: float | None) -> ResultFrame:
        """``backend.run`` the cell; when the remote side lacks some keys, send those as values and run again."""
        missing: tuple[str, ...] = ()
        self.pack_for(backend.hashes_buffers)
        for _ in range(_ROUNDS):
            released = self._session.take_released()
            session = dataclasses.replace(
                request, resident=not self._fresh, release=tuple(released), resync=self._session.resync,
                references={} if self._sender is None else self._sender.references)
            try:
                result = backend.run(session, self.inputs, on_event, resources=resources, timeout=timeout)
            except BaseException:
                self._session.table.released.extend(released)  # they may not have arrived: say them again
                raise
            self._session.resync = False
            if not result.missing:
                if self._sender is not None:
                    self._sender.commit()
                return result
            missing = (*missing, *result.missing, *((ALL,) if result.empty else ()))
            self._note_lost_graphs(result.missing)
            on_event(StageEvent(kind="stage", stage="upload",
                                note=f"the remote session was recycled (a new worker or container): sending again "
                                     f"{len(result.missing)} value(s) it no longer holds"))
            self._pack(missing)
        raise InternalError(f"the remote side kept asking for values it was sent ({', '.join(missing[:5])}…)")

    def persistent_load(self, fallback: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """The results' references: resident keys here, anything else through ``fallback``."""
        self._receiver = Receiver(self._session.table, fallback, strict=True)
        return self._receiver.persistent_load

    def _note_lost_graphs(self, keys: tuple[str, ...]) -> None:
        """Non-leaf tensors the remote side lost: their values go again, their graphs cannot."""
        for key in keys:
            entry = self._session.table.get(key)
            t = None if entry is None else self._session.table.object(entry)
            if t is not None and t.grad_fn is not None:
                self._lost_graphs.append(
                    f"the autograd graph of a tensor ({type(t.grad_fn).__name__}) was lost with the recycled "
                    "worker or container; its value was sent again, detached: recompute it to call backward()")

    @property
    def notes(self) -> list[str]:
        """What changed on the way: the inputs' notes (a memmap sent as a plain array), lost graphs, the results'."""
        return [*self.inputs.notes, *self._lost_graphs, *([] if self._receiver is None else self._receiver.notes)]

    def apply(self) -> None:
        """Update the mirrors the results changed, in place."""
        if self._receiver is not None:
            self._receiver.apply()

    def lost(self) -> None:
        """The results could not be rebuilt: the remote side recorded versions this side never got."""
        if not self._fresh:
            self._session.resync = True

