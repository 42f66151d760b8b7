"""The Modal backend: cells run in a GPU container, through Modal's own SDK.

One ephemeral app per kernel session, entered once and kept open so the
container stays warm from cell to cell (a per-cell ``app.run()`` is a cold
start every time). The app holds one generic executor, defined before the app
starts and varied per cell with ``with_options`` (GPU, CPU, memory, timeout).
Its generator method runs our ``Runner`` and yields every event as one encoded
frame, consumed here with ``remote_gen`` — not ``modal.enable_output()``,
which routes container logs into the wrong cell (``reference/modal_api.md`` §6).
Results travel as our own bytes and are unpacked by the driver (CUDA → CPU),
never by Modal's result unpickling.

A changed image spec (new ``--pip`` packages) needs a new app: running apps
cannot take new functions. A kernel interrupt cancels the call by its id (the
container's first event), which interrupts the cell there as a local one would.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import socket
import sys
import threading
import traceback
from typing import Any, Iterator
from urllib.parse import urlparse

from .. import frames, wire
from ..errors import BackendUnavailable, CellTimeout, InternalError, WorkerDied
from ..modal_plan import HOW_TO_CONFIGURE, ImageSpec
from .base import Backend, OnEvent, ResultFrame

__all__ = ["ModalBackend", "build_image", "executor_class", "serve_one"]

_PREFLIGHT_TIMEOUT = 3.0  # seconds: Modal's own client retries for about a minute before giving up
_DEFAULT_TIMEOUT = 3600   # seconds per cell when --timeout is not given
_SCALEDOWN = 1200         # seconds a warm container waits for the next cell
_GRACE = 2.0              # seconds a cancelled cell gets to unwind before its container exits
_STUCK_EXIT = 75          # the container's exit code when a cancelled cell would not stop


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
            from modal_magic.backends.modal import serve_one

            yield from serve_one(self.runner, data, call_id=modal.current_function_call_id())

    return Executor


def build_image(spec: ImageSpec) -> Any:
    """The ``modal.Image`` for ``spec``: same spec, same layers, so nothing rebuilds."""
    import modal

    image = modal.Image.debian_slim(python_version=spec.python)
    image = (image.uv_pip_install(spec.torch, index_url=spec.torch_index_url) if spec.torch_index_url
             else image.uv_pip_install(spec.torch))
    image = image.uv_pip_install(*spec.pinned, *spec.extra)
    image = image.run_commands(spec.import_check())
    return image.add_local_python_source("modal_magic")  # last: mounted at start, not built


def _preflight(server_url: str) -> None:
    """Fail in seconds, in words, when Modal's server cannot be reached."""
    url = urlparse(server_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=_PREFLIGHT_TIMEOUT):
            pass
    except OSError as exc:
        raise BackendUnavailable(
            f"cannot reach Modal at {url.hostname}:{port} ({exc.strerror or exc}). Check the network "
            "connection, or run on this machine with --backend local.") from None


class ModalBackend(Backend):
    name = "modal"

    def __init__(self) -> None:
        self._stack: contextlib.ExitStack | None = None
        self._executor: Any = None
        self._spec: ImageSpec | None = None

    def _ensure_app(self, spec: ImageSpec) -> Any:
        if self._executor is not None and spec == self._spec:
            return self._executor
        self.close()
        import modal
        from modal.config import config

        _preflight(config.get("server_url") or "https://api.modal.com")
        app = modal.App("modal-magic")
        executor = app.cls(serialized=True, image=build_image(spec), timeout=_DEFAULT_TIMEOUT,
                           scaledown_window=_SCALEDOWN, max_containers=1)(executor_class())
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(app.run())
        except modal.exception.AuthError as exc:
            raise BackendUnavailable(f"Modal did not accept the credentials ({exc}); {HOW_TO_CONFIGURE}.") from None
        except modal.exception.ConnectionError:
            raise BackendUnavailable("cannot reach Modal's server. Check the network connection, or run on "
                                     "this machine with --backend local.") from None
        except modal.exception.Error as exc:
            raise BackendUnavailable(f"Modal could not start the app: {exc}") from None
        self._stack, self._executor, self._spec = stack, executor, spec
        return executor

    def run(self, request: dict[str, Any], inputs: wire.Payload, on_event: OnEvent,
            *, timeout: float | None = None) -> ResultFrame:
        import modal

        resources = request.get("resources", {})
        spec = ImageSpec.for_this_kernel(tuple(resources.get("pip", ())))
        on_event({"kind": "stage", "stage": "start", "where": "Modal", "warm": spec == self._spec})
        executor = self._ensure_app(spec)
        options = {key: value for key, value in {
            "gpu": list(resources.get("gpu", ())) or None, "cpu": resources.get("cpu"),
            "memory": resources.get("memory"), "timeout": int(timeout) if timeout else None,
        }.items() if value is not None}
        instance = (executor.with_options(**options) if options else executor)()
        data = frames.encode({**request, "inputs": inputs.meta()}, inputs.buffers)
        on_event({"kind": "stage", "stage": "upload", "bytes": len(data), "where": f"Modal ({options.get('gpu') or 'CPU'})"})
        call_id = None
        try:
            for chunk in instance.run.remote_gen(data):
                meta, buffers = frames.decode(chunk)
                kind = meta["kind"]
                if kind == "call":
                    call_id = meta["id"]
                elif kind == "result":
                    return meta, buffers
                elif kind == "internal_error":
                    raise InternalError("modal_magic failed inside the container (a bug; please report it):\n"
                                        + meta["traceback"])
                else:
                    on_event(meta)
        except KeyboardInterrupt:
            self._cancel(call_id)
            raise
        except modal.exception.FunctionTimeoutError:
            raise CellTimeout(f"the cell ran longer than its timeout of {timeout or _DEFAULT_TIMEOUT:g} s and was "
                              "stopped. Raise it with --timeout SECONDS.") from None
        except modal.exception.ConnectionError:
            raise BackendUnavailable("lost the connection to Modal while the cell ran; "
                                     "the notebook's variables are unchanged.") from None
        except modal.exception.Error as exc:
            raise WorkerDied(f"the Modal container failed: {exc}. The notebook's variables are unchanged; "
                             "the next cell starts a fresh container.") from None
        raise WorkerDied("the Modal container ended without finishing the cell (out of memory, or preempted). "
                         "The notebook's variables are unchanged; the next cell starts a fresh container.")

    def _cancel(self, call_id: str | None) -> None:
        """Stop the interrupted call remotely; the container stays warm when the cell unwinds.

        Before the container has started the cell there is no call id to cancel
        (the input may still be queued for a GPU): stopping the app withdraws it.
        """
        import modal

        if call_id is not None:
            try:
                modal.FunctionCall.from_id(call_id).cancel()
                return
            except (modal.exception.Error, OSError):
                pass  # cannot say it: stopping the app stops the call too
        self.close()

    def close(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._executor, self._spec = self._stack, None, None, None
            with contextlib.suppress(Exception):  # closing an app whose server is gone must not raise
                stack.close()

