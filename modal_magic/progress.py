"""Show where a remote cell is: stages, bytes, elapsed time, and what arrived.

The backends and the driver emit events; a view only listens. ``Progress``
keeps the state (one stage after another: analyse → pack → start → upload →
run → download → unpack → inject); two views render it:

* ``WidgetView`` — an ipywidgets line with a bar, updated only by setting
  traits, published with a ``text/plain`` fallback so that a notebook run
  headless (nbconvert, papermill) stores a readable summary, not widget JSON;
* ``TextView`` — plain lines for terminal IPython or where ipywidgets is
  missing: one when a worker or container is started, one summary at the end.
"""

from __future__ import annotations

import html
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Progress", "TextView", "WidgetView", "make_view", "format_bytes", "STAGES"]

STAGES = ("analyse", "pack", "start", "upload", "run", "download", "unpack", "inject")
_LABELS = {"analyse": "analysing", "pack": "packing", "start": "starting", "upload": "uploading",
           "run": "running", "download": "downloading", "unpack": "unpacking", "inject": "injecting"}


def format_bytes(n: float) -> str:
    """1536 → '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""  # pragma: no cover


@dataclass
class Progress:
    """The state of one cell, as far as the events have told."""

    stage: str = "analyse"
    started: float = field(default_factory=time.monotonic)
    stage_started: float = field(default_factory=time.monotonic)
    where: str = ""
    warm: bool | None = None
    note: str = ""
    """What the current stage is waiting for, in words (building the image, a new container…)."""
    variables: list[str] = field(default_factory=list)
    sent_bytes: int = 0
    received_bytes: int = 0
    expected_bytes: int = 0
    done: bool = False
    ok: bool = True
    error: str = ""
    injected: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def update(self, event: dict[str, Any]) -> bool:
        """Take one event; True when something a view shows has changed."""
        kind = event.get("kind")
        if kind == "stage":
            self.stage, self.stage_started = event["stage"], time.monotonic()
            self.where = event.get("where", self.where)
            self.warm = event.get("warm", self.warm)
            self.note = event.get("note", "")
            if event["stage"] == "pack":
                self.variables, self.sent_bytes = list(event["variables"]), event["bytes"]
            if event["stage"] == "unpack" or (event["stage"] == "download" and "bytes" in event):
                self.received_bytes = event["bytes"]
            self.expected_bytes = event.get("of", 0)
            return True
        if kind == "note":  # news within the stage (a fan-out's counts)
            self.note = event["note"]
            return True
        if kind == "done":
            self.done, self.ok = True, event["ok"]
            self.error = event.get("error", "")
            self.injected = list(event.get("injected", ()))
            self.timings = dict(event.get("timings", {}))
            return True
        return kind == "tick"

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def headline(self) -> str:
        """One line: where it runs and what it is doing (or how it ended)."""
        where = self.where or "…"
        if self.done:
            verdict = "done" if self.ok else "failed"
            return f"modal_gpu: {verdict} in {self.elapsed:.2f} s on {where}"
        detail = {"pack": f" {len(self.variables)} variable(s), {format_bytes(self.sent_bytes)}",
                  "start": " (warm)" if self.warm else " (cold start)" if self.warm is False else "",
                  "upload": f" {format_bytes(self.sent_bytes)}",
                  "download": f" {format_bytes(self.received_bytes)} of {format_bytes(self.expected_bytes)}"
                  if self.expected_bytes else "",
                  "unpack": f" {format_bytes(self.received_bytes)}"}.get(self.stage, "")
        if self.stage == "run":
            detail = f" {time.monotonic() - self.stage_started:.1f} s" + (f" — {self.note}" if self.note else "")
        elif self.note:
            detail += f" — {self.note} {time.monotonic() - self.stage_started:.0f} s"
        return f"modal_gpu: {_LABELS.get(self.stage, self.stage)}{detail} · {where} · {self.elapsed:.1f} s"

    def summary_lines(self) -> list[str]:
        """What the cell sent and brought back, and where the time went."""
        lines = [self.headline()]
        if self.variables:
            lines.append(f"  sent: {', '.join(self.variables)} ({format_bytes(self.sent_bytes)})")
        if self.injected:
            lines.append(f"  came back: {'; '.join(self.injected)}")
        if self.error:
            lines.append(f"  error: {self.error}")
        if self.timings:
            lines.append("  time: " + ", ".join(f"{stage} {seconds * 1e3:.0f} ms"
                                                for stage, seconds in self.timings.items()))
        return lines


class TextView:
    """Plain text: a line when a worker/container starts cold, the summary at the end."""

    def __init__(self, write: Callable[[str], Any] | None = None) -> None:
        self.progress = Progress()
        self._noted = ""
        self._write = write or (lambda text: (sys.stdout.write(text), sys.stdout.flush()))

    def __call__(self, event: dict[str, Any]) -> None:
        self.progress.update(event)
        note = event.get("note", "") if event.get("kind") in ("stage", "note") else ""
        if event.get("kind") == "stage" and event["stage"] == "start" and event.get("warm") is False:
            self._write(f"modal_gpu: starting {event.get('where', 'the backend')}{f' — {note}' if note else ''}…\n")
        elif note and note != self._noted:
            self._write(f"modal_gpu: {note}…\n")  # what it is waiting for (a container, a re-run)
        self._noted = note or self._noted
        if event.get("kind") == "done":
            self._write("\n".join(self.progress.summary_lines()) + "\n")


class WidgetView:
    """An ipywidgets line (label + bar) that collapses to a summary when the cell ends."""

    def __init__(self) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        self.progress = Progress()
        self.label = widgets.HTML(value=html.escape(self.progress.headline()))
        self.bar = widgets.FloatProgress(value=0, min=0, max=len(STAGES), bar_style="info",
                                         layout=widgets.Layout(width="160px"))
        self.details = widgets.HTML(value="")
        self.box = widgets.HBox([self.bar, self.label, self.details])
        self._handle = display(self._bundle(), raw=True, display_id=True)

    def _bundle(self) -> dict[str, Any]:
        return {
            "text/plain": "\n".join(self.progress.summary_lines() if self.progress.done
                                    else [self.progress.headline()]),
            "application/vnd.jupyter.widget-view+json": {
                "model_id": self.box.model_id, "version_major": 2, "version_minor": 0},
        }

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.progress.update(event):
            return
        progress = self.progress
        if progress.stage in STAGES:
            self.bar.value = STAGES.index(progress.stage) + (1 if progress.done else 0.5)
        self.label.value = html.escape(progress.headline())
        if progress.done:  # collapse to one line; the summary opens under it
            self.bar.value = len(STAGES)
            self.bar.bar_style = "success" if progress.ok else "danger"
            lines = progress.summary_lines()
            self.label.value = ""
            self.details.value = (f"<details><summary>{html.escape(lines[0])}</summary>"
                                  + "<br>".join(html.escape(line) for line in lines[1:]) + "</details>")
            self._handle.update(self._bundle(), raw=True)  # the text fallback shows the summary too


def make_view(quiet: bool) -> Callable[[dict[str, Any]], None]:
    """The widget view in a kernel with ipywidgets, the text view elsewhere, nothing when quiet.

    The view appears only once the backend starts: a cell refused before that
    (bad flags, an unpicklable input) shows its one-line error and nothing else.
    """
    if quiet:
        return lambda event: None
    held: list[dict[str, Any]] = []
    view: list[Callable[[dict[str, Any]], None]] = []

    def listen(event: dict[str, Any]) -> None:
        if view:
            view[0](event)
        elif event.get("kind") == "stage" and event["stage"] == "start":
            view.append(_new_view())
            for earlier in held:
                view[0](earlier)
            view[0](event)
        else:
            held.append(event)

    return listen


def _new_view() -> Callable[[dict[str, Any]], None]:
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return TextView()
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:  # terminal IPython, plain scripts
        return TextView()
    return WidgetView()
