"""The messages between the notebook and a worker, defined once.

Both sides import this module (it imports nothing from IPython, the notebook
side or any backend), so what a request, a result and an event hold is written
here and nowhere else:

- requests, notebook → worker: ``RunRequest`` (one cell), ``ReportRequest``
  (what the worker's resident store holds, for ``%modal_resident``);
- the answer to either is one ``result`` frame: a ``ResultFrame`` for a cell,
  a ``StoreReport`` for a report;
- events, worker or backend → the notebook's view, while a cell runs:
  ``StageEvent``, ``StreamEvent``, ``DisplayEvent``, ``ClearOutputEvent``,
  ``TickEvent``, ``NoteEvent``, a Modal call's ``BillEvent`` and the driver's closing ``DoneEvent``
  (``Event`` is any of them);
- the frames a cell ends with instead of a result (``Ending``: ``interrupted``,
  ``internal_error``, and from a Modal container ``worker_failed``, ``stuck``,
  ``inputs_lost``) and the transports' own (``ReadyFrame``, ``CallFrame``,
  ``PadFrame``; ``wire.frames`` has its own ``piece``).

Requests and results are dataclasses, turned into plain dicts only at the
frame boundary (``to_wire``/``from_wire``), so a frame carries the keys it
carried when the protocol was plain dicts (less the cell's ``Resources``: only
a backend reads them, so they are an argument of ``Backend.run``), and a bare
client's request, lacking some, still reads. Events stay dicts at runtime (``TypedDict``s): they are
forwarded as they come, often across a thread, and a view reads a handful of
keys from each. A transport adds its own keys to a request's dict (``inputs``:
the packed inputs' metadata; Modal's ``token`` and ``timeout``); ``from_wire``
ignores them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypedDict

__all__ = [
    "VALUE", "ERROR", "INPUTS", "RESIDENT", "SLOTS", "PLAIN", "Stage", "Frame", "Resources", "Element",
    "RunRequest", "ReportRequest", "Request", "request_from_wire", "ErrorInfo", "ResultFrame", "StoreReport",
    "StoreRow", "report_to_wire", "report_from_wire", "StageEvent", "StreamEvent", "DisplayEvent",
    "ClearOutputEvent", "TickEvent", "NoteEvent", "DoneEvent", "BillEvent", "Event", "OnEvent", "InterruptedFrame",
    "InternalErrorFrame", "WorkerFailedFrame", "StuckFrame", "InputsLostFrame", "Ending", "ReadyFrame", "CallFrame",
    "PadFrame",
]

# ------------------------------------------------------------------ the payload's slots
VALUE = "<value>"  # payload slot of the last expression's value (not a valid identifier)
ERROR = "<error>"  # payload slot of the exception the cell raised
INPUTS = "<inputs>"  # payload slot carrying the inputs back, so in-place changes reach the notebook
RESIDENT = "<resident>"  # payload slot carrying resident tensors the cell changed, named in it or not
SLOTS = (VALUE, ERROR, INPUTS, RESIDENT)
"""The result payload's entries that are not names the cell bound."""

PLAIN = "nocolor"
"""Tracebacks without ANSI colours; a name IPython 8 (case-insensitively) and IPython 9 both know."""

Stage = Literal["analyse", "pack", "start", "upload", "run", "download", "unpack"]
"""A cell's stages, in the order they normally come (a re-run or a re-send may repeat one)."""

Frame = tuple[dict[str, Any], list[Any]]
"""A frame as it travels (``wire.frames``): its meta, a plain dict with a ``kind``, and its buffers."""


# ------------------------------------------------------------------ requests
@dataclass(frozen=True)
class Resources:
    """What a cell asks of the machine it runs on; a backend applies what it can (the local worker: none)."""

    gpu: tuple[str, ...] = ()
    """GPU types in order of preference (normalised by ``backends.modal.plan.parse_gpu``); empty: no GPU."""
    cpu: float | None = None
    memory_mib: int | None = None
    pip: tuple[str, ...] = ()
    """Extra packages for the image."""
    idle: float | None = None
    """Seconds its container may wait idle for the next cell (a new container's window); None: the backend's."""
    prices: str | None = None
    """A price file over the backend's own table, for its cost estimates; None: the backend's table."""


