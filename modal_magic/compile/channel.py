"""A remote place — the session's local worker or Modal container — and one graph call's round trip there.

A call travels as an ordinary cell of the session (``driver.run_cell``), so it
runs in the very worker the magic's cells use and rides on everything that path
already does: the payload format (tensors out of band, CUDA → the notebook's
device), the Modal container and its GPU options, grad mode and random states
carried both ways, in-place changes to the notebook's tensors applied here,
errors rebuilt with their type, interrupts. The cell is one line that hands a
``Call`` to ``remote.execute`` in a private namespace; only its reply comes back.

The place also keeps what the notebook believes the remote side holds (graphs,
resident tensors, a training forward's saved activations). That belief only
saves bytes: the remote side reports what it lacks, and the call is repeated
once with those things.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..backends import registry
from ..errors import ModalMagicError, UsageProblem
from ..notebook.driver import CellOptions, run_cell
from ..notebook.output import show_event
from ..protocol import Event
from .graph import GraphPlan
from .protocol import Call, RemoteGraphError, Reply
from .residency import ResidentTensors, existing_key, key

__all__ = ["Place", "CallStats"]

_CELL = "from modal_magic.compile.remote import execute as _mm_execute\n_mm_reply = _mm_execute(_mm_call)"
_REPLY = "_mm_reply"


@dataclass
class CallStats:
    """What one compiled call cost: bytes each way, round trips, what had to be (re)sent."""

    sent_bytes: int = 0
    received_bytes: int = 0
    round_trips: int = 0
    graph_sent: bool = False
    tensors_sent: list[str] = field(default_factory=list)
    """Keys of the resident tensors (parameters, buffers) that travelled with this call."""


class Place:
    """One remote place, and the graphs and tensors the notebook believes it holds."""

    def __init__(self, options: CellOptions, compile_with: str) -> None:
        # Only the reply comes back; nothing to show but the remote side's own output; a model of any size goes.
        # fresh: outside the session's residency. Its keys and change policy are the compiled graphs' own
        # (``residency.py`` says why): the session would keep every call's activations and outputs remotely and
        # fingerprint them, and sum the parameters, on every call.
        self.options = dataclasses.replace(options, outputs=(_REPLY,), quiet=True, max_input_bytes=None,
                                           fresh=True)
        self.compile_with = compile_with
        self.tensors = ResidentTensors()
        self.graphs: set[str] = set()
        self.last_call: CallStats | None = None
        self._kept: weakref.WeakValueDictionary[str, torch.Tensor] = weakref.WeakValueDictionary()
        """Stand-ins for the saved activations kept there, by key, while autograd holds them."""

    def where(self) -> str:
        """Where its graphs run, in the backend's own words: 'the local worker', 'Modal (A10G)'."""
        name, _ = registry.choose(self.options.backend)
        return registry.backend_class(name).describe(gpu=self.options.gpu).place

    def call(self, plan: GraphPlan, args: Sequence[Any]) -> tuple[Any, ...]:
        """Run ``plan``'s graph on ``args`` there; its outputs here, and its in-place changes applied here."""
        resident = {position: (key(arg), arg) for position, arg in enumerate(args)
                    if position in plan.resident or self.stands_in(arg)}
        standins = [torch.empty(0) for _ in plan.kept]
        keep = tuple((position, key(standin)) for position, standin in zip(plan.kept, standins, strict=True))
        stats = self.last_call = CallStats()
        try:
            reply = self._call(plan, args, resident, keep, stats)
        except BaseException as exc:
            # A half-run graph may have changed them there (stand-ins stand for what only the remote side has).
            self.tensors.lost(name for name, tensor in resident.values() if not self.stands_in(tensor))
            if isinstance(exc, UsageProblem) or not isinstance(exc, Exception):  # bad options, an interrupt
                raise
            if isinstance(exc, RemoteGraphError):
                raise RemoteGraphError(f"{exc} (on {self.where()})") from None
            what = str(exc) if isinstance(exc, ModalMagicError) else f"{type(exc).__name__}: {exc}"
            raise RemoteGraphError(f"{plan.label} could not run on {self.where()}: {what}") from exc
        for position, value in reply.mutated:  # what the graph changed in place there changes here
            with torch.no_grad():
                args[position].copy_(value)
            if position in resident:
                self.tensors.held(*resident[position])
        outputs = list(reply.outputs)  # type: ignore[arg-type]
        for (position, name), standin in zip(keep, standins, strict=True):
            outputs[position] = self._kept[name] = standin
            self.tensors.held(name, standin)
        return tuple(outputs)

    def stands_in(self, value: Any) -> bool:
        """``value`` is a stand-in for a tensor kept there (a saved activation)."""
        name = existing_key(value) if isinstance(value, torch.Tensor) else None
        return name is not None and self._kept.get(name) is value

    def _call(self, plan: GraphPlan, args: Sequence[Any], resident: dict[int, tuple[str, torch.Tensor]],
              keep: tuple[tuple[int, str], ...], stats: CallStats) -> Reply:
        """At most two round trips: the second sends what the remote side said it lacks."""
        activations = tuple(None if position in resident else _bare(arg) for position, arg in enumerate(args))
        for _ in range(2):
            send = self.tensors.stale(resident.values())
            call = Call(graph=plan.key, blob=None if plan.key in self.graphs else plan.blob,
                        compile_with=self.compile_with, label=plan.label, args=activations,
                        resident=tuple((position, name) for position, (name, _) in resident.items()),
                        send=tuple((name, _bare(tensor), isinstance(tensor, torch.nn.Parameter))
                                   for name, tensor in send),
                        drop=self.tensors.dropped(), keep=keep)
            reply = self._round_trip(call, stats)
            stats.graph_sent |= call.blob is not None
            stats.tensors_sent += [name for name, _ in send]
            self.tensors.delivered(call.drop)
            for name, tensor in send:
                self.tensors.held(name, tensor)
            self.graphs.add(plan.key)
            if reply.outputs is not None:
                return reply
            if any(name in self._kept for name in reply.missing):
                raise RemoteGraphError(f"{plan.label}: the remote worker was replaced since the forward pass, and "
                                       "the activations it saved for this backward went with it; run the forward again")
            if reply.missing_graph:
                self.graphs.discard(plan.key)
            self.tensors.lost(reply.missing)
        raise RemoteGraphError(f"{plan.label}: the remote side lost what it was just sent (a worker restarting "
                               "under every call?)")

    def _round_trip(self, call: Call, stats: CallStats) -> Reply:
        def on_event(event: Event) -> None:
            if event["kind"] == "stage" and event["stage"] == "pack":
                stats.sent_bytes += event.get("bytes", 0)
            elif event["kind"] == "stage" and event["stage"] == "unpack":
                stats.received_bytes += event.get("bytes", 0)
            show_event(event)  # what the remote side prints (a compiler's warnings) shows as a cell's would

        namespace: dict[str, Any] = {"_mm_call": call}
        stats.round_trips += 1
        run_cell(_CELL, namespace, self.options, on_event=on_event)
        return namespace[_REPLY]


def _bare(value: Any) -> Any:
    """A tensor's data alone: no ``.grad`` to carry along, no autograd history to explain away."""
    return value.detach() if isinstance(value, torch.Tensor) else value
