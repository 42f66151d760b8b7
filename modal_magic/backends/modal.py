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

A changed image spec (new ``--pip`` packages) or GPU fallback list needs a
new app: running apps cannot take new functions, and ``with_options`` takes
one GPU type, not a list. A kernel interrupt cancels the call by its id (the
container's first event), which interrupts the cell there as a local one
would. What runs in the container is in ``modal_executor.py``.
"""

from __future__ import annotations

import atexit
import contextlib
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from .. import frames, wire
from ..errors import BackendUnavailable, CellTimeout, InternalError, ModalMagicError, UsageProblem, WorkerDied
from ..modal_plan import HOW_TO_CONFIGURE, ImageSpec
from .base import Backend, OnEvent, ResultFrame
from .modal_executor import executor_class

__all__ = ["ModalBackend", "AppShape", "build_image", "explain"]

_UNCHANGED = "The notebook's variables are unchanged"
_OFFLINE = f". Check the network connection, or use --backend local. {_UNCHANGED}."
_PREFLIGHT_TIMEOUT = 3.0  # seconds: Modal's own client retries for about a minute before giving up
_DEFAULT_TIMEOUT = 3600   # seconds per cell when --timeout is not given
_SCALEDOWN = 1200         # seconds a warm container waits for the next cell


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
        raise BackendUnavailable(f"cannot reach Modal at {url.hostname}:{port} ({exc.strerror or exc}){_OFFLINE}") from None


def explain(exc: BaseException, *, starting: bool = False, timeout: float = _DEFAULT_TIMEOUT) -> ModalMagicError:
    """One sentence for a failure inside Modal's SDK: whose problem it is, and what to do.

    Told apart by Modal's exception types (its messages are not a stable interface);
    anything else Modal raises — its client also raises plain ``Exception`` — still
    becomes one sentence rather than a traceback through Modal's internals.
    """
    import modal

    errors = modal.exception
    if isinstance(exc, errors.AuthError):
        return BackendUnavailable(f"Modal did not accept the credentials ({exc}); {HOW_TO_CONFIGURE}.")
    if isinstance(exc, errors.ConnectionError):
        return BackendUnavailable(("cannot reach Modal's server" if starting else "lost the connection to Modal")
                                  + _OFFLINE)
    if isinstance(exc, errors.ImageBuildError):
        return BackendUnavailable(f"the container image failed to build: {_build_failure(exc.image_id)}. "
                                  f"Check the --pip packages and their versions; the whole log: "
                                  f"`modal image logs {exc.image_id}`. {_UNCHANGED}.")
    if isinstance(exc, errors.FunctionTimeoutError):
        return CellTimeout(f"the cell ran longer than its timeout of {timeout:g} s and was stopped. "
                           f"Raise it with --timeout SECONDS. {_UNCHANGED}.")
    if isinstance(exc, errors.InternalFailure):
        return WorkerDied(f"the Modal container stopped before the cell finished ({exc}): usually out of memory "
                          "(try --memory MiB, or a smaller batch), or the machine was preempted. "
                          f"{_UNCHANGED}; the next cell starts a fresh container.")
    if isinstance(exc, (errors.ResourceExhaustedError, errors.PermissionDeniedError)):
        return BackendUnavailable(f"Modal cannot run this cell as asked: {exc}. Try another --gpu type, or an "
                                  f"ordered fallback such as --gpu H100,A100-80GB. {_UNCHANGED}.")
    if isinstance(exc, errors.InvalidError):
        return UsageProblem(f"Modal refused the request: {exc}")
    if starting:
        return BackendUnavailable(f"Modal could not start the app: {exc}. {_UNCHANGED}.")
    return WorkerDied(f"the Modal call failed: {exc}. {_UNCHANGED}; the next cell starts a fresh container.")


def _build_failure(image_id: str) -> str:
    """The line of the build log that says what failed (our import check names the package)."""
    import modal

    try:  # what `modal image logs IMAGE_ID` shows
        lines = [line for entry in modal.Image.from_id(image_id).logs.fetch() for line in entry.message.splitlines()]
    except Exception:  # noqa: BLE001 - the log is a nicety; the image id still lets the user look
        return "its log could not be fetched"
    ours = [line.strip() for line in lines if line.startswith("modal_magic: ")]
    if ours:
        return ours[-1].removeprefix("modal_magic: ")
    return "; ".join(line.strip() for line in lines[-3:] if line.strip()) or "the log is empty"


@dataclass(frozen=True)
class AppShape:
    """What is fixed when the app starts: the image, and a GPU fallback list.

    Everything else varies per cell with ``with_options``, which takes one GPU
    type, not a list: an ordered fallback (``--gpu H100,A100``) must be given
    when the class is defined, so a different list needs a new app.
    """

    image: ImageSpec
    gpu_fallbacks: tuple[str, ...] | None = None


class ModalBackend(Backend):
    name = "modal"

    def __init__(self) -> None:
        self._stack: contextlib.ExitStack | None = None
        self._executor: Any = None
        self._shape: AppShape | None = None
        self._closes_at_exit = False

    def _ensure_app(self, shape: AppShape) -> Any:
        if self._executor is not None and shape == self._shape:
            return self._executor
        self.close()
        import modal
        from modal.config import config

        _preflight(config.get("server_url") or "https://api.modal.com")
        app = modal.App("modal-magic")
        gpu = {"gpu": list(shape.gpu_fallbacks)} if shape.gpu_fallbacks else {}
        executor = app.cls(serialized=True, image=build_image(shape.image), timeout=_DEFAULT_TIMEOUT,
                           scaledown_window=_SCALEDOWN, max_containers=1, **gpu)(executor_class())
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(app.run())
        except Exception as exc:  # noqa: BLE001 - every failure of Modal's becomes one sentence
            raise explain(exc, starting=True) from None
        self._stack, self._executor, self._shape = stack, executor, shape
        if not self._closes_at_exit:
            # After Modal's own exit handlers (they run last-in first-out), so the app is closed while
            # Modal's client still works: the server stops the container now, not after missed heartbeats.
            atexit.register(self.close)
            self._closes_at_exit = True
        return executor

    def run(self, request: dict[str, Any], inputs: wire.Payload, on_event: OnEvent,
            *, timeout: float | None = None) -> ResultFrame:
        resources = request.get("resources", {})
        gpus = tuple(resources.get("gpu", ()))
        shape = AppShape(ImageSpec.for_this_kernel(tuple(resources.get("pip", ()))),
                         gpus if len(gpus) > 1 else None)
        on_event({"kind": "stage", "stage": "start", "where": "Modal", "warm": shape == self._shape})
        executor = self._ensure_app(shape)
        options = {key: value for key, value in {
            "gpu": gpus[0] if len(gpus) == 1 else None, "cpu": resources.get("cpu"),
            "memory": resources.get("memory"), "timeout": int(timeout) if timeout else None,
        }.items() if value is not None}
        data = frames.encode({**request, "inputs": inputs.meta()}, inputs.buffers)
        on_event({"kind": "stage", "stage": "upload", "bytes": len(data), "where": f"Modal ({', '.join(gpus) or 'CPU'})"})
        call_id = None
        try:
            instance = (executor.with_options(**options) if options else executor)()
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
        except ModalMagicError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure of Modal's becomes one sentence
            raise explain(exc, timeout=timeout or _DEFAULT_TIMEOUT) from None
        raise WorkerDied("the Modal container ended without finishing the cell (out of memory, or preempted). "
                         f"{_UNCHANGED}; the next cell starts a fresh container.")

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
            stack, self._stack, self._executor, self._shape = self._stack, None, None, None
            with contextlib.suppress(Exception):  # closing an app whose server is gone must not raise
                stack.close()

