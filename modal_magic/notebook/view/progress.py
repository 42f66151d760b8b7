"""Where a remote cell is and where its time went, in words every view shares.

The backends and the driver emit events; ``Progress`` turns them into one
timeline of *parts*, each a stretch of wall time under one name: packing →
starting → uploading → running → downloading → unpacking. A part begins when
the event that names it arrives and ends when the next part begins, so the
parts of a finished cell add up to its total, which is its wall time: the
live line, the summary and the text view all read the same timeline, and none
of them can call a stretch by another name.

A part that has a measure (bytes of a known total) reports it as a fraction;
one that has none reports no fraction at all: a view shows it as activity.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ...backends.modal.cost import dollars
from ...protocol import BillEvent, Event, StageEvent
from .came_back import Returned, describe_returned

__all__ = ["Progress", "format_bytes", "format_parts"]

# The parts of a cell's time, in the order they normally come (a re-run or a restart may repeat one).
_LABELS = {"pack": "packing", "start": "starting", "upload": "uploading", "run": "running",
           "download": "downloading", "unpack": "unpacking"}
_PART_OF_STAGE = {"analyse": "pack", "pack": "pack", "start": "start", "upload": "upload", "run": "run",
                  "download": "download", "unpack": "unpack", "inject": "unpack"}


def format_bytes(n: float) -> str:
    """1536 → '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""  # pragma: no cover


def format_parts(seconds: dict[str, float], total: float, said: dict[str, str] | None = None) -> list[str]:
    """'starting 0.30 s (cold)', … rounded so that the shown parts add up to the shown total.

    ``said`` adds words after a part's time (its warmth, for starting).

    Each part is rounded to hundredths by the largest-remainder rule: rounding
    each on its own could show parts that sum to 0.01 s more or less than the
    total beside them, which reads as a wrong sum.
    """
    target = round(total * 100)
    exact = {part: value * 100 for part, value in seconds.items()}
    shown = {part: int(value) for part, value in exact.items()}
    spare = target - sum(shown.values())
    for part in sorted(exact, key=lambda p: exact[p] - shown[p], reverse=True)[:max(spare, 0)]:
        shown[part] += 1
    said = said or {}
    return [f"{_LABELS.get(part, part)} {hundredths / 100:.2f} s{said.get(part, '')}"
            for part, hundredths in shown.items() if hundredths]


