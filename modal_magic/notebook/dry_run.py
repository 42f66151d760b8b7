"""``%%modal_gpu --dry-run``: what running the cell would do, as lines; nothing runs, is sent or changes.

The cell goes through the same preparation as a real run (analysis, secrets held back, packing, the
size limit), so a plan fails where the run would. Where and how it would run is in the chosen
backend's own words (``Backend.describe``, ``Backend.image``): nothing here names a backend.
"""

from __future__ import annotations

from collections.abc import Collection, MutableMapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..backends import registry
from .cell import CellOptions
from .extension import current
from .stages import Stopwatch, prepare
from .view.progress import format_bytes

if TYPE_CHECKING:
    from ..backends.base import Description
    from .fanout import MapSpec

__all__ = ["plan_cell"]


def plan_cell(source: str, namespace: MutableMapping[str, Any], options: CellOptions, *,
              hidden: Collection[str] = ()) -> list[str]:
    """The plan's lines: the backend and why, its resources, the image, the inputs and their sizes."""
    name, why = registry.choose(options.backend, planning=True)
    where = registry.backend_class(name).describe(gpu=options.gpu)
    mapping = options.mapping
    if mapping is not None:  # as run_mapped packs it: the mapped name is not an input, the copies run fresh
        options, hidden = replace(options, fresh=True), {*hidden, mapping.name}
    cls, extension = registry.backend_class(name), current()
    live = extension.backends.live(name)
    with extension.session.table.trial():  # the keys it mints are the run's to mint
        cell = prepare(source, namespace, options, hidden, None, Stopwatch(), shared_disk=cls.shares_disk)
        cell.crossing.pack_for(cls.hashes_buffers if live is None else live.hashes_buffers)
        if mapping is None and (live is None or not live.running):
            cell.crossing.pack_for_a_new_worker()  # a new one asks for the values the notebook mirrors, and gets them
    names, inputs = cell.names, cell.crossing.inputs
    sent = ", ".join(f"{n} ({format_bytes(inputs.sizes[n])})" for n in names) or "nothing"
    return [
        "modal_gpu --dry-run: nothing was run, sent or changed",
        f"  backend: {name} ({why})",
        f"  gpu: {' then '.join(options.gpu) or 'none (a CPU container)'}"
        + (f" ({where.gpu_note})" if options.gpu and where.gpu_note else ""),
        f"  cpu: {options.cpu or 'default'}, "
        f"memory: {f'{options.memory_mib} MiB' if options.memory_mib else 'default'}, "
        f"timeout: {f'{options.timeout:g} s' if options.timeout else where.no_timeout}",
        "  image: " + "; ".join(_image(name, options.pip)),
        f"  inputs: {sent} — {format_bytes(inputs.nbytes)} in all",
        *([] if mapping is None else [_plan_mapping(mapping, namespace, where)]),
    ]


def _image(name: str, pip: tuple[str, ...]) -> list[str]:
    """The chosen backend's image; for one that runs in this kernel's environment, the image the first backend
    that builds one would use: the plan shows what a container would get, as the gpu line does."""
    for candidate in (name, *registry.known()):
        lines = registry.backend_class(candidate).image(pip)
        if lines is not None:
            return lines
    return ["none: this kernel's own environment"]


def _plan_mapping(mapping: MapSpec, namespace: MutableMapping[str, Any], where: Description) -> str:
    """The ``--map`` line: what the copies run over, without evaluating anything."""
    if mapping.expression is not None:
        over = f"{mapping.expression} (not evaluated by --dry-run: it is notebook code)"
    else:
        value = namespace.get(mapping.name)
        sized = f", {len(value)} elements" if isinstance(value, (list, tuple, range, dict, set, str)) else ""
        over = f"the notebook's {mapping.name} ({type(value).__name__}{sized})"
    cap = f"at most {mapping.max_parallel} at once, " if mapping.max_parallel else ""
    failure = "the first failure cancels the rest" if mapping.fail_fast else "a failed element lets the others finish"
    return f"  map: one copy per element of {over}, {mapping.name} bound to it; {cap}on {where.map_plan}; {failure}"
