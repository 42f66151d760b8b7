"""Fan one cell out over many elements: ``%%modal_gpu --map NAME=EXPR`` (or ``--map NAME``).

One copy of the cell runs per element of the iterable, with ``NAME`` bound to
that element, on the backend's lanes (``Backend.lanes``): a small pool of
local workers, or concurrent Modal calls that Modal spreads over as many
containers as it gives. Nothing here schedules beyond handing the next element
to the next free lane.

The cell is analysed and its inputs packed once; each element is packed on its
own and travels beside them (the runner binds it). Every bound name comes back
as a list in element order, a failed element's slot holding ``None``; the last
expression's values are the cell's value, as a list. In-place changes to the
notebook's objects cannot be merged from N copies: they are dropped, with one
line naming the objects. Failures do not stop the other elements (unless
``--map-fail-fast``); they are raised together, after the successful results
are injected, as one ``MapFailed`` (an ``ExceptionGroup`` on Python 3.11+).

The lane threads only wait on their backend. Every event, every unpacking and
every change to the namespace happens on the calling thread, the one a kernel
interrupt lands in: an interrupt stops every element and changes nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import keyword
import queue
import re
import reprlib
import statistics
import sys
import threading
import time
from collections.abc import Callable, Collection, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import Backend
from ..errors import BackendUnavailable, ModalMagicError, RemoteError, UsageProblem
from ..protocol import (
    DoneEvent,
    Element,
    Event,
    NoteEvent,
    Resources,
    ResultFrame,
    RunRequest,
    StageEvent,
    StreamEvent,
    TickEvent,
)
from ..wire import payload as wire
from .cell import NO_VALUE, CellOptions, CellOutcome
from .extension import current
from .secrets import Guard, credential_reason, held_back

# The stages of every cell: a --map cell is analysed, packed and its results rebuilt as a single cell's are.
from .stages import Stopwatch, one_line, prepare, rebuild

__all__ = ["MapSpec", "MapFailed", "run_mapped"]

_NOTE_EVERY = 0.5   # seconds between progress notes while elements finish (the last one always goes)
_WAIT = 0.1         # seconds the calling thread waits for a lane's report (an interrupt is noticed between)
_LISTED_TIMES = 12  # up to this many elements, the summary lists each one's time; beyond, a spread


@dataclass(frozen=True)
class MapSpec:
    """What ``--map`` asked for."""

    name: str
    expression: str | None
    """Evaluated in the notebook; ``None``: the iterable is the notebook's ``name`` itself."""
    max_parallel: int | None = None
    fail_fast: bool = False

    @classmethod
    def parse(cls, text: str, *, max_parallel: int | None = None, fail_fast: bool = False) -> MapSpec:
        """``NAME=EXPR`` or ``NAME``, quoted or not; a bad one is a ``UsageProblem`` saying what is expected."""
        text = text.strip()
        if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":  # IPython keeps a flag's quotes
            text = text[1:-1]
        name, sep, expression = text.partition("=")
        name, expression = name.strip(), expression.strip()
        if not name.isidentifier() or keyword.iskeyword(name):
            raise UsageProblem(f"--map takes NAME=EXPR or NAME, and {name!r} is not a variable name "
                               "(e.g. --map lr=[0.1,0.01] or --map 'seed=range(8)').")
        if sep and not expression:
            raise UsageProblem(f"--map {name}= has no expression after '='; give one (--map {name}=range(8)) "
                               f"or name an iterable already in the notebook (--map {name}).")
        if max_parallel is not None and max_parallel < 1:
            raise UsageProblem(f"--max-parallel must be at least 1, not {max_parallel}.")
        return cls(name, expression if sep else None, max_parallel, fail_fast)

    @property
    def label(self) -> str:
        return f"--map {self.name}" + (f"={self.expression}" if self.expression is not None else "")


