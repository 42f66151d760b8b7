"""What runs in the Modal container: the executor class and the loop that serves one cell.

Imported in the container (our package is mounted there), so it needs only what
the image has: the standard library, Modal's client, and our own package.

The cell does not run in the container's own process: the container keeps the
local backend's worker process warm (the same one ``--backend local`` uses) and
hands it each cell. That is what makes stopping a cell work as it does on a
laptop: SIGINT reaches the cell's main thread even inside a blocking call
(``time.sleep``, a CUDA sync, a socket read), which an exception raised into a
thread cannot. A cell that will not stop, or crashes its process, costs the
worker (its state), never the container: Modal re-runs the input of a container
that dies, and a stopped cell must not run twice.

A cell is stopped *in band*, never by cancelling the Modal call: the notebook
puts a stop token in the session's ``modal.Queue`` (partition = the cell's
token) and keeps reading until the cell's last frame arrives. Cancelling a
generator call with output in flight gets the container killed ~30 s later
(modal-labs/modal-client#4125), so that stays the notebook's fallback. The
cell's ``--timeout`` is enforced here too, so the class can keep Modal's maximum
timeout and one warm container serves every cell of a GPU type.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Generator, Iterator
from typing import Any

from ...errors import ModalMagicError
from ...protocol import (
    CallFrame,
    Ending,
    Event,
    Frame,
    InputsLostFrame,
    InternalErrorFrame,
    InterruptedFrame,
    PadFrame,
    ReportRequest,
    Request,
    StuckFrame,
    WorkerFailedFrame,
    report_to_wire,
    request_from_wire,
)
from ...wire import frames, handles
from ...wire import payload as wire
from ..local import LocalBackend

__all__ = ["executor_class", "serve_one", "put", "start_worker", "gpus", "partition", "STOP", "RERUNS", "GRACE"]

STOP = "stop"       # what the notebook puts in the control queue to stop a cell
RERUNS = "reruns"   # the control queue's partition where a re-run names its cell (container → notebook)
GRACE = 20.0        # seconds a stopped cell gets to unwind before its worker is replaced (inside Modal's 30 s)
_RERUN_ANSWER = 60.0  # seconds a re-run waits for the notebook to say how many frames it has
_RERUN_MARGIN = 1000  # frames of a first run the notebook may not have read yet when it answers
_PAD = frames.encode(PadFrame(kind="pad"))
_POLL = 0.2         # seconds between checks of the stop flag and the deadline while a cell runs
_WATCH = 10.0       # seconds one long-poll of the control queue waits
CONTAINER = uuid.uuid4().hex[:12]  # this container process, so the notebook can tell a new one
_worker: LocalBackend | None = None
_stash: dict[tuple[str, int], bytes] = {}  # pieces of inputs, by (cell token, index)
_gpus: list[str] | None = None  # what ``gpus()`` found


def partition(token: str, what: str) -> str:
    """The control queue's partition for one cell's ``what``.

    ``stop`` and ``seen`` go from the notebook to the container (stop the cell;
    how many frames the notebook has), ``runs`` is the containers' own count of
    runs of the cell. A re-run asks its question in the app-wide ``RERUNS``.
    """
    return f"{token}.{what}"


def gpus() -> list[str]:
    """This container's GPUs as the NVIDIA driver names them, one per GPU; empty without a GPU (asked once).

    Modal's environment names no GPU (its variables name the task, image, region and cloud), and with a
    fallback list, or an ``H100`` that Modal may upgrade, only the container knows what it got. The
    driver's ``nvidia-smi`` is in every GPU container and answers without starting CUDA, which the
    container's own process never does (the cell's worker process does, if the cell uses the GPU).
    """
    global _gpus
    if _gpus is None:
        try:
            found = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                   text=True, timeout=10)
            _gpus = [line.strip() for line in found.stdout.splitlines() if line.strip()] if found.returncode == 0 \
                else []
        except (OSError, subprocess.SubprocessError):  # no driver tool: no GPU, as far as anyone here can say
            _gpus = []
    return _gpus


def start_worker() -> LocalBackend:
    """The container's worker process, started once (``@modal.enter``) and kept warm between cells.

    It gets the container's environment (CUDA library paths and the like) less
    Modal's own task credentials, which the user's code has no use for.
    """
    global _worker
    if _worker is None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
        environment[handles.PLACE] = "the Modal container"  # what a remote handle says it lives in
        _worker = LocalBackend(grace=GRACE, environment=environment)
    _worker.start()
    return _worker


def serve_one(head: bytes, buffers: list[Any], control: Any = None, call_id: str | None = None) -> Iterator[bytes]:
    """Run one request (an encoded head, its buffers as arrays) on the container's worker, yielding events.

    The first event names the Modal call and this container: generator calls
    cannot be spawned, so this is how the notebook learns what to cancel if all
    else fails. A stop token in ``control``, the deadline, or Modal cancelling the
    input (``InputCancellation`` here, in the main thread) interrupts the cell.
    """
    worker = start_worker()
    meta, _ = frames.decode(head)
    attempt = yield from _catch_up(control, meta.get("token"))  # first: a re-run's own frames must not be lost
    yield frames.encode(CallFrame(kind="call", id=call_id, container=CONTAINER, attempt=attempt, gpus=gpus()))
    if "_pieces" in meta:  # the inputs went ahead in pieces (``put``)
        pieces = _take_pieces(meta)
        if pieces is None:
            yield frames.encode(InputsLostFrame(kind="inputs_lost"))
            return
        buffers = pieces
        meta.pop("_pieces")
    inputs = wire.Payload.from_meta(meta.pop("inputs"), buffers)
    events: queue.Queue[bytes | None] = queue.Queue()
    stop = threading.Event()
    cell = threading.Thread(target=_run, args=(worker, request_from_wire(meta), inputs, events, stop), daemon=True,
                            name="modal_magic-cell")
    cell.start()
    if control is not None and meta.get("token"):
        threading.Thread(target=_watch, args=(control, meta["token"], stop, cell), daemon=True,
                         name="modal_magic-stop").start()
    deadline = None if meta.get("timeout") is None else time.monotonic() + meta["timeout"]
    try:
        while True:
            if deadline is not None and time.monotonic() > deadline:  # on every pass: a printing cell is
                stop.set()                                              # never quiet for a whole _POLL (N1)
            try:
                item = events.get(timeout=_POLL)
            except queue.Empty:
                continue
            if item is None:
                return
            yield item
    except BaseException:  # InputCancellation (a BaseException), or the generator closed
        stop.set()
        cell.join(GRACE + 5)
        raise


def put(token: str, index: int, piece: bytes) -> None:
    """Keep one piece of a coming cell's inputs (``frames.encode_pieces``), until its run call takes it."""
    for stale in [key for key in _stash if key[0] != token]:  # an earlier cell's, never run (interrupted)
        del _stash[stale]
    _stash[token, index] = piece


