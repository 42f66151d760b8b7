"""The progress view as HTML: the live meter, and the static block a finished cell leaves behind.

The static block is what a saved, reopened, exported or GitHub-rendered
notebook shows, long after the kernel that drew the live widget is gone, so
it is plain HTML with inline styles only (no stylesheet, no script, no
widget model; its class is a handle to find it by). Its colours and font are JupyterLab's theme variables, with
fallbacks for pages that do not define them, so it follows a light or dark
theme; where styles are stripped (GitHub) its structure alone still reads.
"""

from __future__ import annotations

import html

from .progress import Progress

__all__ = ["meter_html", "line_html", "summary_html"]

_FONT = ("font-family: var(--jp-ui-font-family, system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif); "
         "font-size: var(--jp-ui-font-size1, 13px); line-height: 1.5; color: var(--jp-ui-font-color1, inherit)")
_LABEL = "color: var(--jp-ui-font-color2, #616161)"
_EDGE = {True: "var(--jp-success-color1, #388e3c)", False: "var(--jp-error-color1, #d32f2f)"}
_METER = "width: 140px; height: 10px; vertical-align: middle; accent-color: var(--jp-brand-color1, #1976d2)"


def meter_html(progress: Progress) -> str:
    """A bar that shows a fraction only when the current part has a measure; otherwise it shows activity.

    A ``<progress>`` without a value is the browser's own indeterminate bar: a
    part with no measure (starting, running) must not read as "56 % done".
    """
    fraction = progress.fraction()
    if fraction is None:
        return f'<progress style="{_METER}" title="{html.escape(progress.doing())}"></progress>'
    return f'<progress style="{_METER}" max="1000" value="{round(fraction * 1000)}"></progress>'


def line_html(progress: Progress) -> str:
    """The live line: what the cell is doing, for how long, and the total so far."""
    return f'<span class="modal-gpu-line" style="{_FONT}">{html.escape(progress.headline())}</span>'


def summary_html(progress: Progress) -> str:
    """The finished cell's block: a verdict line over one labelled line each for sent, came back, error, time."""
    shown = {"came back": lambda text: _returned_html(progress), "took": _unbroken}
    rows = "".join(
        f'<div><span style="{_LABEL}">{html.escape(label)}:</span> {shown.get(label, html.escape)(text)}</div>'
        for label, text in progress.summary().items())
    return (f'<div class="modal-gpu-summary" style="{_FONT}; border-left: 3px solid {_EDGE[progress.ok]}; '
            f'padding: 2px 0 2px 8px; margin: 2px 0">'
            f'<div style="font-weight: 600">{html.escape(progress.headline())}</div>{rows}</div>')


def _unbroken(took: str) -> str:
    """Each part of 'took' on one line: a narrow output area wraps between parts, never inside '0.01 s'."""
    return ", ".join(f'<span style="white-space: nowrap">{html.escape(part)}</span>' for part in took.split(", "))


def _returned_html(progress: Progress) -> str:
    """'came back' with each described name in code type, as the text view says it."""
    returned = progress.returned
    described = ", ".join(f"<code>{html.escape(item.name)}</code> {html.escape(item.detail)}"
                          for item in returned.shown())
    return "; ".join(part for part in (described, html.escape(returned.counted())) if part)
