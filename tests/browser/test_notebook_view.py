"""The notebook as a person sees it, in a real browser: JupyterLab headless, Debian's Chromium, local worker.

One notebook is run once, as a user would run it (module fixture ``seen``):
a slow printing cell, a cell that raises, a cell interrupted mid-sleep; then
it is saved, its kernel shut down and the notebook opened again, in the light
theme and then the dark one; finally it is exported with nbconvert and the
export opened offline. What the page showed at each step is recorded (and
screenshotted, into ``MODAL_MAGIC_SCREENSHOTS`` or a temporary folder); each
test below checks one part of it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest

from .lab import Lab, chromium_path, notebook7_missing, skip_reason, start_lab

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=f"browser tests: {skip_reason()}")

CELLS = [
    "%load_ext modal_magic\nimport torch\nx = torch.ones(3, 4)",
    # 1: slow and printing, so the live widget is seen updating while the output streams under it
    "%%modal_gpu --backend local\nimport time\nfor step in range(8):\n    print(f'step {step}', flush=True)\n"
    "    time.sleep(0.4)\ny = x * 2",
    # 2: raises on its line 3
    "%%modal_gpu --backend local\nz = y + 1\nw = z[10]",
    # 3: interrupted while it sleeps on its line 4
    "%%modal_gpu --backend local\nimport time\nprint('sleeping', flush=True)\ntime.sleep(120)\nafter = True",
]
NAME = "view.ipynb"
_WAIT = 60_000  # ms: the longest any one step may take (a first worker start on a loaded machine)
_OURS = ("modal_magic", "driver.py", "local.py", "select.select", "site-packages")

_KERNEL_IDLE = """() => {
    const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return Boolean(k && k.status === 'idle' && w.content.widgets.length > 0);
}"""
_RUN = """(index) => {
    const notebook = window.jupyterapp.shell.currentWidget.content;
    notebook.activeCellIndex = index;
    window.jupyterapp.commands.execute('notebook:run-cell');
}"""
_CELL_DONE = """(index) => {
    const w = window.jupyterapp.shell.currentWidget;
    return w.content.widgets[index].model.executionCount !== null && w.sessionContext.session.kernel.status === 'idle';
}"""
# Records what is added to a cell's outputs from now on: each element's classes and text, to count re-renders.
_WATCH = """(index) => {
    const area = document.querySelectorAll('.jp-Notebook .jp-Cell')[index].querySelector('.jp-OutputArea');
    window.__added = [];
    new MutationObserver(records => {
        for (const record of records) for (const node of record.addedNodes) if (node.nodeType === 1)
            window.__added.push({cls: String(node.className), text: node.textContent.slice(0, 120),
                                 summaries: node.querySelectorAll('.modal-gpu-summary').length
                                            + (node.matches('.modal-gpu-summary') ? 1 : 0)});
    }).observe(area, {childList: true, subtree: true});
}"""
_STYLE = """(selector) => {
    const el = document.querySelector(selector);
    if (!el) return {color: '', font: '', ui: '', background: ''};
    const style = getComputedStyle(el);
    return {color: style.color, font: style.fontFamily,
            ui: getComputedStyle(document.documentElement).getPropertyValue('--jp-ui-font-family'),
            background: getComputedStyle(document.querySelector('.jp-Notebook') || document.body).backgroundColor};
}"""


@dataclass
class Seen:
    """What the page showed at each step."""

    live_lines: list[str] = field(default_factory=list)
    """The slow cell's progress line, read twice while it ran."""
    live_output: str = ""
    live_has_widget: bool = False
    added_at_end: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[int, str] = field(default_factory=dict)
    """Each cell's output text once it finished."""
    summaries: dict[int, int] = field(default_factory=dict)
    widgets_left: int = 0
    reopened: dict[int, str] = field(default_factory=dict)
    reopened_text: str = ""
    light: dict[str, str] = field(default_factory=dict)
    dark: dict[str, str] = field(default_factory=dict)
    notebook7_text: str | None = None
    """The saved notebook's page in Notebook 7 (None where Notebook 7 is not installed)."""
    notebook7_summaries: int = 0
    export_html: str = ""
    export_text: str = ""
    export_style: dict[str, str] = field(default_factory=dict)
    shots: list[Path] = field(default_factory=list)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where the screenshots go: ``MODAL_MAGIC_SCREENSHOTS`` when set (to keep them), else a temporary folder."""
    named = os.environ.get("MODAL_MAGIC_SCREENSHOTS")
    folder = Path(named) if named else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("lab")
    notebook = nbformat.v4.new_notebook()
    notebook.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    nbformat.write(notebook, root / NAME)
    server = start_lab(root, root / "lab.log")
    yield server
    server.shut_down_kernels()
    server.stop()


@pytest.fixture(scope="module")
def seen(lab: Lab, shots: Path) -> Iterator[Seen]:
    from playwright.sync_api import sync_playwright

    record = Seen()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})

            def shoot(name: str) -> None:
                record.shots.append(shots / f"{len(record.shots) + 1}-{name}.png")
                page.screenshot(path=str(record.shots[-1]), full_page=True)

            _open(page, lab)
            _run_cells(page, record, shoot)
            page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
            page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=_WAIT)
            lab.shut_down_kernels()
            page.close()

            page = browser.new_page(viewport={"width": 1100, "height": 900})
            _open(page, lab)
            page.wait_for_timeout(1500)  # widget renderers, if any output still had one, would have failed by now
            record.reopened = {i: _output(page, i) for i in range(1, len(CELLS))}
            record.reopened_text = page.inner_text(".jp-Notebook")
            record.light = page.evaluate(_STYLE, ".modal-gpu-summary")
            shoot("reopened-light")
            page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', "
                          "{theme: 'JupyterLab Dark'})")
            page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=_WAIT)
            page.wait_for_timeout(1000)
            record.dark = page.evaluate(_STYLE, ".modal-gpu-summary")
            shoot("reopened-dark")
            page.close()

            if notebook7_missing() is None:
                _reopen_in_notebook7(lab, record, browser.new_page(viewport={"width": 1100, "height": 900}), shots)

            _export(lab, record, browser.new_page(viewport={"width": 1100, "height": 900}), shots)
        finally:
            browser.close()
    yield record


def _open(page: Any, lab: Lab) -> None:
    page.goto(lab.page_url(NAME))
    page.wait_for_function(_KERNEL_IDLE, timeout=_WAIT)


def _output(page: Any, index: int) -> str:
    return page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-OutputArea").inner_text()


def _run_cells(page: Any, record: Seen, shoot: Any) -> None:
    """Run the cells as a user would, reading the page while the slow one runs and interrupting the last."""
    page.evaluate(_RUN, 0)
    page.wait_for_function(_CELL_DONE, arg=0, timeout=_WAIT)

    slow = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-OutputArea")
    page.evaluate(_RUN, 1)
    slow.get_by_text("step 1").wait_for(timeout=_WAIT)
    page.evaluate(_WATCH, 1)
    record.live_has_widget = slow.locator(".widget-hbox progress").count() == 1
    record.live_lines.append(slow.locator(".widget-hbox").inner_text())
    page.wait_for_timeout(800)
    record.live_lines.append(slow.locator(".widget-hbox").inner_text())
    record.live_output = slow.inner_text()
    shoot("slow-cell-running")
    page.wait_for_function(_CELL_DONE, arg=1, timeout=_WAIT)
    page.wait_for_timeout(300)  # a second re-render, if any, would come within this
    record.added_at_end = page.evaluate("() => window.__added")
    shoot("slow-cell-done")

    page.evaluate(_RUN, 2)
    page.wait_for_function(_CELL_DONE, arg=2, timeout=_WAIT)
    shoot("error")

    interrupted = page.locator(".jp-Notebook .jp-Cell").nth(3).locator(".jp-OutputArea")
    page.evaluate(_RUN, 3)
    interrupted.get_by_text("sleeping").wait_for(timeout=_WAIT)
    page.wait_for_timeout(300)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:interrupt-kernel')")
    page.wait_for_function(_CELL_DONE, arg=3, timeout=_WAIT)
    shoot("interrupted")

    record.outputs = {i: _output(page, i) for i in range(1, len(CELLS))}
    record.summaries = {i: page.locator(".jp-Notebook .jp-Cell").nth(i).locator(".modal-gpu-summary").count()
                        for i in range(1, len(CELLS))}
    record.widgets_left = page.locator(".jp-Notebook .widget-hbox").count()


def _reopen_in_notebook7(lab: Lab, record: Seen, page: Any, shots: Path) -> None:
    """The saved notebook opened in Notebook 7, served from the same folder by a server of its own."""
    server = start_lab(lab.root, lab.root / "notebook7.log", app="notebook")
    try:
        page.goto(server.page_url(NAME))
        page.wait_for_function("(n) => document.querySelectorAll('.jp-Notebook .jp-Cell .jp-OutputArea-output')"
                               ".length >= n", arg=len(CELLS) - 1, timeout=_WAIT)
        page.wait_for_timeout(1500)  # widget renderers, if any output still had one, would have failed by now
        record.notebook7_text = page.inner_text(".jp-Notebook")
        record.notebook7_summaries = page.locator(".jp-Notebook .modal-gpu-summary").count()
        record.shots.append(shots / f"{len(record.shots) + 1}-reopened-notebook7.png")
        page.screenshot(path=str(record.shots[-1]), full_page=True)
    finally:
        page.close()
        server.shut_down_kernels()
        server.stop()


def _export(lab: Lab, record: Seen, page: Any, shots: Path) -> None:
    """nbconvert's HTML of the saved notebook, opened with the network cut off (no widget script from a CDN)."""
    subprocess.run([sys.executable, "-m", "nbconvert", "--to", "html", str(lab.root / NAME),
                    "--output-dir", str(shots)], check=True, capture_output=True, timeout=120)
    exported = shots / NAME.replace(".ipynb", ".html")
    record.export_html = exported.read_text()
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
    page.goto(exported.as_uri())
    record.export_text = page.inner_text("body")
    record.export_style = page.evaluate(_STYLE, ".modal-gpu-summary")
    record.shots.append(shots / f"{len(record.shots) + 1}-export-offline.png")
    page.screenshot(path=str(record.shots[-1]), full_page=True)


