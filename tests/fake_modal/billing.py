"""What Modal would bill, and the scale-down window that decides most of it.

Modal bills a container for its whole life, busy or idle: from its start until
it exits. An idle container (no input for its function's ``scaledown_window``,
Modal's default 60 s) is stopped; until then it waits, billed, for the next
input. This module keeps, per container, its function's window, its GPU, and
its seconds alive, busy and idle, for the report (``billing``: one row per
container; ``billed_seconds_by_gpu``: the totals), and stops a container that
has been idle for its window.

The window is read as Modal's server would: a ``with_options`` variant's
``task_idle_timeout_secs`` when it sets one, else the class's (the client
sends both the deprecated field and ``autoscaler_settings.scaledown_window``).
A container's idle time starts once it is ready for inputs (its first
``FunctionGetInputs``, after ``@enter``), as Modal's does; one with inputs
waiting for its function is not idle. ``Config.scaledown_scale`` shortens
every window by that factor, so a test of a 300 s window takes seconds; the
report gives both the window asked for and the one applied.

Not as strict as Modal: the clock is polled every ``_POLL`` s, and a stopped
container is killed at once (Modal sends SIGTERM and runs ``@exit`` first).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from .apps import Function
from .containers import Container, Workers
from .server import State

_POLL = 0.05
MODAL_DEFAULT_SCALEDOWN = 60.0  # seconds, when neither the class nor the variant says


def scaledown_window(function: Function) -> float:
    """The idle seconds a container of ``function`` (a variant or a class) waits before it is stopped."""
    options = function.options
    if options is not None and options.HasField("task_idle_timeout_secs") and options.task_idle_timeout_secs:
        return float(options.task_idle_timeout_secs)
    definition = function.root.definition
    if definition is None:
        return MODAL_DEFAULT_SCALEDOWN
    return float(definition.autoscaler_settings.scaledown_window or definition.task_idle_timeout_secs
                 or MODAL_DEFAULT_SCALEDOWN)


@dataclass
class _Meter:
    container: Container
    window: float
    busy: float = 0.0
    busy_since: float | None = None
    idle: float = 0.0
    idle_since: float | None = None
    ended: float | None = None

    def row(self, now: float, scale: float) -> dict[str, Any]:
        container = self.container
        end = self.ended if self.ended is not None else now
        busy = self.busy + (end - self.busy_since if self.busy_since is not None else 0.0)
        idle = self.idle + (end - self.idle_since if self.idle_since is not None else 0.0)
        return {"id": container.id, "gpu": container.function.gpus, "scaledown_window": self.window,
                "scaledown_applied": self.window * scale, "seconds": end - container.started,
                "busy_seconds": busy, "idle_seconds": idle, "alive": container.alive,
                "stopped": container.kill_reason or ("" if container.alive else f"exit {container.exit_code}")}


class Billing:
    """The meter of every container the workers started, and the scale-down that ends idle ones."""

    def __init__(self, state: State, workers: Workers) -> None:
        self.state, self.workers = state, workers
        self.meters: dict[str, _Meter] = {}

    def report(self) -> dict[str, Any]:
        now, scale = time.monotonic(), self.state.config.scaledown_scale
        rows = [meter.row(now, scale) for meter in self.meters.values()]
        by_gpu: dict[str, float] = {}
        for row in rows:
            key = ",".join(row["gpu"]) or "CPU"
            by_gpu[key] = by_gpu.get(key, 0.0) + row["seconds"]
        return {"billing": rows, "billed_seconds_by_gpu": by_gpu}

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(_POLL)
            try:
                self.poll(time.monotonic())
            except Exception:  # noqa: BLE001 - a bug of the stand-in: reported, and the meter goes on
                import traceback

                self.state.errors.append(f"billing: {traceback.format_exc()}")

    def poll(self, now: float) -> None:
        changed = False
        for container in self.workers.containers:
            meter = self.meters.get(container.id)
            if meter is None:
                meter = self.meters[container.id] = _Meter(container, scaledown_window(container.function))
                changed = True
            if meter.ended is not None:
                continue
            if not container.alive:
                self._settle(meter, now)
                meter.ended = now
                changed = True
                continue
            waiting = bool([c for c in self.workers.pending.get(container.function.id, []) if c.result is None])
            if container.current is not None or waiting or container.ready is None:
                if meter.idle_since is not None:
                    meter.idle += now - meter.idle_since
                    meter.idle_since = None
                if container.current is not None and meter.busy_since is None:
                    meter.busy_since = now
                continue
            if meter.busy_since is not None:
                meter.busy += now - meter.busy_since
                meter.busy_since = None
            if meter.idle_since is None:
                meter.idle_since = now
            if now - meter.idle_since >= meter.window * self.state.config.scaledown_scale:
                container.kill(f"scaled down after {meter.window:g} s idle")
        if changed:
            self.state.save()

    @staticmethod
    def _settle(meter: _Meter, now: float) -> None:
        if meter.busy_since is not None:
            meter.busy += now - meter.busy_since
            meter.busy_since = None
        if meter.idle_since is not None:
            meter.idle += now - meter.idle_since
            meter.idle_since = None