@dataclass(frozen=True)
class Element:
    """``--map``: this copy's element, packed apart from the shared inputs and sent after their buffers."""

    payload: Mapping[str, Any]
    """The element's ``Payload.meta()``."""
    first_buffer: int
    """Where the element's buffers begin among the request's buffers (the shared inputs' come first)."""


@dataclass(frozen=True)
class RunRequest:
    """One cell for the worker to run; its inputs travel beside it, as the frame's buffers."""

    kind: ClassVar[str] = "run"
    code: str
    outputs: tuple[str, ...] | None = None
    """Only these names come back (``--out``); ``None``: every name the cell binds."""
    placeholders: tuple[str, ...] = ()
    """Names the cell deletes without reading: they must exist there for ``del`` to work."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables set for this cell only (``--env``)."""
    state: dict[str, Any] = field(default_factory=dict)
    """The notebook's process-wide state (``wire.process_state.capture``)."""
    execution_count: int | None = None
    """The cell's prompt number, for its tracebacks' ``Cell In[n]``."""
    colors: str = PLAIN
    """The notebook's traceback colour scheme."""
    resident: bool = False
    """Whether the worker's resident store takes part (``False``: a ``--fresh`` cell, a fan-out's copy)."""
    release: tuple[str, ...] = ()
    """Resident keys the notebook no longer holds: the store lets them go."""
    resync: bool = False
    """The notebook could not rebuild a result: the store must stop vouching for what it holds."""
    references: dict[str, str] = field(default_factory=dict)
    """The resident keys the inputs name, with the versions the notebook expects (``resident.Sender``)."""
    shared_disk: bool = False
    """Whether the notebook sees the worker's files (``Backend.shares_disk``): the results' memmaps and open files
    then go as those files (``wire.files``)."""
    element: Element | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.kind, "code": self.code, "outputs": None if self.outputs is None else list(self.outputs),
                "placeholders": list(self.placeholders), "env": dict(self.env), "state": dict(self.state),
                "execution_count": self.execution_count, "colors": self.colors, "resident": self.resident,
                "release": list(self.release), "resync": self.resync, "references": dict(self.references),
                "shared_disk": self.shared_disk,
                **({} if self.element is None else {"element": {"payload": self.element.payload,
                                                                "first_buffer": self.element.first_buffer}})}

    @classmethod
    def from_wire(cls, meta: Mapping[str, Any]) -> RunRequest:
        """The request a frame holds; keys a client left out take their defaults (an older or a bare client)."""
        element = meta.get("element")
        outputs = meta.get("outputs")
        return cls(code=meta["code"], outputs=None if outputs is None else tuple(outputs),
                   placeholders=tuple(meta.get("placeholders") or ()), env=dict(meta.get("env") or {}),
                   state=dict(meta.get("state") or {}), execution_count=meta.get("execution_count"),
                   colors=meta.get("colors") or PLAIN, resident=bool(meta.get("resident")),
                   release=tuple(meta.get("release") or ()), resync=bool(meta.get("resync")),
                   references=dict(meta.get("references") or {}), shared_disk=bool(meta.get("shared_disk")),
                   element=None if element is None else Element(element["payload"], element["first_buffer"]))


@dataclass(frozen=True)
class ReportRequest:
    """What the worker's resident store holds (``%modal_resident``); answered with a ``StoreReport``."""

    kind: ClassVar[str] = "report"

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.kind}


Request = RunRequest | ReportRequest


def request_from_wire(meta: Mapping[str, Any]) -> Request:
    """The request a frame holds (a frame without a kind is a cell, as every frame once was)."""
    if meta.get("kind") == ReportRequest.kind:
        return ReportRequest()
    return RunRequest.from_wire(meta)


# ------------------------------------------------------------------ answers
class ErrorInfo(TypedDict):
    """The cell's exception as the notebook shows it: IPython's formatted traceback beside type and message."""

    type: str
    message: str
    traceback: list[str]