class MapFailed(ExceptionGroup if sys.version_info >= (3, 11) else Exception):  # type: ignore[misc, name-defined]  # noqa: F821
    """Some elements failed: ``exceptions`` holds each one's exception (``indices`` says which element).

    An ``ExceptionGroup`` where Python has one, each exception with a note (the element and the cell line
    it stopped at). IPython shows ``lines``, one sentence per failed element (``_render_traceback_``; for a
    group, through the handler the extension gives IPython, ``magic._show_map_failed``).
    """

    indices: tuple[int, ...] = ()
    lines: tuple[str, ...] = ()

    if sys.version_info < (3, 11):
        def __init__(self, message: str, exceptions: list[Exception]) -> None:
            super().__init__(message)
            self.message, self.exceptions = message, tuple(exceptions)

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self.message}", *self.lines]


@dataclass
class _Element:
    """One element's fate, as the lanes report it."""

    value: Any
    started: float | None = None
    elapsed: float = 0.0
    values: dict[str, Any] | None = None     # what it bound (None: it failed or never ran)
    result: Any = NO_VALUE
    deleted: list[str] = field(default_factory=list)
    error: BaseException | None = None
    cancelled: bool = False


def run_mapped(source: str, namespace: MutableMapping[str, Any], options: CellOptions, *,
               on_event: Callable[[Event], None], hidden: Collection[str] = (),
               execution_count: int | None = None, colors: str = "", header: str | None = None) -> CellOutcome:
    """``driver.run_cell`` for a cell with ``--map`` (``options.mapping``); same arguments, same promises,
    except that the namespace gets one list per bound name and failures come as one ``MapFailed``."""
    spec = options.mapping
    assert spec is not None
    clock = Stopwatch()
    on_event(StageEvent(kind="stage", stage="analyse"))
    elements = [_Element(value) for value in _elements(spec, namespace)]
    # `--in NAME` lets the elements go as they are; the name is the elements', not a notebook variable to send.
    inputs_named = tuple(name for name in options.inputs if name != spec.name)
    if len(inputs_named) == len(options.inputs):
        _hold_back_elements(spec, elements, namespace, options.inputs)
    # The copies run on workers or containers of their own, not the session's: their inputs go as values
    # (a resident reference names an object of the session's one worker), and nothing stays behind.
    backend = current().backends.get(options.backend)
    cell = prepare(source, namespace, dataclasses.replace(options, fresh=True, inputs=inputs_named),
                   {*hidden, spec.name}, header, clock, shared_disk=backend.shares_disk,
                   execution_count=execution_count, colors=colors)
    inputs = cell.crossing.inputs
    packed = [_pack_element(spec, index, element.value, cell.disks) for index, element in enumerate(elements)]
    on_event(StageEvent(kind="stage", stage="pack", variables=cell.names, bytes=inputs.nbytes))
    # The backend's lanes: a pool of local workers, or Modal calls on the fan-out's own containers.
    lanes = backend.lanes(min(len(elements), spec.max_parallel or len(elements)))
    try:
        handler = _Handler(elements, inputs, namespace, spec, on_event, options.device)
        _run_on_lanes(lanes, handler, cell.request, cell.resources, inputs, packed, options.timeout)
        clock.lap("remote")
        outcome = _inject(handler, namespace, clock)
    except BaseException as exc:  # the view shows how it ended; the exception goes on
        on_event(DoneEvent(kind="done", ok=False, error=one_line(exc), elements=_element_times(elements)))
        raise
    outcome.sent = cell.names
    failed = _failure(handler, cell.request.code)
    on_event(DoneEvent(kind="done", ok=failed is None, elements=_element_times(elements),
                       error="" if failed is None else failed.message,
                       injected={name: namespace[name] for name in outcome.injected}))
    if failed is not None:
        raise failed
    return outcome


