"""``%modal_resident``: what the remote session keeps for this notebook, by variable name, and its memory.

Asks each backend that is running (never starts one) for its store's report
(``Backend.resident_report``), and names its keys after the notebook variables
whose tensors mirror them: a tensor itself, or a module's, optimizer's or
container's tensors one level down.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..protocol import StoreReport, StoreRow
from ..wire import handles
from ..wire.resident import is_resident_kind
from .session import Session
from .view.progress import format_bytes

if TYPE_CHECKING:
    from .extension import Extension

__all__ = ["resident_report"]


def resident_report(namespace: Mapping[str, Any], extension: Extension) -> list[str]:
    """The lines ``%modal_resident`` prints, for ``extension``'s backends and session."""
    session = extension.session
    # None: it stopped since ``running`` looked, only a fan-out's pool is up (it keeps nothing), or its container
    # is not known to be up (idle past its window: its values went with it), and asking would start one
    answers = [(backend.name, backend.resident_report()) for backend in extension.backends.running()]
    reports = [(name, report) for name, report in answers if report is not None]
    if not reports:
        return ["modal_gpu: no backend is running, so nothing is resident remotely "
                f"(this notebook mirrors {len(session.table)} tensor(s) that would be sent as values)."
                ] + [f"modal_gpu: the {name} backend was not asked: nothing of it that keeps values is known to be "
                     "up, and asking could start it." for name, report in answers if report is None] \
            + _handles(namespace)
    names = _names_by_key(namespace, session)
    return [line for where, report in reports for line in _describe(where, report, names)] + _handles(namespace)


def _handles(namespace: Mapping[str, Any]) -> list[str]:
    """The notebook's remote handles: values that stayed where their cell ran (``wire/handles.py``)."""
    held = [(name, value) for name, value in namespace.items()
            if isinstance(value, handles.RemoteHandle) and not name.startswith("_")]
    if not held:
        return []
    return [f"modal_gpu: {len(held)} remote handle(s), values that could not come back and stay where their cell "
            "ran (later %%modal_gpu cells use them):",
            *(f"  {name}: {value.kind} in {value.where}{' — gone with it' if value.gone else ''} ({value.why})"
              for name, value in held)]


def _describe(where: str, report: StoreReport, names: dict[str, str]) -> list[str]:
    rows = report["rows"]
    gpu = report.get("gpu_allocated")
    rss = report.get("rss")
    lines = [f"modal_gpu: resident on the {where} backend: {len(rows)} tensor(s), "
             f"{format_bytes(report['host_bytes'])} host memory, {format_bytes(report['gpu_bytes'])} GPU memory"
             f" (the process holds {format_bytes(rss) if rss else 'unknown'} in all"
             + (f"; CUDA allocated: {format_bytes(gpu)}" if gpu is not None else "")
             + "; autograd graphs hold their saved tensors besides)"]
    by_name: dict[str, list[StoreRow]] = {}
    for row in rows:
        by_name.setdefault(names.get(row["key"], "(no notebook name: released with the next cell)"), []).append(row)
    for name, held in sorted(by_name.items(), key=lambda item: -sum(r["bytes"] for r in item[1])):
        devices = ", ".join(sorted({r["device"] for r in held}))
        graphs = [r["graph"] for r in held if r["graph"]]
        lines.append(f"  {name}: {len(held)} tensor(s), {format_bytes(sum(r['bytes'] for r in held))} on {devices}"
                     + (f", autograd graph ({graphs[0]})" if graphs else ""))
    return lines


def _names_by_key(namespace: Mapping[str, Any], session: Session) -> dict[str, str]:
    """Resident key → the notebook name that holds its tensor (the first one found)."""
    found: dict[str, str] = {}
    for name, value in namespace.items():
        if name.startswith("_"):
            continue
        for tensor in _tensors(value):
            entry = session.table.entry_of(tensor)
            if entry is not None:
                found.setdefault(entry.key, name)
    return found


def _tensors(value: Any) -> Iterator[Any]:
    """The tensors ``value`` is or holds one level down (a module's parameters and buffers, their grads)."""
    if is_resident_kind(value):
        yield value
        if value.is_leaf and value.grad is not None:
            yield value.grad
        return
    torch = sys.modules.get("torch")
    children: Any = ()
    if torch is not None and isinstance(value, torch.nn.Module):
        children = [*value.parameters(), *value.buffers()]
    elif torch is not None and isinstance(value, torch.optim.Optimizer):
        children = [t for state in value.state.values() for t in state.values()]
    elif isinstance(value, (list, tuple)):
        children = value
    elif isinstance(value, dict):
        children = value.values()
    for child in children:
        if is_resident_kind(child):
            yield child
            if child.is_leaf and child.grad is not None:
                yield child.grad
