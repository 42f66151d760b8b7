"""What runs in the Modal container: the executor class and the loop that serves one cell.

Imported in the container (our package is mounted there), so it needs only what
the image has: the standard library, Modal's client, and our runner.
"""

from __future__ import annotations

import ctypes
import os
import queue
import sys
import threading
import traceback
from typing import Any, Iterator

from .. import frames

__all__ = ["executor_class", "serve_one"]

_GRACE = 2.0        # seconds a cancelled cell gets to unwind before its container exits
_STUCK_EXIT = 75    # the container's exit code when a cancelled cell would not stop


def serve_one(runner: Any, data: bytes, call_id: str | None = None) -> Iterator[bytes]:
    """Run one encoded request on ``runner``, yielding encoded events as they happen.

    The first event names the Modal call (``call_id``): generator calls cannot
    be spawned, so this is how the notebook learns what to cancel.
    The cell runs in a thread so that its output can be yielded while it runs.
    When the notebook cancels the call, Modal raises ``InputCancellation`` here
    (in the main thread, from its SIGUSR1 handler): the cell gets a
    ``KeyboardInterrupt``, as a local cell would. A cell that does not unwind
    within ``_GRACE`` seconds (stuck in native code) takes the container down
    with it, so the next cell gets a clean one rather than a runner still busy.
    """
    yield frames.encode({"kind": "call", "id": call_id})
    meta, buffers = frames.decode(data)
    events: queue.Queue[bytes | None] = queue.Queue()

    def work() -> None:
        try:
            runner.run(meta, list(buffers), lambda m, b: events.put(frames.encode(m, b)))
        except KeyboardInterrupt:
            pass  # interrupted outside the cell itself: nobody is listening any more
        except Exception:  # noqa: BLE001 - our own failure, reported to the notebook
            events.put(frames.encode({"kind": "internal_error", "traceback": traceback.format_exc()}))
        finally:
            events.put(None)

    cell = threading.Thread(target=work, name="modal_magic-cell", daemon=True)
    cell.start()
    try:
        while (item := events.get()) is not None:
            yield item
    except BaseException:  # InputCancellation (a BaseException), or the generator closed
        _interrupt_thread(cell)
        raise


def _interrupt_thread(thread: threading.Thread) -> None:
    """Raise KeyboardInterrupt in ``thread``; exit the process if it does not end within ``_GRACE``."""
    if not thread.is_alive() or thread.ident is None:
        return
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(KeyboardInterrupt))
    thread.join(_GRACE)
    if thread.is_alive():
        print(f"modal_magic: the interrupted cell did not stop within {_GRACE:g} s; restarting the container",
              file=sys.__stderr__, flush=True)  # sys.stderr is still the cell's stream
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
        def run(self, data: bytes) -> Iterator[bytes]:
            from modal_magic.backends.modal_executor import serve_one

            yield from serve_one(self.runner, data, call_id=modal.current_function_call_id())

    return Executor
