"""The stages every cell goes through on the notebook's side, shared by the single cell and ``--map``.

``prepare`` is everything that can fail before anything runs: the cell is
analysed, the inputs it reads are chosen and checked (secrets held back, the
size limit) and packed, and the request is built. ``rebuild`` turns what the
worker sent back into objects here — the names the cell bound, its value or
its exception, and the lines to warn with — without touching the namespace:
the caller decides what reaches it (``driver``: one cell's values;
``fanout``: one list per name, once every element is in).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, MutableMapping
from dataclasses import dataclass
from typing import Any

from IPython.core.inputtransformer2 import TransformerManager

from ..errors import RemoteError, UsageProblem, with_remote_traceback
from ..protocol import ERROR, INPUTS, PLAIN, RESIDENT, SLOTS, VALUE, ErrorInfo, Resources, ResultFrame, RunRequest
from ..wire import handles, process_state
from ..wire import payload as wire
from ..wire.identity import LocalObjects
from . import analysis
from .cell import NO_VALUE, CellOptions
from .extension import current
from .options import check_device
from .secrets import hold_back
from .session import Crossing
from .view.progress import format_bytes

__all__ = ["Prepared", "prepare", "Rebuilt", "rebuild", "Stopwatch", "one_line"]

_transformer = TransformerManager()

PersistentLoad = Callable[[Any], Any]


class Stopwatch:
    """Seconds spent per stage, for the outcome (the view times the parts it shows from the events)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage], self._last = now - self._last, now


def one_line(exc: BaseException, width: int = 200) -> str:
    """An exception as the view's summary names it: its type and the first line of its message, shortened at
    a word (a cut mid-word read as a typo), ``…`` saying that more was said."""
    lines = str(exc).strip().splitlines()
    text = type(exc).__name__ + (f": {lines[0]}" if lines else "")
    if len(text) <= width and len(lines) <= 1:
        return text
    cut = text[:width - 1]
    if len(text) > width and " " in cut:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,;:") + " …"


# ------------------------------------------------------------------ before it runs
@dataclass
class Prepared:
    """A cell ready to go: the names it sends, its crossing (the packed inputs), its request and resources, and
    what the cell sees of this machine's files (for whatever else goes to it)."""

    names: list[str]
    crossing: Crossing
    request: RunRequest
    resources: Resources
    disks: wire.Disks


def prepare(source: str, namespace: MutableMapping[str, Any], options: CellOptions, hidden: Collection[str],
            header: str | None, clock: Stopwatch, *, shared_disk: bool, execution_count: int | None = None,
            colors: str = PLAIN) -> Prepared:
    """Analyse the cell and pack what it reads: everything that can fail before anything runs.

    ``header`` (the cell's ``%%`` line) goes above the code as a comment, so line numbers match the cell shown.
    ``shared_disk``: whether the backend's cells see this machine's files (``Backend.shares_disk``), which
    decides how memmaps and open files go, both ways.
    """
    check_device(options.device)
    found = _analyze(source, 0 if header is None else 1)
    names = _input_names(found, namespace, options, hidden)
    # A name the cell deletes without reading still has to exist there for `del` to work.
    placeholders = tuple(n for n in found.deletes if n in namespace and n not in names)
    clock.lap("analyse")

    hold_back(names, namespace, options.inputs)
    env = _forwarded_env(options.env)
    disks = wire.Disks(shared_disk, sender="the notebook", receiver="the cell")
    try:
        crossing = current().session.crossing({name: namespace[name] for name in names}, fresh=options.fresh,
                                              disks=disks)
    except wire.PackError as exc:
        raise UsageProblem(str(exc)) from None
    _check_size(crossing.inputs, options.max_input_bytes)
    clock.lap("pack")
    request = RunRequest(code=source if header is None else f"# {header}\n{source}", outputs=options.outputs,
                         placeholders=placeholders, env=env, state=process_state.capture(),
                         execution_count=execution_count, colors=colors, shared_disk=shared_disk)
    resources = Resources(gpu=options.gpu, cpu=options.cpu, memory_mib=options.memory_mib, pip=options.pip,
                          idle=options.idle, prices=options.prices)
    return Prepared(names, crossing, request, resources, disks)


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


