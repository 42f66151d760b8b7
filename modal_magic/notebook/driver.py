"""Drive one cell through its stages: analysis → payload → backend → results → namespace.

This is the public Python API beside the magic (``modal_magic.run_cell``): a
script or a test hands it a cell's source and a namespace dict; the magic is a
thin face over it. A ``--map`` cell goes to ``fanout.run_mapped``; both are
written over ``stages.py``, where every decision about *what* crosses the
boundary is made; the backends only move bytes and events.

The namespace is touched only at the very end, and only after every returned
value has been rebuilt: an error anywhere before that leaves it as it was. When
the cell's own code raised, the assignments it made before raising are
injected first and then the original exception is raised, as a local cell
would leave things.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Collection, Iterator, MutableMapping
from typing import Any

from ..errors import OUT_OF_FILES, ModalMagicError, ResultsLost, out_of_files
from ..protocol import INPUTS, PLAIN, RESIDENT, DoneEvent, Event, ResultFrame, StageEvent
from ..wire import payload as wire
from ..wire import process_state
from .cell import NO_VALUE, CellOptions, CellOutcome
from .extension import current
from .fanout import run_mapped
from .interrupts import Landing
from .output import show_event
from .session import Crossing
from .stages import Stopwatch, one_line, prepare, rebuild

__all__ = ["CellOptions", "CellOutcome", "run_cell", "NO_VALUE"]


def run_cell(
    source: str,
    namespace: MutableMapping[str, Any],
    options: CellOptions = CellOptions(),
    *,
    on_event: Callable[[Event], None] = show_event,
    hidden: Collection[str] = (),
    execution_count: int | None = None,
    colors: str = PLAIN,
    header: str | None = None,
) -> CellOutcome:
    """Run ``source`` (IPython cell syntax) remotely against ``namespace``, updating it.

    ``hidden`` names are never sent (IPython's own ``In``/``get_ipython``...).
    ``header`` is the cell's ``%%`` line: it is kept (as a comment) above the
    body so that line numbers in errors match the cell the user sees.
    ``execution_count`` is the cell's prompt number, shown as ``Cell In[n]`` in
    its tracebacks; ``colors`` is their colour scheme, as IPython 8 or 9 names
    it (an unknown name gives plain text). A cell with ``--map``
    (``options.mapping``) goes to ``fanout.run_mapped``.

    Raises the cell's own exception, ``SyntaxError`` as compiling would,
    ``UsageProblem`` for requests that cannot run, and the ``ModalMagicError``
    subclasses when the machinery fails. An interrupt is a ``KeyboardInterrupt``: where the cell was, when
    its own code was interrupted; else one line saying where it landed, and what the backend said of it.
    """
    landing = Landing(on_event)
    with current().cell_running(), files_to_spare():  # a %modal_stop from another thread waits for the cell's end
        try:
            if options.mapping is not None:  # --map: one copy per element, results as lists
                return run_mapped(source, namespace, options, on_event=landing, hidden=hidden,
                                  execution_count=execution_count, colors=colors, header=header)
            return _run_one(source, namespace, options, on_event=landing, hidden=hidden,
                            execution_count=execution_count, colors=colors, header=header)
        except KeyboardInterrupt as exc:
            raise landing.told(exc) from None


@contextlib.contextmanager
def files_to_spare() -> Iterator[None]:
    """A cell that met the kernel's limit on open files (``EMFILE``: an import while packing, the worker's socket, a
    temporary file) says so in one sentence, not in a traceback through our internals.

    The remote side stops vouching for what it holds (``Session.resync``): the results may have gone out and been
    lost on the way; the next cell, once files are freed, runs as ever.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in OUT_OF_FILES or isinstance(exc, ModalMagicError):
            raise
        current().session.resync = True
        raise out_of_files(exc) from None


def _run_one(source: str, namespace: MutableMapping[str, Any], options: CellOptions, *,
             on_event: Callable[[Event], None], hidden: Collection[str], execution_count: int | None,
             colors: str, header: str | None) -> CellOutcome:
    """``run_cell`` for one cell (no ``--map``)."""
    clock = Stopwatch()
    on_event(StageEvent(kind="stage", stage="analyse"))
    backend = current().backends.get(options.backend)
    cell = prepare(source, namespace, options, hidden, header, clock, shared_disk=backend.shares_disk,
                   execution_count=execution_count, colors=colors)
    crossing = cell.crossing
    on_event(StageEvent(kind="stage", stage="pack", variables=cell.names, bytes=crossing.inputs.nbytes))
    try:
        result = crossing.run(backend, cell.request, cell.resources, on_event, options.timeout)
        clock.lap("remote")
        on_event(StageEvent(kind="stage", stage="unpack", bytes=result.nbytes))
        outcome = _finish(result, crossing, namespace, options, clock)
    except BaseException as exc:  # the view shows how it ended; the exception goes on
        on_event(DoneEvent(kind="done", ok=False, error=one_line(exc)))
        raise
    outcome.sent = cell.names
    # A cell that failed part-way still bound what it bound before the error (injected, as a local cell
    # would have): the summary names those too.
    done = DoneEvent(kind="done", ok=outcome.error is None)
    if outcome.error is not None:
        done["error"] = one_line(outcome.error)
    done["injected"] = {name: namespace[name] for name in outcome.injected
                        if name in namespace and not name.startswith("_")}
    done["deleted"] = outcome.deleted
    on_event(done)
    if outcome.error is not None:
        raise outcome.error
    return outcome


@wire.gc_paused()
def _finish(result: ResultFrame, crossing: Crossing, namespace: MutableMapping[str, Any],
            options: CellOptions, clock: Stopwatch) -> CellOutcome:
    """Rebuild everything the runner sent, then (and only then) change the namespace; the cell's own
    exception, if it raised one, is the outcome's ``error`` (raised by the caller once the view has it)."""
    main = wire.MainGlobals(namespace) if isinstance(namespace, dict) else None
    try:
        rebuilt = rebuild(result, crossing.inputs, device=options.device, main=main,
                          resident=crossing.persistent_load)
    except wire.UnpackError as exc:
        crossing.lost()
        raise ResultsLost(f"the cell ran, but its results could not be rebuilt here — {exc}. "
                          "Nothing was changed in the notebook.") from None
    clock.lap("unpack")

    outcome = CellOutcome(value=rebuilt.value, timings=clock.laps)
    outcome.warnings = rebuilt.warnings + crossing.notes
    for slot in (INPUTS, RESIDENT):  # no name to blame, but in-place changes to the notebook's objects are lost
        if slot in rebuilt.payload.skipped:
            outcome.warnings.append(f"what the cell changed in place in the notebook's objects was not brought "
                                    f"back: {rebuilt.payload.skipped[slot]}")
    for warning in outcome.warnings:
        print(f"modal_gpu: {warning}", file=sys.stderr)

    rebuilt.objects.apply()
    crossing.apply()
    if rebuilt.partial:  # the session's copies of what did not arrive must not be vouched for
        crossing.lost()
    namespace.update(rebuilt.values)
    outcome.injected = list(rebuilt.values)
    for name in result.deleted:
        namespace.pop(name, None)
        outcome.deleted.append(name)
    process_state.apply(result.state)  # what the cell did to random states and torch defaults
    clock.lap("inject")
    outcome.error = rebuilt.error
    return outcome