@dataclass
class Progress:
    """The state of one cell, as far as the events have told, stamped with when each arrived."""

    started: float = field(default_factory=time.monotonic)
    """When the first event arrived (until then, when this began listening): the first part begins then."""
    timeline: list[tuple[str, float]] = field(default_factory=list)
    """(part, when it began), in order; a part ends when the next one begins."""
    ended: float | None = None
    where: str = ""
    warm: bool | None = None
    note: str = ""
    """What the current part is waiting for, in words (building the image, a container, a re-run…)."""
    variables: list[str] = field(default_factory=list)
    sent_bytes: int = 0
    measure: tuple[int, int] | None = None
    """(bytes so far, of bytes) while the current part can say how far it is; None: no fraction to show."""
    received_bytes: int = 0
    ok: bool = True
    error: str = ""
    returned: Returned = field(default_factory=Returned)
    elements: dict[str, float] = field(default_factory=dict)
    """--map: seconds per element (or their spread), by label."""
    clock: Callable[[], float] = time.monotonic
    """What 'now' is while the cell runs (a test reads the line at a moment of its choosing)."""
    bill: Bill | None = None
    """What its Modal containers were and cost (``bill`` events; a --map's, summed); None: none told."""

    @property
    def part(self) -> str:
        return self.timeline[-1][0] if self.timeline else "pack"

    @property
    def done(self) -> bool:
        return self.ended is not None

    def update(self, event: Event, now: float | None = None) -> bool:
        """Take one event that arrived at ``now`` (monotonic; default: this moment); True when a view must redraw."""
        now = self.clock() if now is None else now
        if event["kind"] == "stage":
            self._stage(event, now)
            return True
        if event["kind"] == "note":  # news within the stage (a fan-out's counts)
            self.note = event["note"]
            return True
        if event["kind"] == "bill":
            self.bill = (self.bill or Bill()).add(event)
            return False
        if event["kind"] == "done":
            self.ended, self.ok = now, event["ok"]
            self.error = event.get("error", "").removesuffix(": ")  # an exception without a message
            self.returned = describe_returned(event.get("injected", {}))
            self.elements = dict(event.get("elements", {}))
            self.measure = None
            return True
        return event["kind"] == "tick"

    def _stage(self, event: StageEvent, now: float) -> None:
        stage = event["stage"]
        part = _PART_OF_STAGE.get(stage, stage)
        if not self.timeline:
            self.started = now
        if part != self.part or not self.timeline or event.get("note"):  # a note (a re-run, a wait) begins anew
            self.timeline.append((part, now))
        self.where = event.get("where", self.where)
        self.warm = event.get("warm", self.warm)
        self.note = event.get("note", "")
        if stage == "pack":
            self.variables, self.sent_bytes = list(event["variables"]), event["bytes"]
        elif stage == "upload" and "bytes" in event:  # what went: hashed, or sent again to a recycled session
            self.sent_bytes = event.get("of", event["bytes"])
        if stage in ("download", "unpack") and "bytes" in event:
            self.received_bytes = event["bytes"]
        self.measure = (event["bytes"], event["of"]) if event.get("of") else None

    # ------------------------------------------------------------------ time
    def now(self) -> float:
        return self.ended if self.ended is not None else self.clock()

    @property
    def elapsed(self) -> float:
        """The wall time so far (to the end, once done): the total the parts add up to."""
        return self.now() - self.started

    def seconds(self) -> dict[str, float]:
        """Wall time per part, in the order the parts first came."""
        spent: dict[str, float] = {}
        for index, (part, began) in enumerate(self.timeline):
            ends = self.timeline[index + 1][1] if index + 1 < len(self.timeline) else self.now()
            spent[part] = spent.get(part, 0.0) + ends - began
        return spent

    def part_elapsed(self) -> float:
        return self.now() - self.timeline[-1][1] if self.timeline else self.elapsed

    # ----------------------------------------------------------------- words
    def doing(self) -> str:
        """What the cell is doing now, with its measure: 'uploading 3.0 MiB', 'starting local worker (cold)'."""
        part = self.part
        detail = {
            "pack": f" {len(self.variables)} variable(s), {format_bytes(self.sent_bytes)}" if self.variables else "",
            "start": f" {self.where or 'the backend'}{self._warmth()}",
            "upload": f" {format_bytes(self.sent_bytes)}",
            "download": "",
            "unpack": f" {format_bytes(self.received_bytes)}",
        }.get(part, "")
        if self.measure is not None:
            detail = f" {format_bytes(self.measure[0])} of {format_bytes(self.measure[1])}"
        note = f" — {self.note}" if self.note else ""
        return f"{_LABELS.get(part, part)}{detail}{note}"

    def _warmth(self) -> str:
        return ", warm" if self.warm else ", cold" if self.warm is False else ""

    def headline(self) -> str:
        """One line: what it is doing, for how long (this step, and the cell so far), or how it ended."""
        if self.done:
            verdict = "done" if self.ok else "interrupted" if self.error.startswith("KeyboardInterrupt") else "failed"
            return f"modal_gpu: {verdict} in {self.elapsed:.2f} s on {self.where or 'the backend'}"
        return f"modal_gpu: {self.doing()} · this step {self.part_elapsed():.1f} s · cell {self.elapsed:.1f} s"

    def fraction(self) -> float | None:
        """How far the current part is, when it has a measure; None when it has none (shown as activity)."""
        if self.measure is None:
            return None
        so_far, of = self.measure
        return min(so_far / of, 1.0)

    def summary(self) -> dict[str, str]:
        """The summary's lines by label (sent, came back, error, time), in the order they are shown."""
        lines: dict[str, str] = {}
        if self.variables:
            lines["sent"] = f"{', '.join(self.variables)} ({format_bytes(self.sent_bytes)})"
        if self.returned.items:
            lines["came back"] = self.returned.text()
        if self.error:
            lines["error"] = self.error
        warmth = {} if self.warm is None else {"start": " (warm)" if self.warm else " (cold)"}
        parts = format_parts(self.seconds(), self.elapsed, warmth)
        if parts:
            lines["took"] = ", ".join(parts)
        if self.elements:  # --map: each element's own time, or their spread
            lines["elements"] = ", ".join(f"{label} {seconds:.2f} s" for label, seconds in self.elements.items())
        if self.bill is not None:
            lines.update(self.bill.lines())
        return lines

    def summary_lines(self) -> list[str]:
        """The summary as plain text: the headline, then one indented line per label."""
        return [self.headline(), *(f"  {label}: {text}" for label, text in self.summary().items())]


@dataclass
class Bill:
    """A cell's Modal calls, summed: the GPUs they had, their peak GPU memory, their seconds and estimated cost."""

    calls: int = 0
    gpus: dict[str, None] = field(default_factory=dict)
    """What the containers had, in words, each once, in the order met."""
    peak: int | None = None
    seconds: float = 0.0
    cost: float | None = 0.0
    total: float | None = None
    basis: str = ""
    idle: float = 0.0

    def add(self, event: BillEvent) -> Bill:
        self.calls += 1
        self.gpus[event["gpu"]] = None
        if "peak" in event:
            self.peak = max(self.peak or 0, event["peak"])
        self.seconds += event["seconds"]
        self.cost = None if self.cost is None or event["cost"] is None else self.cost + event["cost"]
        self.total, self.basis, self.idle = event["total"], event["basis"], event["idle"]
        return self

    def lines(self) -> dict[str, str]:
        """'GPU' (and its peak memory, when CUDA was used) and 'cost' (with the session's so far)."""
        peak = "" if self.peak is None else f"; peak GPU memory {format_bytes(self.peak)}"
        held = f"{self.seconds:.1f} s of its container" if self.calls == 1 else \
            f"{self.calls} calls, {self.seconds:.1f} container-seconds"
        waits = f"its container waits {self.idle:g} s idle, billed, for the next cell" if self.calls == 1 else \
            f"its containers stop after {self.idle:g} s idle"
        total = "" if self.total is None else f"; session so far ~{dollars(self.total)}"
        return {"GPU": ", ".join(self.gpus) + peak,
                "cost": f"~{dollars(self.cost)} for {held}{total} — {self.basis}; {waits} (%modal_status)"}
