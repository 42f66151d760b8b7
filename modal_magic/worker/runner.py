"""The remote side: run one cell in a headless IPython shell and report it as events.

The same code runs in the local worker process and in a Modal container, so it
imports only what both have (IPython, cloudpickle, our wire format; torch only
when a payload holds tensors or the notebook's torch state comes along). A
request carries the cell, its inputs and the notebook's process-wide state
(``process_state``); the runner places the inputs in a fresh namespace,
applies that state, runs the cell through IPython (so ``!cmd``, ``%time`` and
``%pip`` run *here*), and emits events while it runs: ``stage``, ``stream``
(stdout/stderr text, batched as ``worker/output.py`` says), ``display`` and
``clear_output`` (rich output), and finally ``result`` with the outputs packed by ``wire`` and the
state the cell changed. Nothing is printed to the process's own stdout. What
each of these holds is in ``modal_magic.protocol``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from ..protocol import (
    ERROR,
    INPUTS,
    PLAIN,
    RESIDENT,
    SLOTS,
    VALUE,
    ClearOutputEvent,
    DisplayEvent,
    ErrorInfo,
    ResultFrame,
    RunRequest,
    StageEvent,
    StoreReport,
)
from ..wire import handles, process_state
from ..wire import payload as wire
from ..wire.identity import RemoteInputs
from . import gpu_memory
from .output import CellOutput
from .store import Store, this_process

__all__ = ["Runner", "Emit", "color_scheme"]

Emit = Callable[[Any, list[Any]], None]
"""Send one frame: ``emit(meta, buffers)``, ``meta`` an event (``protocol.Event``) or a result's."""

_IPYTHON8_SCHEMES = ("NoColor", "Linux", "LightBG", "Neutral")


def color_scheme(name: str) -> str:
    """``name`` as this IPython spells its colour schemes, or plain text when it has no such scheme.

    IPython 8 knows ``NoColor``, ``Linux``, ``LightBG`` and ``Neutral``; IPython 9 renamed them to lowercase
    themes (and asserts the name is one), so a scheme named by a notebook on one version, or by a caller of
    ``run_cell``, must not crash a worker running the other.
    """
    try:
        from IPython.utils.PyColorize import theme_table  # IPython >= 9
    except ImportError:
        return {known.lower(): known for known in _IPYTHON8_SCHEMES}.get(name.lower(), "NoColor")
    return name.lower() if name.lower() in theme_table else PLAIN


class _ValueHook(DisplayHook):
    """Keeps the last expression's value instead of printing ``Out[n]``."""

    value: Any = None

    def __call__(self, result: Any = None) -> None:
        if result is not None and not self.quiet():
            self.value = result


class _EventPublisher(DisplayPublisher):
    """``display()`` in the cell becomes a ``display`` event."""

    emit: Emit | None = None

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs) -> None:
        if self.emit is not None:
            self.emit(DisplayEvent(kind="display", data=data, metadata=metadata or {},
                                   transient=transient or {}, update=update), [])

    def clear_output(self, wait: bool = False) -> None:
        if self.emit is not None:
            self.emit(ClearOutputEvent(kind="clear_output", wait=wait), [])


