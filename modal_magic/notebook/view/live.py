"""The views of a cell's progress: a live widget that ends as static HTML, or plain text lines.

* ``WidgetView`` — while the cell runs, a widget (an activity or fraction
  meter and the live line) updated only by setting traits; when it ends, one
  display update replaces the widget with the static summary (HTML plus
  ``text/plain``) and the widget is closed. A saved notebook then holds no
  widget reference that could show "model not found" once its kernel is gone,
  and the cell re-renders once, not twice.
* ``TextView`` — plain lines for terminal IPython or where ipywidgets is
  missing: one when a worker or container is started cold or waits for
  something, one summary at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from ...protocol import Event
from .html import line_html, meter_html, summary_html
from .progress import Progress

__all__ = ["TextView", "WidgetView", "make_view"]

View = Callable[[Event, float], None]
"""A view takes each event with the moment (``time.monotonic``) it arrived."""
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


class TextView:
    """Plain text: a line when a worker/container starts cold, for each wait of a cold start and for each piece of
    news (a re-run, a re-send), the summary at the end.

    A warm cell shows only its summary: its brief wait for the warm container is no news in a terminal.
    """

    def __init__(self, write: Callable[[str], Any] | None = None) -> None:
        self.progress = Progress()
        self._noted = ""
        self._out = write or (lambda text: (sys.stdout.write(text), sys.stdout.flush()))
        self._mid_line = False
        """The cell's output so far ends without a newline: our next line must not be glued to it."""

    def _write(self, text: str) -> None:
        self._out(f"\n{text}" if self._mid_line else text)
        self._mid_line = False

    def __call__(self, event: Event, now: float | None = None) -> None:
        self.progress.update(event, now)
        if event["kind"] == "stream" and event["text"]:
            self._mid_line = not event["text"].endswith("\n")
        if event["kind"] == "stage":
            note = event.get("note", "")
            cold = self.progress.warm is False
            # News: a cold start and its waits; any note outside starting (a re-run after a preemption, values
            # sent again to a recycled session). A warm cell's brief wait for its container is not.
            news = note and note != self._noted and (cold or event["stage"] != "start")
            if event["stage"] == "start" and event.get("warm") is False or news:
                self._write(f"modal_gpu: {self.progress.doing()}…\n")
            self._noted = note or self._noted
        if event["kind"] == "done":
            self._write("\n".join(self.progress.summary_lines()) + "\n")


class WidgetView:
    """A live widget while the cell runs; the static summary in its place once it ends."""

    def __init__(self) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        self.progress = Progress()
        self.meter = widgets.HTML(value=meter_html(self.progress))
        self.line = widgets.HTML(value=line_html(self.progress))
        self.box = widgets.HBox([self.meter, self.line], layout=widgets.Layout(align_items="center"))
        # The HTML beside the widget is what a page without the widget manager shows (nbval's comparison,
        # a notebook saved mid-run); a frontend with widgets prefers the widget.
        self._handle = display({"text/plain": self.progress.headline(), "text/html": line_html(self.progress),
                                WIDGET_MIME: {"model_id": self.box.model_id, "version_major": 2,
                                              "version_minor": 0}},
                               raw=True, display_id=True)

    def __call__(self, event: Event, now: float | None = None) -> None:
        if not self.progress.update(event, now):
            return
        if self.progress.done:
            self._finish()
            return
        # Traits only send a message when their value changes: the meter's animation is not restarted by ticks.
        self.meter.value = meter_html(self.progress)
        self.line.value = line_html(self.progress)

    def _finish(self) -> None:
        """One update turns the output into the static summary; then the widget's models go."""
        self._handle.update({"text/plain": "\n".join(self.progress.summary_lines()),
                             "text/html": summary_html(self.progress)}, raw=True)
        for widget in (self.box, self.meter, self.line):
            widget.close()


def make_view(quiet: bool) -> Callable[[Event], None]:
    """The widget view in a kernel with ipywidgets, the text view elsewhere, nothing when quiet.

    The view appears only once the backend starts: a cell refused before that
    (bad flags, an unpicklable input) shows its one-line error and nothing else.
    Each event is stamped when it arrives, so the events held until then still
    count the time they took.
    """
    if quiet:
        return lambda event: None
    held: list[tuple[Event, float]] = []
    view: list[View] = []

    def listen(event: Event) -> None:
        now = time.monotonic()
        if view:
            view[0](event, now)
        elif event["kind"] == "stage" and event["stage"] == "start":
            view.append(_new_view())
            for earlier, when in held:
                view[0](earlier, when)
            view[0](event, now)
        else:
            held.append((event, now))

    return listen


def _new_view() -> View:
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return TextView()
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:  # terminal IPython, plain scripts
        return TextView()
    return WidgetView()
