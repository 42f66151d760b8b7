"""The Modal backend: cells run in a GPU container, through Modal's own SDK.

One ephemeral app per kernel session, entered once and kept open so the
container stays warm from cell to cell (a per-cell ``app.run()`` is a cold
start every time). The app holds one generic executor, defined before the app
starts; its generator method runs our ``Runner`` and yields every event as one
encoded frame, consumed with ``remote_gen`` on a thread of its own — not
``modal.enable_output()``, which routes container logs into the wrong cell.
Results travel as our own bytes and are unpacked by the driver (CUDA → CPU).

What starts a new container is kept to what needs another machine. A
``with_options`` variant is its own container pool (a cold start, and the old
container idles, billed, for its scale-down window), so cells vary only the GPU
type per call: the cell's ``--timeout`` is enforced in the container (the class
has Modal's maximum), and ``--cpu``/``--memory`` reuse the GPU type's pool when
it already has as much. A changed image (other ``--pip`` packages) or GPU
fallback list needs a new app: a running app takes no new functions, and
``with_options`` takes one GPU type, not a list.

An interrupt stops the cell in band (a stop token in the session's
``modal.Queue``) and waits for the cell's last frame, so the container stays
warm; cancelling the call is the fallback for a cell that will not stop. Any
failure of Modal's drops the app, so a stopped app (laptop sleep, network loss)
is never reused. A server that dies or freezes mid-cell is noticed in seconds
(``liveness``: Modal's client would wait for minutes, or for ever), and no
call to it can hold the notebook: the app is dropped without waiting for the
server. What runs in the container is in ``container.py``.
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy

from ...errors import CellTimeout, InternalError, ModalMagicError, UsageProblem, WorkerDied
from ...notebook.view.progress import format_bytes
from ...protocol import (
    BillEvent,
    Event,
    Frame,
    OnEvent,
    ReportRequest,
    Resources,
    ResultFrame,
    RunRequest,
    StageEvent,
    StoreReport,
    TickEvent,
    report_from_wire,
)
from ...wire import frames
from ...wire import payload as wire
from ..base import Availability, Backend, Description
from . import ledger, liveness
from .container import GRACE, RERUNS, STOP, executor_class, partition
from .cost import Machine
from .errors import UNCHANGED, answers, explain, greet, lost_connection, preflight
from .liveness import NoAnswer, Watch, bounded
from .plan import HOW_TO_CONFIGURE, IDLE, MAP_IDLE, ImageSpec, modal_credentials

__all__ = ["ModalBackend", "AppShape", "build_image", "MAX_TIMEOUT"]

MAX_TIMEOUT = 86_400       # seconds: Modal's longest function timeout; a cell's --timeout is enforced inside it
_DRAIN = GRACE + 10.0      # seconds an interrupted cell's last frame may take before the call is cancelled
_SLICE = 0.2               # seconds between progress ticks while waiting for a frame
_INLINE = 32 << 20         # bytes of inputs sent within the run call; more go ahead in pieces
_RERUN_POLL = 10.0         # seconds one long poll for re-runs waits
_FAN_OUT_CALLS = 100       # calls a --map keeps in flight when --max-parallel does not say (a thread each here)
_SCALE_OUT_CONTAINERS = 1000  # the fan-out pool's max_containers: fixed, so a map re-run soon after finds it warm
_CLOSING = "closing"       # wakes the re-run answerer when the app closes


def build_image(spec: ImageSpec) -> Any:
    """The ``modal.Image`` for ``spec``: same spec, same layers, so nothing rebuilds.

    Each ``run_commands`` element is one Dockerfile line (``ImageSpec.import_check``
    is one line); our package is mounted last, at container start, so it never
    changes the image.
    """
    import modal

    image = modal.Image.debian_slim(python_version=spec.python)
    image = image.uv_pip_install(*spec.torch_packages(), index_url=spec.torch_index_url)
    image = image.uv_pip_install(*spec.extra_packages())
    image = image.run_commands(spec.import_check())
    return image.add_local_python_source("modal_magic")


@dataclass(frozen=True)
class AppShape:
    """What is fixed when the app starts: the image, and a GPU fallback list."""

    image: ImageSpec
    gpu_fallbacks: tuple[str, ...] | None = None


@dataclass
class _Pool:
    """The ``with_options`` variant one GPU type's cells use: its own containers, warm between cells."""

    cpu: float | None = None
    memory: int | None = None
    max_containers: int | None = None
    """Set for a fan-out's pool (its own containers, as many as Modal gives); the class's 1 otherwise."""
    window: int = IDLE
    """Seconds its containers wait idle before Modal stops them (``scaledown_window``)."""
    last_used: float = field(default=-float("inf"))

    def covers(self, cpu: float | None, memory: int | None) -> bool:
        return (cpu is None or (self.cpu or 0) >= cpu) and (memory is None or (self.memory or 0) >= memory)

    @classmethod
    def grown(cls, previous: _Pool | None, cpu: float | None, memory: int | None,
              max_containers: int | None, window: int) -> _Pool:
        """A pool with what the cell asks for and at least what ``previous`` had, so pools never flip-flop."""
        if previous is None:
            return cls(cpu, memory, max_containers, window)
        return cls(max(cpu or 0, previous.cpu or 0) or None, max(memory or 0, previous.memory or 0) or None,
                   max_containers, window)

    def options(self, gpu: str | None, class_window: int | None) -> dict[str, Any]:
        """``with_options`` for this pool: none at all for a CPU container with defaults (the base class)."""
        window = None if self.window == class_window else self.window
        return {key: value for key, value in (("gpu", gpu), ("cpu", self.cpu), ("memory", self.memory),
                                              ("max_containers", self.max_containers),
                                              ("scaledown_window", window)) if value is not None}

    @property
    def warm(self) -> bool:
        """Its container is probably still up: used within the scale-down window, less a margin for the clocks
        (Modal promises no more)."""
        return time.monotonic() - self.last_used < self.window - min(60.0, self.window / 5)