def _elements(spec: MapSpec, namespace: MutableMapping[str, Any]) -> list[Any]:
    """The elements, evaluated here as a notebook cell would (a generator is run to its end once)."""
    if spec.expression is None:
        if spec.name not in namespace:
            raise UsageProblem(f"{spec.label}: {spec.name!r} is not defined in the notebook; name an iterable "
                               f"there, or give one: --map {spec.name}=EXPR.")
        iterable = namespace[spec.name]
    else:
        scope = namespace if isinstance(namespace, dict) else dict(namespace)
        try:
            iterable = eval(compile(spec.expression, "<--map>", "eval"), scope)
        except Exception as exc:  # noqa: BLE001 - the user's expression: say what it raised, in one line
            raise UsageProblem(f"{spec.label}: evaluating {spec.expression!r} in the notebook raised "
                               f"{type(exc).__name__}: {exc}") from None
    try:
        elements = list(iterable)
    except Exception as exc:  # noqa: BLE001 - not iterable, or iterating it raised
        raise UsageProblem(f"{spec.label}: cannot iterate over the {type(iterable).__name__} it gives: "
                           f"{type(exc).__name__}: {exc}") from None
    if not elements:
        raise UsageProblem(f"{spec.label}: the iterable is empty, so there is nothing to run; nothing was changed.")
    return elements


def _hold_back_elements(spec: MapSpec, elements: list[_Element], namespace: MutableMapping[str, Any],
                        named: Collection[str]) -> None:
    """Refuse, with the cell's own sentence, to send an element that holds a credential (the first one found):
    each element goes to the cell as ``spec.name``, so it is looked at as that variable would be."""
    guard = Guard(namespace, named)
    for index, element in enumerate(elements):
        found = guard.find(spec.name, element.value)
        if found is not None:
            raise held_back({f"element [{index}] of {spec.label}": found}, [spec.name])


def _pack_element(spec: MapSpec, index: int, value: Any, disks: wire.Disks) -> wire.Payload:
    try:
        return wire.pack({spec.name: value}, disks=disks)
    except wire.PackError as exc:
        raise UsageProblem(f"{spec.label}: element [{index}] cannot be sent: {exc.why}. Nothing ran.") from None


# ------------------------------------------------------------------ running
def _run_on_lanes(lanes: list[Backend], handler: _Handler, request: RunRequest, resources: Resources,
                  inputs: wire.Payload, packed: list[wire.Payload], timeout: float | None) -> None:
    """Run every element on the lanes, ``handler`` taking their reports on this thread."""
    elements, stop, on_event = handler.elements, handler.stop, handler.on_event
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for number in range(len(elements)):
        todo.put(number)
    reports: queue.SimpleQueue[tuple[int | None, str, Any]] = queue.SimpleQueue()

    def job(index: int) -> tuple[RunRequest, wire.Payload]:
        element = packed[index]
        return (dataclasses.replace(request, element=Element(element.meta(), first_buffer=len(inputs.buffers))),
                dataclasses.replace(inputs, buffers=[*inputs.buffers, *element.buffers]))

    threads = [threading.Thread(target=_lane, args=(lane, todo, job, resources, reports, stop, timeout,
                                                    handler.spec.fail_fast),
                                daemon=True,
                                name=f"modal_magic-map-{number}") for number, lane in enumerate(lanes)]
    interrupted = False
    try:
        for thread in threads:
            thread.start()
        where = lanes[0].describe(lanes=len(lanes))
        on_event(StageEvent(kind="stage", stage="start", where=where.pool, warm=None,
                            note=f"{len(elements)} elements on {where.lanes}"))
        on_event(StageEvent(kind="stage", stage="run", where=where.pool))
        running = len(threads)
        while running:
            try:
                try:
                    index, kind, item = reports.get(timeout=_WAIT)
                except queue.Empty:
                    handler.note()
                    on_event(TickEvent(kind="tick"))
                    continue
                if index is None:
                    running -= 1
                else:
                    handler.handle(index, kind, item)
            except KeyboardInterrupt:  # stop every element; keep reading until each lane has let go
                interrupted = True
                stop.set()
    except BaseException:  # our own failure: no lane may go on running cells behind the notebook's back
        stop.set()
        raise
    finally:
        for thread in threads:
            if thread.ident is not None:
                thread.join()
    handler.note(final=True)
    if interrupted:  # (issue 25 is to keep what finished; until then the promise is that nothing changes)
        raise KeyboardInterrupt("; ".join(["every element was stopped; nothing was changed in the notebook",
                                           *(f"{said} ({_indices(indices)})"
                                             for said, indices in handler.interrupts.items())]))