def _take_pieces(head: dict[str, Any]) -> list[Any] | None:
    """The buffers the pieces of ``head``'s cell make up, or None if some never reached this container."""
    pieces, index = frames.Pieces(head), 0
    while not pieces.complete:
        piece = _stash.pop((head["token"], index), None)
        if piece is None:
            return None
        pieces.add(frames.decode(piece)[1])
        index += 1
    return pieces.buffers


def _catch_up(control: Any, token: str | None) -> Generator[bytes, None, int]:
    """Which run of this input this is; on a re-run, first the frames the notebook already has.

    Modal re-runs the input of a container that crashed or was preempted, on a
    new container, and its client skips every generator item whose index it has
    seen: the re-run's first N frames, its result among them, would be lost. So
    a re-run asks the notebook how many frames it has (through the control
    queue), and yields that many empty ones, plus a margin for frames of the first
    run still on their way, before its own. A first run only counts itself.
    """
    if control is None or not token:
        return 1
    runs = control.len(partition=partition(token, "runs"))
    control.put(CONTAINER, partition=partition(token, "runs"))
    if runs:
        control.put(token, partition=RERUNS)
        seen = control.get(timeout=_RERUN_ANSWER, partition=partition(token, "seen"))
        for _ in range(seen + _RERUN_MARGIN):
            yield _PAD
    return runs + 1


def _run(worker: LocalBackend, request: Request, inputs: wire.Payload,
         events: queue.Queue[bytes | None], stop: threading.Event) -> None:
    """The request on the worker, every event and the result put on ``events``, then ``None``."""
    def forward(event: Event) -> None:
        if event["kind"] != "tick" and event.get("stage") not in ("start", "upload"):  # the notebook says those
            events.put(frames.encode(event))

    try:
        if isinstance(request, ReportRequest):  # answered as a result with no buffers, as a cell's is
            report = worker.resident_report()
            assert report is not None  # the container's worker is up (``start_worker``)
            frame: Frame = report_to_wire(report), []
        else:
            frame = worker.run(request, inputs, forward, stop=stop).to_wire()
        for piece in frames.encode_pieces(*frame):
            events.put(piece)
    except KeyboardInterrupt:  # stopped outside the cell, or (no worker left) not within the grace
        ending: Ending = InterruptedFrame(kind="interrupted") if worker.pid is not None else StuckFrame(kind="stuck")
        events.put(frames.encode(ending))
    except ModalMagicError as exc:  # the worker died under the cell (a crash, the OOM killer)
        events.put(frames.encode(WorkerFailedFrame(kind="worker_failed", error=type(exc).__name__, message=str(exc))))
    except Exception:  # noqa: BLE001 - our own failure, reported to the notebook
        events.put(frames.encode(InternalErrorFrame(kind="internal_error", traceback=traceback.format_exc())))
    finally:
        events.put(None)


def _watch(control: Any, token: str, stop: threading.Event, cell: threading.Thread) -> None:
    """Long-poll the control queue for this cell's stop token while the cell runs."""
    while cell.is_alive():
        try:
            if control.get(timeout=_WATCH, partition=partition(token, "stop")) == STOP:
                stop.set()
                return
        except queue.Empty:
            continue
        except Exception as exc:  # noqa: BLE001 - the queue is gone: Modal's own cancel still works
            print(f"modal_magic: cannot watch for a stop ({exc!r}); an interrupt will cancel the call",
                  file=sys.stderr, flush=True)
            return


def executor_class() -> type:
    """The class Modal runs in the container (defined in a function: ``serialized=True``)."""
    import modal

    class Executor:
        @modal.enter()
        def start(self) -> None:
            from modal_magic.backends.modal.container import start_worker

            start_worker()  # torch and IPython imported before the first cell arrives

        @modal.method()
        def put(self, token: str, index: int, piece: bytes) -> None:
            from modal_magic.backends.modal.container import put

            put(token, index, piece)

        @modal.method()
        def run(self, head: bytes, buffers: list, control: Any = None) -> Iterator[bytes]:
            from modal_magic.backends.modal.container import serve_one

            yield from serve_one(head, buffers, control, call_id=modal.current_function_call_id())

    return Executor
