"""Drive one cell through its stages: analysis → payload → backend → results → namespace.

This is the public Python API beside the magic (``modal_magic.run_cell``): a
script or a test hands it a cell's source and a namespace dict; the magic is a
thin face over it. Every decision about *what* crosses the boundary is made
here; the backends only move bytes and events.

The namespace is touched only at the very end, and only after every returned
value has been rebuilt: an error anywhere before that leaves it as it was. When
the cell's own code raised, the assignments it made before raising are
injected first and then the original exception is raised, as a local cell
would leave things.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Collection, MutableMapping

from IPython.core.inputtransformer2 import TransformerManager

from . import analysis as cell
from ..wire import process_state
from ..wire import payload as wire
from ..errors import RemoteError, ResultsLost, UsageProblem, with_remote_traceback
from ..wire.identity import LocalObjects
from .extension import current
from .options import check_device, session_default
from .output import show_event
from .view.progress import format_bytes
from .secrets import credential_reason
from ..worker.runner import ERROR, INPUTS, PLAIN, RESIDENT, VALUE
from .session import Crossing

if TYPE_CHECKING:
    from .fanout import MapSpec

__all__ = ["CellOptions", "CellOutcome", "run_cell", "NO_VALUE"]

NO_VALUE: Any = type("NoValue", (), {"__repr__": lambda self: "NO_VALUE", "__bool__": lambda self: False})()
"""The ``value`` of a cell that does not end in a displayed expression."""

_transformer = TransformerManager()


@dataclass(frozen=True)
class CellOptions:
    """What the user asked for (the magic's flags; unset, the defaults of ``options.SETTINGS``)."""

    backend: str = session_default("backend")
    inputs: tuple[str, ...] = ()
    """Extra names to send, on top of the ones detected (``--in``)."""
    outputs: tuple[str, ...] | None = None
    """Only these names come back (``--out``); ``None`` = every name the cell binds."""
    device: str = session_default("device")
    """Where returned tensors land: ``cpu``, ``auto`` (CUDA if this machine has it) or ``cuda``."""
    timeout: float | None = None
    quiet: bool = False
    env: tuple[str, ...] = ()
    """Environment variables to set for the cell there (none are forwarded otherwise)."""
    max_input_bytes: int | None = session_default("max_input")
    """Refuse to send more than this (a typo'd 40 GB upload is better caught here)."""
    gpu: tuple[str, ...] = session_default("gpu")
    """Modal GPU types in order of preference, normalised (``modal_plan.parse_gpu``); empty: a CPU container."""
    cpu: float | None = None
    memory_mib: int | None = None
    pip: tuple[str, ...] = ()
    """Extra packages for the container image."""
    fresh: bool = False
    """Run without the remote-resident session (``--fresh``): every input goes as a value, nothing stays."""
    mapping: "MapSpec | None" = None
    """``--map``: run one copy of the cell per element (``fanout.py``)."""


@dataclass
class CellOutcome:
    """What happened, for callers that want more than the namespace change."""

    value: Any = NO_VALUE
    injected: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error: BaseException | None = None
    """The cell's own exception (``run_cell`` raises it; what the cell bound before it is injected)."""


def run_cell(
    source: str,
    namespace: MutableMapping[str, Any],
    options: CellOptions = CellOptions(),
    *,
    on_event: Callable[[dict[str, Any]], None] = show_event,
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
    it (an unknown name gives plain text).

    Raises the cell's own exception, ``SyntaxError`` as compiling would,
    ``UsageProblem`` for requests that cannot run, and the ``ModalMagicError``
    subclasses when the machinery fails.
    """
    if options.mapping is not None:  # --map: one copy per element, results as lists
        from .fanout import run_mapped

        return run_mapped(source, namespace, options, on_event=on_event, hidden=hidden,
                          execution_count=execution_count, colors=colors, header=header)
    clock = _Stopwatch()
    on_event({"kind": "stage", "stage": "analyse"})
    names, crossing, request = _prepare(source, namespace, options, hidden, header, clock)
    on_event({"kind": "stage", "stage": "pack", "variables": names, "bytes": crossing.inputs.nbytes})
    request.update(execution_count=execution_count, colors=colors, state=process_state.capture())
    try:
        meta, buffers = crossing.run(current().backends.get(options.backend), request, on_event, options.timeout)
        clock.lap("remote")
        if meta.get("interrupted"):  # as a local interrupt: the cell's own line, the namespace untouched
            raise with_remote_traceback(KeyboardInterrupt(), meta["error"]["traceback"])
        on_event({"kind": "stage", "stage": "unpack", "bytes": sum(memoryview(b).nbytes for b in buffers)})
        outcome = _finish(meta, buffers, crossing, namespace, options, clock)
    except BaseException as exc:  # the view shows how it ended; the exception goes on
        on_event({"kind": "done", "ok": False, "error": _one_line(exc)})
        raise
    outcome.sent = names
    # A cell that failed part-way still bound what it bound before the error (injected, as a local cell
    # would have): the summary names those too.
    on_event({"kind": "done", "ok": outcome.error is None,
              **({} if outcome.error is None else {"error": _one_line(outcome.error)}),
              "injected": {name: namespace[name] for name in outcome.injected
                           if name in namespace and not name.startswith("_")},
              "deleted": outcome.deleted})
    if outcome.error is not None:
        raise outcome.error
    return outcome


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


def _prepare(source: str, namespace: MutableMapping[str, Any], options: CellOptions, hidden: Collection[str],
             header: str | None, clock: "_Stopwatch") -> tuple[list[str], Crossing, dict[str, Any]]:
    """Analyse the cell and pack what it reads: everything that can fail before anything runs."""
    check_device(options.device)
    analysis = _analyze(source, 0 if header is None else 1)
    names = _input_names(analysis, namespace, options, hidden)
    # A name the cell deletes without reading still has to exist there for `del` to work.
    placeholders = [n for n in analysis.deletes if n in namespace and n not in names]
    clock.lap("analyse")

    _hold_back_secrets(names, namespace, options.inputs)
    env = _forwarded_env(options.env)
    try:
        crossing = current().session.crossing({name: namespace[name] for name in names}, fresh=options.fresh)
    except wire.PackError as exc:
        raise UsageProblem(str(exc)) from None
    _check_size(crossing.inputs, options.max_input_bytes)
    clock.lap("pack")
    request = {
        "kind": "run",
        "code": source if header is None else f"# {header}\n{source}",
        "outputs": None if options.outputs is None else list(options.outputs),
        "placeholders": placeholders,
        "env": env,
        "resources": {"gpu": list(options.gpu), "cpu": options.cpu, "memory": options.memory_mib,
                      "pip": list(options.pip)},
    }
    return names, crossing, request


@wire.gc_paused()
def _finish(meta: dict[str, Any], buffers: list[Any], crossing: Crossing, namespace: MutableMapping[str, Any],
            options: CellOptions, clock: "_Stopwatch") -> CellOutcome:
    """Rebuild everything the runner sent, then (and only then) change the namespace; the cell's own
    exception, if it raised one, is the outcome's ``error`` (raised by the caller once the view has it)."""
    payload = wire.Payload.from_meta(meta["payload"], buffers)
    ours = LocalObjects(crossing.inputs.memo)
    main = wire.MainGlobals(namespace) if isinstance(namespace, dict) else None
    try:
        values = wire.unpack(payload, map_location=options.device, main=main,
                             persistent_load=crossing.persistent_load(ours.persistent_load))
    except wire.UnpackError as exc:
        crossing.lost()
        raise ResultsLost(f"the cell ran, but its results could not be rebuilt here — {exc}. "
                          "Nothing was changed in the notebook.") from None
    clock.lap("unpack")

    error, value = _take_slots(values, meta)
    outcome = CellOutcome(value=value, timings=clock.laps)
    outcome.warnings = _not_brought_back(payload) + ours.notes + crossing.notes
    for slot in (INPUTS, RESIDENT):  # no name to blame, but in-place changes to the notebook's objects are lost
        if slot in payload.skipped:
            outcome.warnings.append(f"what the cell changed in place in the notebook's objects was not brought "
                                    f"back: {payload.skipped[slot]}")
    for warning in outcome.warnings:
        print(f"modal_gpu: {warning}", file=sys.stderr)

    ours.apply()
    crossing.apply()
    namespace.update(values)
    outcome.injected = list(values)
    for name in meta.get("deleted", ()):
        namespace.pop(name, None)
        outcome.deleted.append(name)
    process_state.apply(meta.get("state") or {})  # what the cell did to random states and torch defaults
    clock.lap("inject")
    outcome.error = error
    return outcome


_SLOTS = (VALUE, ERROR, INPUTS, RESIDENT)
"""The runner's payload slots that are not names the cell bound."""


def _take_slots(values: dict[str, Any], meta: dict[str, Any]) -> tuple[BaseException | None, Any]:
    """Take the runner's slots out of ``values`` (left: the names the cell bound): its error and its value.

    The inputs' and resident tensors' slots only carried in-place updates, applied by whoever unpacked them."""
    values.pop(INPUTS, None)
    values.pop(RESIDENT, None)
    error = _rebuild_error(meta.get("error"), values.pop(ERROR, None))
    value = values.pop(VALUE, NO_VALUE)
    if value is NO_VALUE and meta.get("value_repr") is not None:
        value = _ReprOnly(meta["value_repr"])
    return error, value


def _not_brought_back(payload: wire.Payload) -> list[str]:
    """A line for each name whose value could not come back, and the payload's own notes."""
    return [f"{name!r} was not brought back: {why}" for name, why in payload.skipped.items()
            if name not in _SLOTS] + list(payload.notes)


class _Stopwatch:
    """Seconds spent per stage, for the outcome (the view times the parts it shows from the events)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage], self._last = now - self._last, now


def _hold_back_secrets(names: list[str], namespace: MutableMapping[str, Any], named: Collection[str]) -> None:
    held = {n: why for n in names if n not in named and (why := credential_reason(n, namespace[n]))}
    if held:
        listed = "; ".join(f"{n!r} ({why})" for n, why in held.items())
        raise UsageProblem(f"held back {listed}: nothing was sent and the cell did not run. "
                           f"If the cell needs it, name it: --in {','.join(held)}")


def _forwarded_env(names: Collection[str]) -> dict[str, str]:
    missing = [n for n in names if n not in os.environ]
    if missing:
        raise UsageProblem(f"--env names {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                           "not set in this kernel's environment.")
    return {n: os.environ[n] for n in names}


def _check_size(inputs: wire.Payload, limit: int | None) -> None:
    if limit is None or inputs.nbytes <= limit:
        return
    biggest = sorted(inputs.sizes.items(), key=lambda item: -item[1])[:5]
    listed = ", ".join(f"{n} ({format_bytes(size)})" for n, size in biggest)
    raise UsageProblem(f"the inputs come to {format_bytes(inputs.nbytes)}, over the limit of {format_bytes(limit)}: "
                       f"{listed}. Nothing was sent. Raise the limit with --max-input SIZE (e.g. 20GB), "
                       "or leave the big variables out of the cell.")


def _analyze(source: str, line_offset: int) -> cell.CellAnalysis:
    if not source.strip():
        raise UsageProblem("the cell is empty: there is nothing to run remotely.")
    try:
        return cell.analyze(_transformer.transform_cell(source))
    except SyntaxError as exc:
        if exc.lineno is not None:
            exc.lineno += line_offset
        raise exc from None


def _input_names(analysis: cell.CellAnalysis, namespace: MutableMapping[str, Any],
                 options: CellOptions, hidden: Collection[str]) -> list[str]:
    missing = [n for n in options.inputs if n not in namespace]
    if missing:
        raise UsageProblem(f"--in names {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                           "not defined in the notebook.")
    detected = [n for n in analysis.reads if n in namespace and n not in hidden]
    return list(dict.fromkeys([*detected, *options.inputs]))


def _rebuild_error(info: dict[str, Any] | None, exc: BaseException | None) -> BaseException | None:
    if info is None:
        return None
    if not isinstance(exc, BaseException):
        exc = RemoteError(info["type"], info["message"])
    return with_remote_traceback(exc, info.get("traceback") or [])


class _ReprOnly:
    """The last expression's value could not travel; show its remote repr instead."""

    def __init__(self, text: str) -> None:
        self._text = text

    def __repr__(self) -> str:
        return self._text