def _lane(backend: Backend, todo: queue.SimpleQueue[int], job: Callable[[int], tuple[RunRequest, wire.Payload]],
          resources: Resources, reports: queue.SimpleQueue[tuple[int | None, str, Any]], stop: threading.Event,
          timeout: float | None, fail_fast: bool) -> None:
    """One lane's thread: take the next element, run it on ``backend``, report; until none is left or stopped.

    Under ``--map-fail-fast`` a lane whose element failed stops the others itself, before it could take the next
    element: left to the calling thread, the stop could come after this lane had already started another."""
    try:
        while not stop.is_set():
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            reports.put((index, "started", time.perf_counter()))
            try:
                request, payload = job(index)
                result = backend.run(request, payload, functools.partial(_report_event, reports, index),
                                     resources=resources, timeout=timeout, stop=stop)
            except BaseException as exc:  # noqa: BLE001 - reported to the calling thread, which decides
                # Raised while the others were being stopped: this one was cancelled too, whatever it raised.
                failed = not stop.is_set()
                reports.put((index, "failed" if failed else "cancelled", exc))
            else:
                failed = result.error is not None
                reports.put((index, "result", result))
            if failed and fail_fast:
                stop.set()
    finally:
        reports.put((None, "lane done", None))


def _report_event(reports: queue.SimpleQueue[tuple[int | None, str, Any]], index: int, event: Event) -> None:
    """An element's event, to the calling thread."""
    reports.put((index, "event", event))


class _Handler:
    """The calling thread's side: element output with its prefix, counts for the view, results unpacked."""

    def __init__(self, elements: list[_Element], inputs: wire.Payload, namespace: MutableMapping[str, Any],
                 spec: MapSpec, on_event: Callable[[Event], None], map_location: str) -> None:
        self.elements, self.inputs, self.spec, self.on_event = elements, inputs, spec, on_event
        self.map_location = map_location
        self.main = wire.MainGlobals(namespace) if isinstance(namespace, dict) else None
        self.stop = threading.Event()
        self.fatal: BaseException | None = None
        self.changed: dict[str, None] = {}  # notebook names whose objects a copy changed in place
        self.warnings: dict[str, list[int]] = {}
        self.interrupts: dict[str, list[int]] = {}  # what the backend said of a stopped element -> the elements
        self._partial: dict[tuple[int, str], str] = {}  # (element, stream) -> its line printed so far
        self._waiting = ""  # what the latest element's stage said it waits for (the app starting, a container)
        self._counts = ""
        self._noted = 0.0

    def handle(self, index: int, kind: str, item: Any) -> None:
        element = self.elements[index]
        if kind == "started":
            element.started = item
        elif kind == "event":
            self._show(index, item)
        else:
            element.elapsed = time.perf_counter() - (element.started or time.perf_counter())
            self._end_lines(index)
            if kind == "result":
                self._result(index, item)
            elif isinstance(item, KeyboardInterrupt) or (kind == "cancelled" and self.fatal is None):
                element.cancelled = True  # stopped, or the machinery gave way as the rest were cancelled
                if str(item):  # what the backend said of it (its worker did not stop and was replaced)
                    self.interrupts.setdefault(str(item), []).append(index)
            else:
                self._failed(element, item)
        self.note()

    def _show(self, index: int, event: Event) -> None:
        """An element's output event: streams get ``[index] `` at the start of each line; a stage's note
        (the app starting, a container awaited) joins the counts; the rest of the stages stay here."""
        if event["kind"] == "stage":
            self._waiting = event.get("note", "")
        elif event["kind"] == "stream":
            # Whole lines only: an element's unfinished line waits for its end (or the element's), so that
            # elements printing at once never break into one another's lines.
            key = (index, event["name"])
            *lines, self._partial[key] = re.split(r"(?<=[\n\r])", self._partial.get(key, "") + event["text"])
            if lines:
                self.on_event(StreamEvent(kind="stream", name=event["name"],
                                          text="".join(f"[{index}] {line}" for line in lines)))
        elif event["kind"] in ("display", "clear_output", "bill"):  # a bill: the view sums the elements'
            self.on_event(event)

    def _end_lines(self, index: int) -> None:
        """An element ended: what it left of a line is shown as it is."""
        for name in ("stdout", "stderr"):
            rest = self._partial.pop((index, name), "")
            if rest:
                self.on_event(StreamEvent(kind="stream", name=name, text=f"[{index}] {rest}"))

    def _failed(self, element: _Element, exc: BaseException) -> None:
        element.error = exc if isinstance(exc, Exception) else RemoteError(type(exc).__name__, str(exc))
        if isinstance(exc, (BackendUnavailable, UsageProblem)):  # every element would meet it: stop, say it once
            self.fatal = exc
            self.stop.set()
        elif self.spec.fail_fast:
            self.stop.set()

    @wire.gc_paused()
    def _result(self, index: int, result: ResultFrame) -> None:
        """Rebuild one element's results now (while the others run); nothing reaches the namespace yet."""
        element = self.elements[index]
        if result.interrupted:
            element.cancelled = True
            return
        try:
            rebuilt = rebuild(result, self.inputs, device=self.map_location, main=self.main)
        except wire.UnpackError as exc:
            return self._failed(element, exc)
        self._note_changes(rebuilt.objects.discard())
        if rebuilt.error is not None:
            return self._failed(element, rebuilt.error)
        element.values, element.result, element.deleted = rebuilt.values, rebuilt.value, list(result.deleted)
        for warning in rebuilt.warnings:
            self.warnings.setdefault(warning, []).append(index)

    def _note_changes(self, indices: list[int]) -> None:
        """The notebook names whose objects (or objects within them) a copy changed in place."""
        ends, names = self.inputs.memo_ends, self.inputs.names
        for memo_index in indices:
            owner = next((name for name, end in zip(names, ends, strict=False) if memo_index < end), None)
            if owner is not None:
                self.changed[owner] = None

    def note(self, *, final: bool = False) -> None:
        """Tell the view the counts when they changed (at most every ``_NOTE_EVERY`` s, and at the end)."""
        done = sum(1 for e in self.elements if e.values is not None)
        failed = sum(1 for e in self.elements if e.error is not None)
        running = sum(1 for e in self.elements if e.started is not None and e.values is None
                      and e.error is None and not e.cancelled)
        counts = f"{done}/{len(self.elements)} done, {running} running, {failed} failed" \
            + (f" — {self._waiting}" if self._waiting else "")
        now = time.monotonic()
        if counts != self._counts and (final or now - self._noted >= _NOTE_EVERY):
            self._counts, self._noted = counts, now
            self.on_event(NoteEvent(kind="note", note=counts))