class ModalBackend(Backend):
    name = "modal"
    hashes_buffers = True  # a home uplink: ~90 s per GiB
    summary = "a GPU container"
    runs_cells = "on Modal"
    auto_order = 0  # where credentials are found, auto runs cells on GPUs
    auto_help = "Modal when configured"
    held = "the Modal app (and its warm container)"

    @classmethod
    def availability(cls) -> Availability:
        """Available where Modal's client would find credentials (``plan.modal_credentials``: no network)."""
        found = modal_credentials()
        if found is None:
            return Availability(
                False, f"asked for; no Modal credentials were found, and running it needs them: {HOW_TO_CONFIGURE}",
                auto=f"no Modal credentials found; to run on GPUs, {HOW_TO_CONFIGURE}",
                refusal=f"--backend modal needs Modal credentials, and none were found: {HOW_TO_CONFIGURE}.")
        return Availability(True, f"credentials: {found}",
                            auto=f"Modal credentials found ({found}); --backend local runs cells on this machine")

    @classmethod
    def describe(cls, *, gpu: Sequence[str] = (), lanes: int = 1) -> Description:
        return Description(place=f"Modal ({' or '.join(gpu) or 'a CPU container'})", pool="Modal",
                           lanes=f"up to {lanes} Modal calls at once", map_plan="as many containers as Modal gives",
                           no_timeout=f"none of ours; Modal's maximum, {MAX_TIMEOUT // 3600} h")

    @classmethod
    def image(cls, pip: Sequence[str]) -> list[str]:
        return ImageSpec.for_this_kernel(tuple(pip)).describe()

    def __init__(self) -> None:
        self._last = Resources()
        """What the last cell asked for: where ``resident_report`` asks (that GPU type's container)."""
        self._stack: contextlib.ExitStack | None = None
        self._executor: Any = None
        self._control: Any = None            # the session's modal.Queue: stop tokens, one partition per cell
        self._watch: Watch | None = None     # whether the app's server answers, while cells run
        self._shape: AppShape | None = None
        self._pools: dict[tuple[str | None, bool], _Pool] = {}  # by GPU type, and whether a fan-out's
        self._lock = threading.Lock()  # a fan-out's calls share the app: one of them starts it
        self._streams: dict[str, _Stream] = {}  # the cells running now, by token (for a re-run's question)
        self._answering: threading.Thread | None = None
        self._closes_at_exit = False
        self._class_window: int | None = None  # the class's scaledown_window: the session's idle as the app started
        self._leaving: list[threading.Event] = []  # goodbyes of dropped apps, not done yet (``close``)

    @property
    def running(self) -> bool:
        return self._executor is not None

    # ------------------------------------------------------------------ a cell
    def run(self, request: RunRequest, inputs: wire.Payload, on_event: OnEvent, *, resources: Resources = Resources(),
            timeout: float | None = None, stop: threading.Event | None = None) -> ResultFrame:
        self._last = resources
        return ResultFrame.from_wire(*self._call(request.to_wire(), inputs, on_event, resources, timeout, stop,
                                                 fan_out=False))

    def resident_report(self) -> StoreReport | None:
        """Asked of the container of the last cell's GPU type (another type's container has a store of its own).

        Only while that container is reckoned up (its last cell within its idle window): asking a container that
        has scaled down would start a GPU container, billed, to report that it holds nothing (review N12).
        """
        if not self.running:
            return None
        gpus = self._last.gpu
        pool = self._pools.get((gpus[0] if len(gpus) == 1 else None, False))
        if pool is None or not pool.warm:
            return None
        meta, _ = self._call(ReportRequest().to_wire(), wire.pack({}), lambda event: None, self._last, None, None,
                             fan_out=False)
        return report_from_wire(meta)

    def lanes(self, wanted: int) -> list[Backend]:
        """One lane per call a fan-out keeps in flight, on the fan-out's own pool: Modal spreads the calls over
        its containers. A single call is an ordinary cell."""
        count = max(1, min(wanted, _FAN_OUT_CALLS))
        return [self] if count == 1 else [_FanOutLane(self)] * count

    def _call(self, request: dict[str, Any], inputs: wire.Payload, on_event: OnEvent, resources: Resources,
              timeout: float | None, stop: threading.Event | None, *, fan_out: bool) -> Frame:
        """Run one request (as it goes on the wire); its ``result`` frame. A stopped app is replaced once.

        An interrupt leaves as it is, wherever in Modal's client it landed: the driver shows it as one line
        saying where (``notebook/interrupts.py``), with our sentence when it carries one."""
        try:
            return self._run(request, inputs, on_event, resources, timeout, stop, fan_out=fan_out,
                             first_try=True)
        except _AppGone:  # the cell never reached a container, so running it now runs it once
            on_event(StageEvent(kind="stage", stage="start", warm=False, note="Modal had stopped the app "
                                "(a laptop sleep, a lost network): starting a fresh one"))
            return self._run(request, inputs, on_event, resources, timeout, stop, fan_out=fan_out,
                             first_try=False)

    def _run(self, request: dict[str, Any], inputs: wire.Payload, on_event: OnEvent, resources: Resources,
             timeout: float | None, stop: threading.Event | None, *, fan_out: bool, first_try: bool) -> Frame:
        gpus = resources.gpu
        shape = AppShape(ImageSpec.for_this_kernel(resources.pip), gpus if len(gpus) > 1 else None)
        gpu = gpus[0] if len(gpus) == 1 else None
        cpu, memory = resources.cpu, resources.memory_mib
        idle = int(resources.idle or IDLE)
        window = MAP_IDLE if fan_out else idle
        if fan_out and inputs.nbytes > _INLINE:
            raise UsageProblem(f"--map on Modal sends the inputs with each call, and they come to "
                               f"{format_bytes(inputs.nbytes)}, over {format_bytes(_INLINE)}; load the big data "
                               "inside the cell, or run the elements one cell at a time.")
        where = f"Modal ({' or '.join(gpus) or 'CPU'})"
        with self._lock:
            app_warm = self._executor is not None and shape == self._shape
            pool = self._pools.get((gpu, fan_out)) if app_warm else None
            # A new idle window applies to the next container started: a warm one keeps the window it has.
            reuse = pool is not None and pool.covers(cpu, memory) and (pool.window == window or pool.warm)
            if self._executor is None:
                note = "starting the app (the first build of an image takes minutes)"
            elif not app_warm:
                note = "a new app, for other --pip packages or GPU fallbacks"
            else:
                note = "" if pool is not None and reuse and pool.warm else "a new container"  # the view: cold or warm
            warm = pool is not None and reuse and pool.warm
            on_event(StageEvent(kind="stage", stage="start", where=where, warm=warm, note=note))
            executor = self._ensure_app(shape, idle)
            if pool is None or not reuse:
                pool = self._pools[gpu, fan_out] = _Pool.grown(pool, cpu, memory,
                                                               _SCALE_OUT_CONTAINERS if fan_out else None, window)
            app = self._stack
            class_window = self._class_window
        token = secrets.token_hex(8)
        request = {**request, "inputs": inputs.meta(), "token": token, "timeout": timeout}
        # Until the container has the cell, the cell waits for one (a GPU queue, a container booting): that is
        # starting, not uploading, whose bytes (when they go ahead in pieces) are told by their own events.
        on_event(StageEvent(kind="stage", stage="start", where=where,
                            note=f"waiting for a container ({' or '.join(gpus) or 'CPU'})"))
        stream = _Stream.nothing_yet()
        account = ledger.session()
        account.use_prices(resources.prices)
        call = account.begin((gpu, fan_out), "--map" if fan_out else "single-cell",
                             Machine.asked(gpu or (gpus[0] if gpus else None), cpu, memory), pool.window)
        try:
            options = pool.options(gpu, class_window)
            instance = (executor.with_options(**options) if options else executor)()
            head, arrays = _send_inputs(instance, request, inputs, on_event)
            stream = self._streams[token] = _Stream(lambda: instance.run.remote_gen(head, arrays, self._control))
            try:
                result = self._follow(stream, token, on_event, timeout, stop)
                stream.gpu_peak = result[0].get("gpu_peak")
            finally:
                del self._streams[token]
        except _ServerSilent as silent:  # do not wait for a server that does not answer
            self._drop(app, wait=0)
            raise silent.error() from None
        except (ModalMagicError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - every failure of Modal's becomes one sentence
            self._drop(app, wait=liveness.ANSWER)  # a stopped app (laptop sleep, lost network) must not serve again
            if first_try and stream.call_id is None and _means_app_gone(exc):
                raise _AppGone from None
            import modal

            if not isinstance(exc, modal.exception.Error) and not answers():  # not Modal's word: is it still there?
                raise lost_connection(f"its server stopped answering: {str(exc).strip() or type(exc).__name__}") \
                    from None
            raise explain(exc) from None
        finally:
            _bill(account, call, stream, on_event)
        pool.last_used = time.monotonic()
        return result

    def _drop(self, app: contextlib.ExitStack | None, *, wait: float) -> None:
        """Close ``app`` unless a fan-out's other call has started a fresh one already, waiting at most ``wait``."""
        with self._lock:
            if self._stack is app:
                self.close(wait=wait)

    def _follow(self, stream: _Stream, token: str, on_event: OnEvent, timeout: float | None,
                stop: threading.Event | None = None) -> Frame:
        """Read the cell's frames to its last one, forwarding events.

        An interrupt stops the cell in band and keeps reading, so the last frame
        still says where the cell stopped and the container stays warm. Before
        the container has the cell (queued for a GPU) there is nothing to stop:
        closing the app withdraws the input. No last frame within ``_DRAIN``, or
        a second interrupt, cancels the call (Modal then stops its container).
        Setting ``stop`` (another thread's way to interrupt) counts as the first interrupt.
        Nothing from the server for ``liveness.NO_ANSWER`` s, or no answer to
        the stop within ``liveness.ANSWER`` s, raises ``_ServerSilent``: the cell is given up.
        """
        call_id, stopping, deadline = None, False, None
        result: frames.Pieces | None = None
        control, watch = self._control, self._watch
        assert watch is not None  # the app is up (``_ensure_app``)
        if len(self._streams) == 1:  # the first cell running: the time since the last one is no silence
            watch.heard()

        def check_stop() -> None:
            if stop is not None and stop.is_set() and not stopping:
                raise KeyboardInterrupt

        def wait() -> None:
            check_stop()
            if watch.lost:
                raise _ServerSilent(watch.silence)
            on_event(TickEvent(kind="tick"))

        while True:
            try:
                for meta, buffers in stream.frames(deadline=deadline, on_wait=wait):
                    watch.heard()
                    kind = meta["kind"]
                    if kind != "call":  # that one first: once the container has the cell, it stops in band
                        check_stop()
                    if kind == "call":
                        call_id = stream.call_id = meta["id"]
                        stream.gpus = list(meta.get("gpus") or [])
                        if meta.get("attempt", 1) > 1:
                            on_event(StageEvent(kind="stage", stage="run", note="the container was restarted "
                                                "(preempted or crashed): the cell runs again from the start"))
                    elif kind == "result":  # its buffers follow in pieces
                        result = frames.Pieces(meta)
                    elif kind == "piece" and result is not None:
                        result.add(buffers)
                        on_event(StageEvent(kind="stage", stage="download", bytes=result.received, of=result.total))
                    elif kind in _LAST_FRAMES:
                        return _ending(meta, buffers, stopped=stopping, timeout=timeout)
                    elif kind != "pad":  # pads only fill the indices a re-run's first frames would reuse
                        on_event(cast(Event, meta))
                    if result is not None and result.complete:
                        return _ending(result.meta, result.buffers, stopped=stopping, timeout=timeout)
                break
            except KeyboardInterrupt:
                if stopping:
                    break  # asked twice: do not wait
                if call_id is None:
                    self.close(wait=liveness.ANSWER)
                    raise KeyboardInterrupt(f"the cell was stopped before a container had it. {UNCHANGED}.") from None
                stopping, deadline = True, time.monotonic() + _DRAIN
                if watch.silence > liveness.PROBE_EVERY + liveness.ANSWER:  # a probe went unanswered: so would a stop
                    raise _ServerSilent(watch.silence, interrupted=True) from None
                try:
                    if not bounded(lambda: control.put(STOP, partition=partition(token, "stop"))):
                        break  # cannot ask in band: cancelling is what is left
                except NoAnswer:
                    raise _ServerSilent(watch.silence, interrupted=True) from None
                except KeyboardInterrupt:
                    break  # asked twice: do not wait
        if not stopping:
            raise WorkerDied(f"the Modal container ended without finishing the cell. {UNCHANGED}; "
                             "the next cell starts a fresh container.")
        if self._cancel(call_id):
            raise KeyboardInterrupt("the cell did not stop in time, so its Modal call was cancelled and its container "
                                    f"stopped; the next cell starts a fresh one. {UNCHANGED}.")
        raise KeyboardInterrupt("the cell did not stop in time, and Modal did not take the cancel, so its app was "
                                f"dropped (that stops its container); the next cell starts a fresh one. {UNCHANGED}.")

    def _cancel(self, call_id: str | None) -> bool:
        """Cancel the call and stop its container (Modal does not re-run a cancelled input): whether it was.

        If not (within ``liveness.ANSWER``), the app is dropped, without waiting: stopping the app stops the call too.
        """
        import modal

        if call_id is not None:
            with contextlib.suppress(NoAnswer):
                if bounded(lambda: modal.FunctionCall.from_id(call_id).cancel(terminate_containers=True)):
                    return True
        self.close(wait=0)
        return False

    # ------------------------------------------------------------------ the app
    def _ensure_app(self, shape: AppShape, window: int) -> Any:
        """The running app for ``shape``, else a new one whose class waits ``window`` idle seconds (a single cell's
        window: its pools need no variant for it)."""
        if self._executor is not None and shape == self._shape:
            return self._executor
        self.close()
        import modal
        from modal.config import config

        preflight(config.get("server_url") or "https://api.modal.com")
        greet()
        stack = contextlib.ExitStack()
        try:
            app = modal.App("modal-magic")
            gpu: dict[str, Any] = {"gpu": list(shape.gpu_fallbacks)} if shape.gpu_fallbacks else {}
            executor = app.cls(serialized=True, image=build_image(shape.image), timeout=MAX_TIMEOUT,
                               scaledown_window=window, max_containers=1, **gpu)(executor_class())
            stack.enter_context(app.run())
            self._control = control = stack.enter_context(modal.Queue.ephemeral())
            self._answering = threading.Thread(target=self._answer_reruns, args=(self._control,), daemon=True,
                                               name="modal_magic-reruns")
            self._answering.start()
            self._watch = Watch(lambda: control.len(), active=lambda: bool(self._streams))
        except BaseException as exc:  # an interrupt too: a half-started app must not beat on in the background
            with contextlib.suppress(Exception, NoAnswer):
                bounded(stack.close)
            if not isinstance(exc, Exception):
                raise
            raise explain(exc, starting=True) from None
        self._stack, self._executor, self._shape, self._class_window = stack, executor, shape, window
        if not self._closes_at_exit:
            # After Modal's own exit handlers (they run last-in first-out), so the app is closed while
            # Modal's client still works: the server stops the container now, not after missed heartbeats.
            # Bounded (``close``): a server that is gone must not hold the kernel's exit.
            atexit.register(self.close)
            self._closes_at_exit = True
        return executor

    def _answer_reruns(self, control: Any) -> None:
        """For the app's life: tell a re-run of a cell (Modal restarted its container) how many frames we have.

        See ``modal_executor._catch_up``: without the answer, Modal's client would
        drop the re-run's first frames as seen. One long poll for the whole app.
        """
        while True:
            try:
                token = control.get(timeout=_RERUN_POLL, partition=RERUNS)
            except queue.Empty:
                continue
            except Exception:  # noqa: BLE001 - the app is gone; its calls say so themselves
                return
            if token == _CLOSING:
                return
            stream = self._streams.get(token)
            if stream is not None:
                with contextlib.suppress(Exception):
                    control.put(stream.received, partition=partition(token, "seen"))

    def close(self, wait: float | None = None) -> None:
        """Stop the app; wait at most ``wait`` seconds (None: ``liveness.NO_ANSWER``) for Modal to hear of it.

        The backend forgets the app at once either way, so the next cell starts a fresh one; a server that
        is gone gets the goodbye (which stops the app's containers) when it answers, if ever: neither
        ``%modal_stop`` nor the kernel's exit waits for it longer. Goodbyes still under way from earlier
        closes are waited for within the same bound, so that a test's or a kernel's end finds no app
        half-closed inside Modal's client.
        """
        self._pools.clear()
        ledger.session().stopped()
        stack, control, answering, watch = self._stack, self._control, self._answering, self._watch
        self._stack = self._executor = self._shape = self._control = self._answering = self._watch = None
        if watch is not None:
            watch.stop()
        done = threading.Event()

        def goodbye() -> None:
            try:
                if answering is not None and answering.is_alive():
                    # Wake its long poll, so nothing is pending as the client closes. Bounded: Modal's client
                    # retries a queue put for ever, and the app's own goodbye must still be said.
                    with contextlib.suppress(NoAnswer):
                        if bounded(lambda: control.put(_CLOSING, partition=RERUNS)):
                            answering.join(2.0)
                if stack is not None:
                    with contextlib.suppress(Exception):  # closing an app whose server is gone must not raise
                        stack.close()
            finally:
                done.set()

        until = time.monotonic() + (liveness.NO_ANSWER if wait is None else wait)
        with contextlib.suppress(NoAnswer):
            bounded(goodbye, until - time.monotonic())
        self._leaving = [earlier for earlier in self._leaving + [done]
                         if not earlier.wait(max(0.0, until - time.monotonic()))]


class _FanOutLane(Backend):
    """One of a ``--map``'s calls in flight: a cell of the Modal backend, on the fan-out's own pool of containers
    (as many as Modal gives, warm from one ``--map`` to the next), so that the session's container stays free."""

    name = ModalBackend.name

    def __init__(self, backend: ModalBackend) -> None:
        self._backend = backend

    @classmethod
    def describe(cls, *, gpu: Sequence[str] = (), lanes: int = 1) -> Description:
        return ModalBackend.describe(gpu=gpu, lanes=lanes)  # a --map's progress names Modal, as a cell's does

    def run(self, request: RunRequest, inputs: wire.Payload, on_event: OnEvent, *, resources: Resources = Resources(),
            timeout: float | None = None, stop: threading.Event | None = None) -> ResultFrame:
        return ResultFrame.from_wire(*self._backend._call(request.to_wire(), inputs, on_event, resources, timeout,
                                                          stop, fan_out=True))

    def resident_report(self) -> StoreReport | None:
        return None  # a fan-out's copies run fresh: their containers keep nothing

    @property
    def running(self) -> bool:
        return self._backend.running


def _bill(account: ledger.Ledger, call: ledger.Call, stream: _Stream, on_event: OnEvent) -> None:
    """The call let its container go: count its seconds, and tell the view what it had and cost (an estimate).

    Told only for a call a container took (its first frame came): one refused or withdrawn before that
    held no container of ours; its seconds still count, as Modal may have started one for it.
    """
    seconds, cost, pool = account.end(call, stream.gpus)
    if stream.gpus is None:
        return
    event = BillEvent(kind="bill", gpu=pool.gpu_words(), seconds=seconds, cost=cost, total=account.total(),
                      basis=account.basis(), idle=pool.window)
    if stream.gpu_peak is not None:
        event["peak"] = stream.gpu_peak
    on_event(event)


class _AppGone(Exception):
    """Modal refused the call because the app had stopped; the cell never reached a container."""


def _means_app_gone(exc: BaseException) -> bool:
    """Modal's answer for a call to a stopped app: no such app or function any more, or not in that state.

    (The exact status is not documented; these are the SDK's types for NOT_FOUND
    and FAILED_PRECONDITION. Refusals that a fresh app would meet again, such as
    credentials or GPU limits, are not among them.)
    """
    import modal

    return isinstance(exc, (modal.exception.NotFoundError, modal.exception.ConflictError))


_LAST_FRAMES = ("interrupted", "stuck", "worker_failed", "inputs_lost", "internal_error")


def _ending(meta: dict[str, Any], buffers: list[Any], *, stopped: bool, timeout: float | None) -> Frame:
    """What the cell's last frame means here: its result, or the error that says how it ended.

    An interrupted result the notebook did not ask for was the cell's
    ``--timeout``; one it asked for goes to the driver, which raises the
    interrupt where the cell was, as a local one.
    """
    kind = meta["kind"]
    if kind == "result" and (stopped or not meta.get("interrupted")):
        return meta, buffers
    if kind == "internal_error":
        raise InternalError("modal_magic failed inside the container (a bug; please report it):\n" + meta["traceback"])
    if kind == "worker_failed":
        raise WorkerDied(f"in the Modal container, {meta['message']}")
    if kind == "inputs_lost":
        raise WorkerDied("a new Modal container took the cell while its inputs were going up to the old one. "
                         f"{UNCHANGED}; run the cell again.")
    restarted = kind == "stuck"
    if stopped:
        if not restarted:
            raise KeyboardInterrupt
        message = (f"the cell did not stop within {GRACE:g} s, so its process in the container was restarted "
                   f"(what earlier cells left there is gone); the container stays warm. {UNCHANGED}.")
        raise KeyboardInterrupt(message)  # the driver tells it (notebook/interrupts.py)
    raise CellTimeout(f"the cell ran longer than its timeout of {timeout or 0:g} s and was stopped"
                      + (" (its process in the container was restarted: it did not unwind)" if restarted else "")
                      + f". Raise it with --timeout SECONDS. {UNCHANGED}.")


class _ServerSilent(Exception):
    """Modal's server has not answered for a while (``liveness``): the cell is given up without waiting for it."""

    def __init__(self, silence: float, *, interrupted: bool = False) -> None:
        super().__init__(silence)
        self.silence, self.interrupted = silence, interrupted

    def error(self) -> BaseException:
        if not self.interrupted:
            return lost_connection(f"no answer for {liveness.NO_ANSWER:g} s")
        return KeyboardInterrupt(f"Modal's server has not answered for {self.silence:.0f} s, so the cell was given up "
                                 "without waiting for it to stop (its app is dropped, which stops its container once "
                                 "the server hears of it); the notebook is as before the cell; the next cell "
                                 "reconnects.")


def _send_inputs(instance: Any, request: dict[str, Any], inputs: wire.Payload,
                 on_event: OnEvent) -> tuple[bytes, list[Any]]:
    """The run call's arguments: the request's head, and its buffers unless they went ahead in pieces.

    Small inputs ride in the call, as arrays over the notebook's own memory
    (Modal's pickle is their only copy). Big ones go ahead in pieces of at most
    ``frames.PIECE``, each its own call to the same container, so the notebook
    holds one piece at a time beside its own objects, not a copy of everything,
    and the view shows the bytes going up.
    """
    if inputs.nbytes <= _INLINE:
        return frames.encode(request), [numpy.frombuffer(memoryview(b).cast("B"), numpy.uint8)
                                        for b in inputs.buffers]
    messages = frames.encode_pieces(request, inputs.buffers)
    head, sent, calls = next(messages), 0, []
    for index, piece in enumerate(messages):
        calls.append(instance.put.spawn(request["token"], index, piece))
        sent += len(piece)
        del piece
        on_event(StageEvent(kind="stage", stage="upload", bytes=sent, of=inputs.nbytes))
    for call in calls:
        call.get()
    return head, []


class _Stream:
    """A generator call read on a thread of its own.

    A kernel interrupt lands in the notebook's main thread; if that thread were
    iterating ``remote_gen`` itself, Modal's client would cancel the stream and
    the stopped cell's last frame (where it stopped) would be lost. Here the
    interrupt only ends one ``frames()`` loop; the stream goes on, and the next
    ``frames()`` reads the rest.
    """

    def __init__(self, start: Callable[[], Iterator[bytes]] | None) -> None:
        self._items: queue.Queue[tuple[bytes | None, BaseException | None]] = queue.Queue()
        self.received = 0  # items Modal's client has handed over (its index of the last one)
        self.call_id: str | None = None  # set once the container has the cell
        self.gpus: list[str] | None = None  # the container's GPUs, as it names them (its first frame)
        self.gpu_peak: int | None = None  # the cell's peak GPU memory (its result)
        if start is not None:
            threading.Thread(target=self._pump, args=(start,), daemon=True, name="modal_magic-stream").start()

    @classmethod
    def nothing_yet(cls) -> _Stream:
        """A stream of a call not made yet (so a failure before it can ask ``call_id``)."""
        return cls(None)

    def _pump(self, start: Callable[[], Iterator[bytes]]) -> None:
        try:
            for chunk in start():
                self.received += 1
                self._items.put((chunk, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
            self._items.put((None, exc))
        else:
            self._items.put((None, None))

    def frames(self, *, deadline: float | None = None,
               on_wait: Callable[[], None] | None = None) -> Iterator[tuple[dict[str, Any], list[Any]]]:
        """Decoded frames until the call ends (or ``deadline``); buffers are views of the items (read-only)."""
        while True:
            try:
                chunk, error = self._items.get(timeout=_SLICE)
            except queue.Empty:
                if deadline is not None and time.monotonic() > deadline:
                    return
                if on_wait is not None:
                    on_wait()
                continue
            if error is not None:
                raise error
            if chunk is None:
                return
            yield frames.decode(chunk)