# ----------------------------------------------------------------------------------------------- tests
def test_the_widget_updates_while_a_slow_cell_prints(seen: Seen) -> None:
    assert seen.live_has_widget, seen.live_output
    first, second = seen.live_lines
    assert first.startswith("modal_gpu: running") and second.startswith("modal_gpu: running")
    assert first != second  # its time moved on
    assert "step 0" in seen.live_output and "step 7" not in seen.live_output  # printed while it ran


def test_a_finished_cell_becomes_its_static_summary(seen: Seen) -> None:
    assert seen.summaries == {1: 1, 2: 1, 3: 1} and seen.widgets_left == 0
    summary = seen.outputs[1]
    assert re.search(r"modal_gpu: done in \d+\.\d\d s on local worker", summary), summary
    assert "sent: x (" in summary and "came back:" in summary and "y Tensor[3, 4] float32 cpu" in summary
    took = re.search(r"took: (.*)", summary).group(1)
    total = float(re.search(r"done in (\d+\.\d+) s", summary).group(1))
    assert sum(map(float, re.findall(r"(\d+\.\d+) s", took))) == pytest.approx(total)
    assert "running" in took


def test_a_cell_ends_in_one_render_without_a_widget_loading_again(seen: Seen) -> None:
    again = [added for added in seen.added_at_end if "Loading widget" in added["text"] or "widget" in added["cls"]]
    assert again == [], seen.added_at_end
    assert sum(added["summaries"] for added in seen.added_at_end) == 1, seen.added_at_end