# ------------------------------------------------------------------ results
@wire.gc_paused()
def _inject(handler: _Handler, namespace: MutableMapping[str, Any], clock: Stopwatch) -> CellOutcome:
    """One list per bound name into the namespace (``None`` where an element failed); the notes, once each."""
    elements, spec = handler.elements, handler.spec
    succeeded = [e for e in elements if e.values is not None]
    bound = list(dict.fromkeys(name for e in succeeded for name in e.values or {}))
    results = [e.result for e in elements]
    outcome = CellOutcome(value=NO_VALUE if all(r is NO_VALUE for r in results)
                          else [None if r is NO_VALUE else r for r in results])
    outcome.warnings = [f"{warning} ({_indices(indices)})" for warning, indices in handler.warnings.items()]
    if handler.changed:
        outcome.warnings.append(f"{spec.label}: the copies' in-place changes to {', '.join(handler.changed)} "
                                "cannot be merged and were dropped (bind a new name to bring a result back)")
    for warning in outcome.warnings:
        print(f"modal_gpu: {warning}", file=sys.stderr)
    for name in bound:
        namespace[name] = [None if e.values is None else e.values.get(name) for e in elements]
    outcome.injected = bound
    deleted = set.intersection(*(set(e.deleted) for e in succeeded)) - set(bound) if succeeded else set()
    for name in sorted(deleted):
        namespace.pop(name, None)
        outcome.deleted.append(name)
    clock.lap("inject")
    outcome.timings = clock.laps
    return outcome