@dataclass
class ResultFrame:
    """How a cell ended, with the buffers its packed outputs need.

    One of two shapes: the cell ran (``payload`` and the rest; ``interrupted`` when it was stopped part-way,
    ``error`` saying where, and the payload holding what it did until then); or it did not run because the
    resident store lacks inputs the request names (``missing``, ``empty`` when the store holds nothing: a new
    worker or container).
    """

    payload: Mapping[str, Any] | None = None
    """The outputs' ``Payload.meta()``: the names the cell bound, the inputs' updates and the ``SLOTS``."""
    buffers: list[Any] = field(default_factory=list)
    deleted: tuple[str, ...] = ()
    """Names the cell deleted."""
    error: ErrorInfo | None = None
    value_repr: str | None = None
    """The last expression's repr, when its value could not travel."""
    elapsed: float | None = None
    """Seconds the worker spent on the request."""
    state: dict[str, Any] = field(default_factory=dict)
    """The process-wide state the cell changed (``process_state.changed_since``)."""
    missing: tuple[str, ...] = ()
    empty: bool = False
    interrupted: bool = False
    gpu_peak: int | None = None
    """Bytes: the cell's peak of allocated GPU memory (``worker.gpu_memory``); None: CUDA was not in use."""

    def to_wire(self) -> Frame:
        """The frame: ``(meta, buffers)``, with only the fields this shape sets."""
        meta: dict[str, Any] = {"kind": "result"}
        if self.missing:
            meta.update(missing=list(self.missing), empty=self.empty)
        else:
            meta.update(payload=self.payload, deleted=list(self.deleted), error=self.error,
                        value_repr=self.value_repr, elapsed=self.elapsed, state=dict(self.state))
            if self.interrupted:
                meta.update(interrupted=True)
        if self.gpu_peak is not None:
            meta["gpu_peak"] = self.gpu_peak
        return meta, self.buffers

    @classmethod
    def from_wire(cls, meta: Mapping[str, Any], buffers: list[Any]) -> ResultFrame:
        return cls(payload=meta.get("payload"), buffers=buffers, deleted=tuple(meta.get("deleted") or ()),
                   error=meta.get("error"), value_repr=meta.get("value_repr"), elapsed=meta.get("elapsed"),
                   state=dict(meta.get("state") or {}), missing=tuple(meta.get("missing") or ()),
                   empty=bool(meta.get("empty")), interrupted=bool(meta.get("interrupted")),
                   gpu_peak=meta.get("gpu_peak"))

    @property
    def nbytes(self) -> int:
        """The bytes the results came as, as ``Payload.nbytes`` counts what was sent: the pickle stream (where
        anything numpy or torch does not send out of band lies: a file's text, a list's items) and the buffers."""
        stream = 0 if self.payload is None else len(self.payload.get("stream", b""))
        return stream + sum(memoryview(b).nbytes for b in self.buffers)


class StoreRow(TypedDict):
    """One resident tensor."""

    key: str
    type: str
    shape: list[int]
    dtype: str
    device: str
    bytes: int
    graph: str | None
    """The ``grad_fn``'s type, for a tensor with an autograd graph."""


class StoreReport(TypedDict):
    """What a worker's resident store holds (``worker.store.Store.report``), in a ``result`` frame's ``report``."""

    store: str
    rows: list[StoreRow]
    host_bytes: int
    gpu_bytes: int
    gpu_allocated: int | None
    rss: int | None


def report_to_wire(report: StoreReport) -> dict[str, Any]:
    """A report's ``result`` frame."""
    return {"kind": "result", "report": report}


def report_from_wire(meta: Mapping[str, Any]) -> StoreReport:
    """The report a ``result`` frame answering a ``ReportRequest`` holds."""
    report: StoreReport = meta["report"]
    return report


# ------------------------------------------------------------------ events
class _StageKind(TypedDict):
    kind: Literal["stage"]
    stage: Stage


class StageEvent(_StageKind, total=False):
    """The cell entered a stage, with what the stage can say."""

    note: str
    """What it waits for, or news (a re-run, a re-send): shown beside the stage."""
    where: str
    """Where it runs, in words ("local worker (pid 42)", "Modal (H100)")."""
    warm: bool | None
    """Starting: whether the worker or container was up already (``None``: unknown, many of them)."""
    bytes: int
    of: int
    """With ``bytes``: the total, so the stage can show a fraction."""
    variables: list[str]
    """Packing: the names sent."""