def _analyze(source: str, line_offset: int) -> analysis.CellAnalysis:
    if not source.strip():
        raise UsageProblem("the cell is empty: there is nothing to run remotely.")
    try:
        return analysis.analyze(_transformer.transform_cell(source))
    except SyntaxError as exc:
        if exc.lineno is not None:
            exc.lineno += line_offset
        raise exc from None


def _input_names(found: analysis.CellAnalysis, namespace: MutableMapping[str, Any],
                 options: CellOptions, hidden: Collection[str]) -> list[str]:
    missing = [n for n in options.inputs if n not in namespace]
    if missing:
        raise UsageProblem(f"--in names {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                           "not defined in the notebook.")
    detected = [n for n in found.reads if n in namespace and n not in hidden]
    return list(dict.fromkeys([*detected, *options.inputs]))


# ------------------------------------------------------------------ after it ran
@dataclass
class Rebuilt:
    """One result, rebuilt here; nothing of it has reached the namespace yet."""

    values: dict[str, Any]
    """The names the cell bound (the payload's ``SLOTS`` taken out)."""
    value: Any
    """The last expression's value (``NO_VALUE``: none; a repr stand-in when it could not travel)."""
    error: BaseException | None
    """The cell's own exception, with its remote traceback."""
    payload: wire.Payload
    objects: LocalObjects
    """The notebook's objects the results name, with the cell's in-place changes to them, not applied yet."""
    warnings: list[str]
    """A line for each name that could not come back, the payload's notes and the objects' notes."""
    partial: bool = False
    """Some names could not be rebuilt here: the remote side recorded values this side never got."""


def rebuild(result: ResultFrame, inputs: wire.Payload, *, device: str, main: wire.MainGlobals | None,
            resident: Callable[[PersistentLoad], PersistentLoad] | None = None) -> Rebuilt:
    """Rebuild a cell's ``result`` (sent against ``inputs``), its tensors on ``device``.

    ``resident`` wraps the references' loader where the session takes part (``Crossing.persistent_load``).
    A name that cannot be rebuilt here is left out and named in ``warnings``; the others are rebuilt.
    """
    assert result.payload is not None, "a result that ran"
    payload = wire.Payload.from_meta(result.payload, result.buffers)
    objects = LocalObjects(inputs.memo)
    load = objects.persistent_load if resident is None else resident(objects.persistent_load)
    failed: dict[str, str] = {}  # one value that cannot be rebuilt here must not drop the others
    values = wire.unpack(payload, map_location=device, main=main, persistent_load=load, failed=failed)
    # The inputs' and resident tensors' slots only carried in-place updates, applied by whoever unpacked them.
    values.pop(INPUTS, None)
    values.pop(RESIDENT, None)
    error = _rebuild_error(result.error, values.pop(ERROR, None))
    value = values.pop(VALUE, NO_VALUE)
    if value is NO_VALUE and result.value_repr is not None:
        value = _ReprOnly(result.value_repr)
    warnings = [f"{name!r} was not brought back: {why}" for name, why in payload.skipped.items()
                if name not in SLOTS]
    warnings += [f"{name!r} was not brought back: it ran, but {why}; the other names came back"
                 for name, why in failed.items() if name not in SLOTS]
    warnings += [f"{name!r} stays where the cell ran, as a remote handle: it could not come back ({value.why}); "
                 "later %%modal_gpu cells use it as it is" for name, value in values.items()
                 if isinstance(value, handles.RemoteHandle) and not value.gone]
    for slot in (INPUTS, RESIDENT):  # no name to blame, but in-place changes to the notebook's objects are lost
        if slot in failed:
            warnings.append(f"what the cell changed in place in the notebook's objects was not brought "
                            f"back: {failed[slot]}")
    warnings += list(payload.notes) + objects.notes
    return Rebuilt(values, value, error, payload, objects, warnings, partial=bool(failed))


def _rebuild_error(info: ErrorInfo | None, exc: BaseException | None) -> BaseException | None:
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