def _indices(indices: list[int]) -> str:
    """'element [3]', 'elements [0], [2], …': which elements a line is about, up to eight of them."""
    return (f"element{'s' if len(indices) > 1 else ''} "
            f"{', '.join(f'[{i}]' for i in sorted(indices)[:8])}{', …' if len(indices) > 8 else ''}")


def _failure(handler: _Handler, code: str) -> MapFailed | None:
    """One exception for every failed element, or None when none failed.

    Our own failures (``ModalMagicError``: a worker that died, a backend that failed) are a sentence each: they
    were raised in a lane's thread, and Python's display of the group would show that thread's frames."""
    elements, spec = handler.elements, handler.spec
    failed = [(index, e) for index, e in enumerate(elements) if e.error is not None]
    if not failed:
        return None
    cancelled = [index for index, e in enumerate(elements) if e.values is None and e.error is None]
    message = (f"{len(failed)} of {len(elements)} elements failed; their slots hold None"
               + (f", as do those of the {len(cancelled)} cancelled" if cancelled else "")
               + ("" if len(failed) + len(cancelled) == len(elements) else "; the others' results are in the notebook"))
    exceptions: list[Exception] = []
    lines = []
    for index, element in failed:
        exc = element.error
        assert isinstance(exc, Exception)
        if isinstance(exc, ModalMagicError):
            exc.__traceback__, exc.__cause__, exc.__suppress_context__ = None, None, True
        shown = "'…'" if credential_reason(spec.name, element.value) else _short(element.value)  # sent with --in
        where = f"[{index}] {spec.name}={shown}"
        line = _cell_line(exc, code)
        if hasattr(exc, "add_note"):  # what Python's own display of the group shows under each exception
            exc.add_note(f"in element {where}{line}")
        exceptions.append(exc)
        lines.append(f"  {where}: {type(exc).__name__}: {_first_line(exc)}{line}")
    if cancelled:
        why = "--map-fail-fast" if spec.fail_fast else "after the backend failed" if handler.fatal else "stopped"
        lines.append(f"  cancelled ({why}): "
                     + ", ".join(f"[{i}]" for i in cancelled))
    group = MapFailed(message, exceptions)
    group.indices, group.lines = tuple(i for i, _ in failed), tuple(lines)
    return group


_CELL_FRAME = re.compile(r"^(?:Cell In ?\[\d+\]|Input In \[\d+\])", re.MULTILINE)
"""The header of the cell's frame: ``Cell In[3], line 4`` (IPython >= 8.6) or ``Input In [3], in <module>``."""
_ARROW = re.compile(r"^-+>\s*(\d+)", re.MULTILINE)
"""The line the frame stopped at, marked the same way by every IPython: ``----> 4     raise …``."""


def _cell_line(exc: BaseException, code: str) -> str:
    """' — line 4: raise ValueError(x)': where the cell stopped, from its remote traceback; '' when unknown."""
    render = getattr(exc, "_render_traceback_", None)
    text = "\n".join(render()) if callable(render) and not hasattr(type(exc), "_render_traceback_") else ""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    frames = list(_CELL_FRAME.finditer(text))
    arrow = _ARROW.search(text, frames[-1].end()) if frames else None
    if arrow is None:
        return ""
    number = int(arrow.group(1))
    lines = code.splitlines()
    return f" — line {number}: {lines[number - 1].strip()}" if 0 < number <= len(lines) else f" — line {number}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _short(value: Any) -> str:
    """An element as the failure lines name it: a short repr."""
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = 30
    shortener.maxlist = shortener.maxtuple = shortener.maxdict = 4
    return shortener.repr(value)


def _element_times(elements: list[_Element]) -> dict[str, float]:
    """Per-element seconds for the summary: each one for a few elements, the spread for many."""
    ran = [(index, e.elapsed) for index, e in enumerate(elements) if e.started is not None]
    if len(ran) <= _LISTED_TIMES:
        return {f"[{index}]": elapsed for index, elapsed in ran}
    slowest = max(ran, key=lambda item: item[1])
    return {"fastest element": min(t for _, t in ran), "median element": statistics.median(t for _, t in ran),
            f"slowest [{slowest[0]}]": slowest[1]}

