"""What runs in the Modal container: the executor class and the loop that serves one cell.

Imported in the container (our package is mounted there), so it needs only what
the image has: the standard library, Modal's client, and our runner.

A cell is stopped *in band*, never by cancelling the Modal call: the notebook
puts a stop token in the session's ``modal.Queue`` (partition = the cell's
token) and keeps reading until the cell's last frame arrives. Cancelling a
generator call with output in flight gets the container killed ~30 s later
(modal-labs/modal-client#4125), so that stays the notebook's fallback for a
cell that will not stop. The cell's ``--timeout`` is enforced here too, so the
class can keep Modal's maximum timeout and one warm container serves every
cell of a GPU type.
"""

from __future__ import annotations

import ctypes
import os
import queue
import sys
import threading
import time
import traceback
import uuid
from typing import Any, Iterator

from .. import frames

__all__ = ["executor_class", "serve_one", "STOP", "GRACE"]

STOP = "stop"       # what the notebook puts in the control queue to stop a cell
GRACE = 20.0        # seconds a stopped cell gets to unwind: inside Modal's 30 s for a cancelled input
_STUCK_EXIT = 75    # the container's exit code when a stopped cell would not stop
_AWAIT_TERMINATION = 10.0  # seconds a stuck container waits for Modal to stop it before exiting itself
_POLL = 0.2         # seconds between checks of the stop flag and the deadline while a cell runs
_WATCH = 10.0       # seconds one long-poll of the control queue waits
CONTAINER = uuid.uuid4().hex[:12]  # this container process, so the notebook can tell a new one
_cell_thread: threading.Thread | None = None  # the last cell's thread (one cell at a time per container)


def serve_one(runner: Any, data: bytes, control: Any = None, call_id: str | None = None) -> Iterator[bytes]:
    """Run one encoded request on ``runner``, yielding encoded events as they happen.

    The first event names the Modal call and this container: generator calls
    cannot be spawned, so this is how the notebook learns what to cancel if all
    else fails. The cell runs in a thread so that its output can be yielded
    while it runs, and so that a stop (from ``control``) or the deadline can
    interrupt it with a ``KeyboardInterrupt``, as a local interrupt would.
    When Modal itself cancels the input (``InputCancellation`` here, in the
    main thread), the cell is interrupted the same way.
    """
    global _cell_thread
    _stop_leftover(_cell_thread)
    yield frames.encode({"kind": "call", "id": call_id, "container": CONTAINER})
    meta, buffers = frames.decode(bytearray(data))  # writable: numpy inputs must be writable, as locally
    del data
    events: queue.Queue[bytes | None] = queue.Queue()
    stop_asked = threading.Event()

    def work() -> None:
        try:
            runner.run(meta, list(buffers), lambda m, b: events.put(frames.encode(m, b)))
        except KeyboardInterrupt:  # stopped outside the cell itself (placing inputs)
            events.put(frames.encode({"kind": "interrupted"}))
        except Exception:  # noqa: BLE001 - our own failure, reported to the notebook
            events.put(frames.encode({"kind": "internal_error", "traceback": traceback.format_exc()}))
        finally:
            events.put(None)

    _cell_thread = cell = threading.Thread(target=work, name="modal_magic-cell", daemon=True)
    cell.start()
    if control is not None and meta.get("token"):
        threading.Thread(target=_watch, args=(control, meta["token"], stop_asked, cell), daemon=True,
                         name="modal_magic-stop").start()
    timeout = meta.get("timeout")
    deadline = None if timeout is None else time.monotonic() + timeout
    stopping_since: float | None = None
    try:
        while True:
            try:
                item = events.get(timeout=_POLL)
            except queue.Empty:
                item = b""
            if item is None:
                return
            if item:
                yield item
            now = time.monotonic()
            if stopping_since is None and (stop_asked.is_set() or (deadline is not None and now > deadline)):
                stopping_since = now
                _raise_in(cell, KeyboardInterrupt)
            elif stopping_since is not None and now - stopping_since > GRACE and cell.is_alive():
                # The notebook answers by cancelling the call with terminate_containers: Modal then
                # stops this container without re-running the input, as it would after a crash.
                yield frames.encode({"kind": "stuck", "grace": GRACE})
                time.sleep(_AWAIT_TERMINATION)
                _exit_stuck()
    except BaseException:  # InputCancellation (a BaseException), or the generator closed
        _raise_in(cell, KeyboardInterrupt)
        cell.join(GRACE)
        if cell.is_alive():
            _exit_stuck()
        raise


def _watch(control: Any, token: str, stop_asked: threading.Event, cell: threading.Thread) -> None:
    """Long-poll the control queue for this cell's stop token while the cell runs."""
    while cell.is_alive():
        try:
            if control.get(timeout=_WATCH, partition=token) == STOP:
                stop_asked.set()
                return
        except queue.Empty:
            continue
        except Exception as exc:  # noqa: BLE001 - the queue is gone: Modal's own cancel still works
            print(f"modal_magic: cannot watch for a stop ({exc!r}); an interrupt will cancel the call",
                  file=sys.__stderr__, flush=True)
            return


def _stop_leftover(thread: threading.Thread | None) -> None:
    """A previous cell's thread still running (cancelled mid-yield) must not overlap this cell."""
    if thread is not None and thread.is_alive():
        _raise_in(thread, KeyboardInterrupt)
        thread.join(GRACE)
        if thread.is_alive():
            _exit_stuck()


def _raise_in(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    if thread.is_alive() and thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type))


def _exit_stuck() -> None:
    print(f"modal_magic: the stopped cell did not unwind within {GRACE:g} s; this container exits",
          file=sys.__stderr__, flush=True)  # sys.stderr may still be the cell's stream
    os._exit(_STUCK_EXIT)


def executor_class() -> type:
    """The class Modal runs in the container (defined in a function: ``serialized=True``)."""
    import modal

    class Executor:
        @modal.enter()
        def start(self) -> None:
            from modal_magic.runner import Runner

            self.runner = Runner()

        @modal.method()
        def run(self, data: bytes, control: Any = None) -> Iterator[bytes]:
            from modal_magic.backends.modal_executor import serve_one

            yield from serve_one(self.runner, data, control, call_id=modal.current_function_call_id())

    return Executor