class Runner:
    """A headless IPython shell that runs requests one at a time."""

    def __init__(self) -> None:
        config = Config()
        config.HistoryManager.enabled = False  # never touch the user's history database
        self.shell = InteractiveShell.instance(config=config, displayhook_class=_ValueHook,
                                               display_pub_class=_EventPublisher)
        hook, publisher = self.shell.displayhook, self.shell.display_pub
        assert isinstance(hook, _ValueHook) and isinstance(publisher, _EventPublisher), "the classes asked for above"
        self._hook, self._publisher = hook, publisher
        self.shell.system = self.shell.system_piped  # type: ignore[method-assign]  # `!cmd` output through sys.stdout, as in Jupyter
        # No GUI event loop here: `%matplotlib inline` (a notebook's first cell, often) needs none, and
        # figures come back as PNGs. The base shell's enable_gui refuses every GUI, `inline` included.
        self.shell.enable_gui = lambda gui=None: None  # type: ignore[method-assign]
        self.shell._showtraceback = self._record_traceback  # type: ignore[method-assign]
        self.shell.events.register("post_execute", self._show_figures)
        self._baseline = dict(self.shell.user_ns)
        self._threads_left = False
        """Whether a thread the last cell started was still running when it ended (``_new_namespace``)."""
        self._kept_values = False
        """Whether a value the last cell made is kept for a remote handle (``_new_namespace``)."""
        self._traceback: list[str] = []
        self.store = this_process()
        """What the cells received and made, kept for later cells (``resident``); not used by ``fresh`` ones."""

    def _show_figures(self) -> None:
        """Figures the cell left open are shown as PNGs and closed, as the inline backend does."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None or not pyplot.get_fignums():
            return
        import base64

        from IPython.core.pylabtools import print_figure

        for number in pyplot.get_fignums():
            figure = pyplot.figure(number)
            png = base64.b64encode(print_figure(figure, "png")).decode("ascii")
            self.shell.display_pub.publish({"image/png": png, "text/plain": repr(figure)})
        pyplot.close("all")

    def _record_traceback(self, etype: type, evalue: BaseException, stb: list[str]) -> None:
        self._traceback = list(stb)

    def _set_colors(self, scheme: str) -> None:
        """Format tracebacks in the notebook's colour scheme (as ``%colors`` does), under IPython 8 or 9."""
        scheme = color_scheme(scheme)
        if self.shell.colors == scheme:
            return
        self.shell.colors = scheme
        if not hasattr(self.shell.InteractiveTB, "set_theme_name"):
            # IPython 8: assigning `colors` does not reach the traceback formatters; IPython 9's observer
            # does, and there `set_colors` is deprecated.
            self.shell.InteractiveTB.set_colors(scheme)
            self.shell.SyntaxTB.set_colors(scheme)

    def _changed(self, before: dict[str, Any], only: tuple[str, ...] | None) -> list[str]:
        """Names the cell bound or rebound (however: assignment, ``%time x = …``, ``exec``)."""
        ns = self.shell.user_ns
        if only is not None:  # --out: exactly these, changed or not
            return [name for name in only if name in ns and not isinstance(ns[name], _Placeholder)]
        return [
            name for name, value in ns.items()
            if (name not in before or before[name] is not value) and not _BOOKKEEPING.match(name)
        ]

    def report(self) -> StoreReport:
        """What is resident (a ``ReportRequest``'s answer)."""
        return self.store.report()  # type: ignore[return-value]  # the store's dict is a StoreReport

    def run(self, request: RunRequest, inputs: wire.Payload, emit: Emit) -> None:
        """Run one cell; every outcome, including the cell raising, ends in one ``result`` frame.

        A cell whose inputs name resident values this session lacks (a recycled worker) is answered with their
        keys, before it runs (``missing``). ``inputs`` holds a ``--map`` element's buffers after the shared ones."""
        started = time.perf_counter()
        store = self.store if request.resident else None  # a --fresh cell, or a client without a session
        if store is not None:
            store.begin(request.release, resync=request.resync)
            lacking = store.lacks(request.references)
            if lacking:  # (an empty store, a new worker or container, lacks everything: the notebook sends all)
                emit(*ResultFrame(missing=tuple(lacking), empty=not len(store.table)).to_wire())
                return
        placed = self._place_inputs(request, inputs, store)
        if isinstance(placed, list):
            assert store is not None  # only a resident store lacks values
            emit(*ResultFrame(missing=tuple(placed), empty=not len(store.table)).to_wire())
            return
        values, arrived, before = placed
        process_state.apply(request.state)  # the notebook's seeds and defaults, as one process
        state_before = process_state.capture(known=request.state)
        emit(StageEvent(kind="stage", stage="run"), [])
        gpu_memory.begin()
        outcome = self._execute(request, emit)
        gpu_peak = gpu_memory.peak()
        state = process_state.changed_since(state_before)
        elapsed = time.perf_counter() - started
        error = outcome.error_before_exec or outcome.error_in_exec
        # Stopped (the interrupt, or the container's deadline): what the cell did so far goes back as a local
        # interrupt leaves it (the epochs a training loop ran, the names bound), and the notebook raises the
        # interrupt at the cell's line. A second interrupt while it is packed ends in the serve loop: no result.
        emit(StageEvent(kind="stage", stage="download"), [])
        held = handles.count()
        result = self._collect(request, outcome, values, arrived, before, store)
        self._kept_values |= handles.count() > held  # a value kept for a handle may read this cell's globals
        result.elapsed, result.state, result.gpu_peak = elapsed, state, gpu_peak
        result.interrupted = isinstance(error, KeyboardInterrupt)
        emit(*result.to_wire())

    @wire.gc_paused()
    def _place_inputs(self, request: RunRequest, inputs: wire.Payload,
                      store: Store | None) -> tuple[dict, RemoteInputs, dict] | list[str]:
        """A fresh namespace holding just the inputs (and placeholders for names only deleted), resident ones
        being this session's own objects; or the keys of those it lacks."""
        memo: dict[int, Any] = {}
        ns = self._new_namespace()
        main = wire.MainGlobals(ns)  # the notebook's functions read this namespace, as they would the notebook's
        element, buffers = request.element, inputs.buffers
        shared = len(buffers) if element is None else element.first_buffer
        resident = None if store is None else store.receiver()
        payload = dataclasses.replace(inputs, buffers=buffers[:shared])
        values: dict[str, Any] = {}
        try:
            values = wire.unpack(payload, map_location="auto", memo=memo, main=main,
                                 persistent_load=None if resident is None else resident.persistent_load)
        except wire.UnpackError:
            if resident is None or not resident.missing:
                raise
        if resident is not None:
            if resident.missing:  # a placeholder stood in for each: nothing of this attempt is used
                main.undo()
                ns.clear()
                ns.update(self._baseline)
                return resident.missing
            resident.apply()
        ns.update(values)
        ns.update((name, _Placeholder()) for name in request.placeholders)
        if element is not None:  # --map: this copy's element, packed apart so the inputs are packed once for all
            ns.update(wire.unpack(wire.Payload.from_meta(element.payload, buffers[shared:]),
                                  map_location="auto", main=main))
        return values, RemoteInputs(memo), dict(ns)

    def _new_namespace(self) -> dict[str, Any]:
        """A new namespace for the next cell, the shell's ``__main__`` from now on; the last cell's is let go.

        A thread a cell started goes on reading that cell's globals, as a local cell's thread goes on reading
        the notebook's: clearing them in place for the next cell made it die of ``NameError`` (issue 26). So
        each cell gets a module of its own, and the last one is cleared only when no thread it started is
        still running and no value it made is kept for a remote handle (a compiled function of the cell reads
        its globals, ``__builtins__`` among them): then nothing can be reading it, and what it held (a CUDA
        tensor of a ``--fresh`` cell) is freed at once, not at some later collection of the cycle its functions
        make with it.
        """
        previous = self.shell.user_ns
        module = types.ModuleType("__main__", doc="a remote cell's namespace")
        ns: dict[str, Any] = module.__dict__
        ns.update(self._baseline)
        self.shell.user_module, self.shell.user_ns = module, ns
        self.shell.ns_table.update(user_global=ns, user_local=ns)  # what `?` and `%who` search
        sys.modules["__main__"] = module  # as IPython's own: pickle finds `__main__`'s names there
        if not (self._threads_left or self._kept_values):
            previous.clear()
        self._threads_left = self._kept_values = False
        return ns

    def _execute(self, request: RunRequest, emit: Emit) -> Any:
        """Run the cell through IPython with its output turned into events."""
        self._hook.value = None
        self.shell.execution_count = request.execution_count or 1
        self._set_colors(request.colors or PLAIN)
        self._traceback = []
        saved = sys.stdout, sys.stderr
        output = CellOutput(emit)  # batched; displays go after the text written before them
        self._publisher.emit = output.emit
        sys.stdout, sys.stderr = output.stdout, output.stderr
        threads = set(threading.enumerate())  # the output's flusher among them
        try:
            with _environment(request.env):
                return self.shell.run_cell(request.code, store_history=True)
        finally:
            self._threads_left = any(thread not in threads for thread in threading.enumerate())
            sys.stdout, sys.stderr = saved
            self._publisher.emit = None
            output.close()  # the last of the text, before the result

    def _error_info(self, error: BaseException) -> ErrorInfo:
        """The cell's exception as the notebook shows it: type, message, IPython's formatted traceback."""
        return ErrorInfo(type=type(error).__name__, message=str(error), traceback=self._traceback)

    @wire.gc_paused()
    def _collect(self, request: RunRequest, outcome: Any, inputs: dict[str, Any], arrived: RemoteInputs,
                 before: dict[str, Any], store: Store | None) -> ResultFrame:
        """What goes back: rebound names, inputs changed in place, deletions, the value or the error."""
        ns = self.shell.user_ns
        error = outcome.error_before_exec or outcome.error_in_exec
        outputs = {name: ns[name] for name in self._changed(before, request.outputs)}
        # Every mutable input goes back (as an update, or a reference when unchanged), whatever became
        # of its name: `a.append(1); a = []` must still change the list other notebook names hold.
        extra: dict[str, Any] = {INPUTS: [value for value in inputs.values() if arrived.is_input(value)]}
        refs: Any = arrived
        if store is not None:
            refs, extra[RESIDENT] = store.results(arrived, arrived.same_values)
        if error is not None:
            extra[ERROR] = error
        elif self._hook.value is not None:
            extra[VALUE] = self._hook.value
        self._hook.value = None
        payload = wire.pack({**outputs, **extra}, lenient=True, refs=refs,
                            disks=wire.Disks(request.shared_disk, sender="the worker", receiver="the notebook"),
                            stand_in=None if store is None else _keep_here)
        unbound = [] if error is not None or request.outputs is None else \
            [name for name in request.outputs if name not in outputs]
        if unbound:  # a local cell has nothing to say here, but the user asked for these by name
            payload.notes.append(f"--out names {', '.join(map(repr, unbound))}, which the cell did not bind: "
                                 f"nothing came back under {'that name' if len(unbound) == 1 else 'those names'}")
        if store is not None:
            store.settle(refs)
        return ResultFrame(
            payload=payload.meta(), buffers=payload.buffers,
            deleted=tuple(name for name in before if name not in ns and name not in self._baseline),
            error=None if error is None else self._error_info(error),
            value_repr=_safe_repr(extra.get(VALUE)) if VALUE in payload.skipped else None,
        )


def _keep_here(name: str, value: Any, why: str) -> Any:
    """A value the cell bound that cannot travel stays in this worker; the notebook gets its handle."""
    if name in SLOTS:  # the cell's error, last value, inputs' updates: said as before, never held
        return None
    where = os.environ.get(handles.PLACE) or f"the local worker (pid {os.getpid()})"
    return handles.hold(value, name, why, where)


@contextlib.contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    """Set the variables the user forwarded (--env) for this cell only."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _Placeholder:
    """Stands for a notebook variable the cell deletes without reading, so ``del`` works here."""


# Names IPython itself (re)binds while running a cell: history and output caches.
_BOOKKEEPING = re.compile(r"^(_i+|_i\d+|_+|_\d+|_ih|_oh|_dh|In|Out)$")


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # noqa: BLE001 - a repr that raises is still worth a line
        return f"<{type(value).__name__} object; repr failed: {exc}>"