class StreamEvent(TypedDict):
    """Text the cell wrote."""

    kind: Literal["stream"]
    name: str
    """``stdout`` or ``stderr``."""
    text: str


class DisplayEvent(TypedDict):
    """Rich output, as IPython's display publisher got it."""

    kind: Literal["display"]
    data: dict[str, Any]
    metadata: dict[str, Any]
    transient: dict[str, Any]
    update: bool


class ClearOutputEvent(TypedDict):
    """``clear_output`` in the cell."""

    kind: Literal["clear_output"]
    wait: bool


class TickEvent(TypedDict):
    """Time goes by: a view redraws its clock; a backend that waits sends them."""

    kind: Literal["tick"]


class NoteEvent(TypedDict):
    """News within the stage: a fan-out's counts."""

    kind: Literal["note"]
    note: str


class _DoneKind(TypedDict):
    kind: Literal["done"]
    ok: bool


class DoneEvent(_DoneKind, total=False):
    """How the cell ended, the last event: what came back, or the error in one line."""

    error: str
    injected: dict[str, Any]
    deleted: list[str]
    elements: dict[str, float]
    """``--map``: seconds per element, or their spread."""


class _BillKind(TypedDict):
    kind: Literal["bill"]
    gpu: str
    """What the container had, in words ('H100 (NVIDIA H100 80GB HBM3)', 'CPU only')."""
    seconds: float
    """Seconds of the container this call held (a cold start's boot included)."""
    cost: float | None
    """Dollars for those seconds, an estimate; None: the GPU type has no price in the table."""
    total: float | None
    """The session's estimate so far: every call and every idle window up to now."""
    basis: str
    """What the figures are: an estimate, at which prices, from where and when."""
    idle: float
    """Seconds its container now waits idle, billed, before Modal stops it (its pool's scale-down window)."""


class BillEvent(_BillKind, total=False):
    """A Modal call ended: what its container was and what it cost, estimated (``backends/modal/ledger.py``)."""

    peak: int
    """Bytes: the cell's peak of allocated GPU memory (absent: CUDA was not in use)."""


Event = StageEvent | StreamEvent | DisplayEvent | ClearOutputEvent | TickEvent | NoteEvent | DoneEvent | BillEvent
OnEvent = Callable[[Event], None]
"""Takes each event as it comes."""


# ------------------------------------------------------------------ the other frames
class InterruptedFrame(TypedDict):
    """The worker was interrupted outside the cell (before it started, or as it ended): no result."""

    kind: Literal["interrupted"]


class InternalErrorFrame(TypedDict):
    """Our own failure on the remote side (a bug): its traceback."""

    kind: Literal["internal_error"]
    traceback: str


class WorkerFailedFrame(TypedDict):
    """A Modal container's worker died under the cell (a crash, the OOM killer)."""

    kind: Literal["worker_failed"]
    error: str
    message: str


class StuckFrame(TypedDict):
    """A Modal container's cell did not stop within the grace: its worker was replaced."""

    kind: Literal["stuck"]


class InputsLostFrame(TypedDict):
    """A Modal container took a cell whose inputs went, in pieces, to another container."""

    kind: Literal["inputs_lost"]


Ending = InterruptedFrame | InternalErrorFrame | WorkerFailedFrame | StuckFrame | InputsLostFrame
"""How a cell ends when no ``result`` comes."""


class ReadyFrame(TypedDict):
    """A new worker process is up (its first frame)."""

    kind: Literal["ready"]


class CallFrame(TypedDict):
    """A Modal container's first frame of a call: what to cancel if all else fails, and which run this is."""

    kind: Literal["call"]
    id: str | None
    container: str
    attempt: int
    gpus: list[str]
    """The container's GPUs as its driver names them (``nvidia-smi``), one per GPU; empty: none found."""


class PadFrame(TypedDict):
    """Fills the frame indices a Modal re-run would otherwise reuse (``container._catch_up``)."""

    kind: Literal["pad"]