def test_an_error_names_its_cell_and_line(seen: Seen) -> None:
    shown = seen.outputs[2]
    assert "IndexError" in shown and _stopped_at(shown, cell=3, line=3), shown
    assert "w = z[10]" in shown and "modal_gpu: failed in" in shown
    assert not [ours for ours in _OURS if ours in shown], shown


def test_an_interrupt_shows_the_cells_line_and_none_of_ours(seen: Seen) -> None:
    shown = seen.outputs[3]
    assert "KeyboardInterrupt" in shown and _stopped_at(shown, cell=4, line=4), shown
    assert "time.sleep(120)" in shown and "modal_gpu: interrupted" in shown
    assert not [ours for ours in _OURS if ours in shown], shown


def test_a_reopened_notebook_shows_each_summary_and_no_widget_error(seen: Seen) -> None:
    assert "Error displaying widget" not in seen.reopened_text
    assert "modal_gpu: done in" in seen.reopened[1] and "came back:" in seen.reopened[1]
    assert "modal_gpu: failed in" in seen.reopened[2] and "modal_gpu: interrupted" in seen.reopened[3]


def test_notebook_7_shows_each_saved_summary_and_no_widget_error(seen: Seen) -> None:
    if seen.notebook7_text is None:
        pytest.skip(f"browser tests: {notebook7_missing()}")
    assert "Error displaying widget" not in seen.notebook7_text
    assert seen.notebook7_summaries == 3, seen.notebook7_text
    for verdict in ("modal_gpu: done in", "modal_gpu: failed in", "modal_gpu: interrupted"):
        assert verdict in seen.notebook7_text


def test_the_summary_follows_the_theme_and_the_pages_font(seen: Seen) -> None:
    assert _luminance(seen.light["color"]) < 0.3 and _luminance(seen.dark["color"]) > 0.6, (seen.light, seen.dark)
    assert _luminance(seen.dark["background"]) < 0.3
    assert _first_font(seen.light["font"]) == _first_font(seen.light["ui"])  # Lab's own UI font, not a serif


def test_an_html_export_shows_the_summary_offline(seen: Seen) -> None:
    assert 'class="modal-gpu-summary"' in seen.export_html
    assert "application/vnd.jupyter.widget-view+json" not in seen.export_html
    assert "modal_gpu: done in" in seen.export_text and "came back:" in seen.export_text
    assert _first_font(seen.export_style["font"]) == _first_font(seen.export_style["ui"])


def _luminance(css: str) -> float:
    """'rgb(224, 224, 224)' → 0.88 (0 black, 1 white); nothing to measure (no element) → NaN, which fails both ways."""
    if not css:
        return float("nan")
    red, green, blue = (int(c) for c in re.findall(r"\d+", css)[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255


def _first_font(family: str) -> str:
    return family.split(",")[0].strip().strip("\"'").lower()


def _stopped_at(shown: str, *, cell: int, line: int) -> bool:
    """The traceback names the cell and marks the line: ``Cell In[3], line 3`` (IPython >= 8.6), or
    ``Input In [3], in <module>`` with the arrow at the line (IPython 8.0 to 8.5)."""
    return bool(re.search(rf"Cell In\s*\[{cell}\], line {line}", shown)
                or re.search(rf"Input In \[{cell}\], in <module>[\s\S]*?\n-+> {line} ", shown))
