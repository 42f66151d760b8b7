"""The progress views, driven by scripted event sequences (no worker needed)."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell

from modal_magic.progress import STAGES, Progress, TextView, WidgetView

from .conftest import published_displays

SCRIPT = [
    {"kind": "stage", "stage": "analyse"},
    {"kind": "stage", "stage": "pack", "variables": ["x", "model"], "bytes": 3 * 2**20},
    {"kind": "stage", "stage": "start", "where": "local worker", "warm": False},
    {"kind": "stage", "stage": "upload", "bytes": 3 * 2**20, "where": "local worker (pid 42)"},
    {"kind": "stage", "stage": "run"},
    {"kind": "tick"},
    {"kind": "stage", "stage": "download"},
    {"kind": "stage", "stage": "unpack", "bytes": 2**20},
]
DONE = {"kind": "done", "ok": True, "timings": {"pack": 0.002, "remote": 1.5},
        "injected": ["y: Tensor[2, 3] float32 cpu"], "deleted": []}


def test_progress_follows_the_stages() -> None:
    progress = Progress()
    for event in SCRIPT[:3]:
        progress.update(event)
    assert progress.stage == "start" and progress.warm is False
    assert "starting (cold start) · local worker" in progress.headline()
    for event in SCRIPT[3:]:
        progress.update(event)
    assert progress.headline().startswith("modal_gpu: unpacking 1.0 MiB · local worker (pid 42)")
    progress.update(DONE)
    lines = progress.summary_lines()
    assert lines[0].startswith("modal_gpu: done in") and lines[0].endswith("on local worker (pid 42)")
    assert lines[1] == "  sent: x, model (3.0 MiB)"
    assert lines[2] == "  came back: y: Tensor[2, 3] float32 cpu"
    assert lines[3] == "  time: pack 2 ms, remote 1500 ms"


def test_text_view_prints_a_cold_start_line_and_a_summary() -> None:
    written: list[str] = []
    view = TextView(written.append)
    for event in [*SCRIPT, DONE]:
        view(event)
    assert written[0] == "modal_gpu: starting local worker…\n"
    assert written[1].splitlines()[1:] == ["  sent: x, model (3.0 MiB)", "  came back: y: Tensor[2, 3] float32 cpu",
                                           "  time: pack 2 ms, remote 1500 ms"]


def test_widget_view_traits_follow_events_and_collapse_to_a_summary() -> None:
    pytest.importorskip("ipywidgets")
    with published_displays(InteractiveShell.instance()) as published:
        view = WidgetView()
        view(SCRIPT[1])  # pack
        assert view.bar.value == STAGES.index("pack") + 0.5
        for event in SCRIPT:
            view(event)
        assert view.bar.value == STAGES.index("unpack") + 0.5
        assert "unpacking 1.0 MiB" in view.label.value
        assert view.details.value == ""
        view(DONE)
    assert view.bar.value == len(STAGES) and view.bar.bar_style == "success"
    assert view.details.value.startswith("<details><summary>modal_gpu: done in")  # one line, opens to the rest
    assert "came back: y: Tensor[2, 3] float32 cpu" in view.details.value
    first, last = published[0], published[-1]
    assert "application/vnd.jupyter.widget-view+json" in first
    assert last["text/plain"].splitlines()[1] == "  sent: x, model (3.0 MiB)"  # readable without widgets
    assert last["_kw"].get("update") is True


def test_failure_turns_the_bar_red() -> None:
    pytest.importorskip("ipywidgets")
    with published_displays(InteractiveShell.instance()):
        view = WidgetView()
        view({"kind": "done", "ok": False, "error": "ValueError: bad", "timings": {}})
    assert view.bar.bar_style == "danger" and "error: ValueError: bad" in view.details.value
