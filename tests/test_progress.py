"""The progress views, driven by scripted event sequences stamped with made-up arrival times (no worker needed)."""

from __future__ import annotations

import re

import pytest
from IPython.core.interactiveshell import InteractiveShell

from modal_magic.notebook.view.html import meter_html, summary_html
from modal_magic.notebook.view.live import WIDGET_MIME, TextView, WidgetView
from modal_magic.notebook.view.progress import Progress, format_parts

from .conftest import published_displays

# (seconds since the cell began, event): a first cell on a cold local worker.
SCRIPT = [
    (0.000, {"kind": "stage", "stage": "analyse"}),
    (0.010, {"kind": "stage", "stage": "pack", "variables": ["x", "model"], "bytes": 3 * 2**20}),
    (0.020, {"kind": "stage", "stage": "start", "where": "local worker", "warm": False}),
    (1.520, {"kind": "stage", "stage": "upload", "bytes": 3 * 2**20, "where": "local worker (pid 42)"}),
    (1.530, {"kind": "stage", "stage": "run"}),
    (2.000, {"kind": "tick"}),
    (4.530, {"kind": "stage", "stage": "download"}),
    (4.600, {"kind": "stage", "stage": "unpack", "bytes": 2**20}),
]
DONE = (4.610, {"kind": "done", "ok": True, "injected": {"y": 1.5}, "deleted": []})
T0 = 1000.0


def feed(view, events) -> None:
    for at, event in events:
        view(event, T0 + at)


def fed(events) -> Progress:
    progress = Progress()
    for at, event in events:
        progress.update(event, T0 + at)
    return progress


def test_the_live_line_names_the_part_with_its_own_time_and_labels_the_total() -> None:
    progress = fed(SCRIPT[:3])
    progress.clock = lambda: T0 + 1.0  # read it 1 s after the cell began
    assert progress.headline() == "modal_gpu: starting local worker, cold · this step 1.0 s · cell 1.0 s"
    progress = fed(SCRIPT[:5])
    progress.clock = lambda: T0 + 2.53
    assert progress.headline() == "modal_gpu: running · this step 1.0 s · cell 2.5 s"


def test_the_worker_starting_is_starting_and_the_parts_add_up_to_the_wall_time() -> None:
    progress = fed([*SCRIPT, DONE])
    assert progress.elapsed == pytest.approx(4.61)
    assert progress.seconds() == pytest.approx({"pack": 0.02, "start": 1.5, "upload": 0.01, "run": 3.0,
                                                "download": 0.07, "unpack": 0.01})
    lines = progress.summary_lines()
    assert lines[0] == "modal_gpu: done in 4.61 s on local worker (pid 42)"
    took = lines[-1]
    assert took == ("  took: packing 0.02 s, starting 1.50 s (cold), uploading 0.01 s, running 3.00 s, "
                    "downloading 0.07 s, unpacking 0.01 s")
    assert sum(map(float, re.findall(r"(\d+\.\d+) s", took))) == pytest.approx(4.61)


def test_shown_parts_are_rounded_to_add_up_to_the_shown_total() -> None:
    # Rounded one by one these would show 0.33 + 0.33 + 0.33 = 0.99 beside a total of 1.00.
    parts = format_parts({"start": 1 / 3, "upload": 1 / 3, "run": 1 / 3}, 1.0)
    assert sum(float(p.split()[1]) for p in parts) == pytest.approx(1.0)


def test_a_part_with_bytes_of_a_total_shows_a_fraction_and_one_without_shows_activity() -> None:
    progress = fed([*SCRIPT[:5], (2.0, {"kind": "stage", "stage": "download", "bytes": 2**20, "of": 4 * 2**20})])
    assert progress.fraction() == 0.25 and "downloading 1.0 MiB of 4.0 MiB" in progress.headline()
    assert 'value="250"' in meter_html(progress)
    running = fed(SCRIPT[:5])
    assert running.fraction() is None and "value=" not in meter_html(running)  # indeterminate: no "56 %"


def test_a_note_is_said_with_its_part_and_a_rerun_counts_as_running_again() -> None:
    progress = fed([*SCRIPT[:3],
                    (0.5, {"kind": "stage", "stage": "start", "where": "Modal (H100)",
                           "note": "waiting for a container (H100)"}),
                    (3.0, {"kind": "stage", "stage": "run"}),
                    (4.0, {"kind": "stage", "stage": "run",
                           "note": "the container was restarted: the cell runs again"}),
                    (6.0, {"kind": "done", "ok": True})])
    assert progress.seconds() == pytest.approx({"pack": 0.02, "start": 2.98, "run": 3.0})


def test_text_view_prints_the_start_and_each_wait_then_a_summary() -> None:
    written: list[str] = []
    feed(TextView(written.append),
         [*SCRIPT[:3], (0.5, {"kind": "stage", "stage": "start", "note": "waiting for a container (H100)"}),
          *SCRIPT[3:], DONE])
    assert written[0] == "modal_gpu: starting local worker, cold…\n"
    assert written[1] == "modal_gpu: starting local worker, cold — waiting for a container (H100)…\n"
    assert written[2].splitlines()[1:3] == ["  sent: x, model (3.0 MiB)", "  came back: y = 1.5"]


def test_text_view_prints_news_of_a_warm_cell_but_not_its_wait_for_the_container() -> None:
    """A re-run after a preemption, or values sent again to a recycled session, is news however warm the cell."""
    written: list[str] = []
    warm = [(0.0, {"kind": "stage", "stage": "pack", "variables": ["x"], "bytes": 64}),
            (0.01, {"kind": "stage", "stage": "start", "where": "Modal (T4)", "warm": True}),
            (0.02, {"kind": "stage", "stage": "start", "note": "waiting for a container (T4)"}),
            (0.05, {"kind": "stage", "stage": "upload", "note": "the remote session was recycled"}),
            (0.06, {"kind": "stage", "stage": "run", "note": "the container was restarted"}),
            (0.09, {"kind": "done", "ok": True, "injected": {}, "deleted": []})]
    feed(TextView(written.append), warm)
    assert [line for line in written if "waiting for a container" in line] == []
    assert "the remote session was recycled" in written[0] and "the container was restarted" in written[1]
    assert written[2].startswith("modal_gpu: done")


def test_widget_view_ends_as_one_update_to_static_html_and_text_without_a_widget() -> None:
    pytest.importorskip("ipywidgets")
    with published_displays(InteractiveShell.instance()) as published:
        view = WidgetView()
        feed(view, SCRIPT)
        assert "unpacking 1.0 MiB" in view.line.value
        assert len(published) == 1 and WIDGET_MIME in published[0] and "text/html" in published[0]
        feed(view, [DONE])
    assert len(published) == 2  # one re-render at the end: the update, no trait changes before it
    last = published[-1]
    assert last["_kw"].get("update") is True and WIDGET_MIME not in last  # nothing left to say "model not found"
    assert last["text/plain"].splitlines()[1] == "  sent: x, model (3.0 MiB)"
    assert 'class="modal-gpu-summary"' in last["text/html"] and "var(--jp-ui-font-family" in last["text/html"]
    assert view.box.comm is None and view.line.comm is None  # the models are closed: the static block replaced them


def test_failure_shows_the_error_and_a_red_edge() -> None:
    progress = fed([*SCRIPT[:5], (5.0, {"kind": "done", "ok": False, "error": "ValueError: bad"})])
    block = summary_html(progress)
    assert "error:</span> ValueError: bad" in block and "--jp-error-color1" in block
    assert '<span style="white-space: nowrap">running 3.47 s</span>' in block
    assert progress.headline() == "modal_gpu: failed in 5.00 s on local worker (pid 42)"


def test_a_new_worker_imports_the_notebooks_torch_before_it_is_ready() -> None:
    """Else the first cell's torch import (a second or two) happens while the view says 'uploading'."""
    import torch  # noqa: F401 - the notebook has imported it

    from modal_magic.backends.local import LocalBackend

    backend = LocalBackend()
    try:
        backend.start()
        with open(f"/proc/{backend.pid}/cmdline", "rb") as cmdline:
            assert b"torch" in cmdline.read().split(b"\0")
    finally:
        backend.close()


def test_text_view_starts_its_summary_on_a_line_of_its_own_after_output_without_a_newline() -> None:
    written: list[str] = []
    feed(TextView(written.append), [*SCRIPT, (4.0, {"kind": "stream", "name": "stdout", "text": "no newline"}),
                                    DONE])
    assert written[-1].startswith("\nmodal_gpu: done in ")


def test_a_long_error_is_shortened_at_a_word_and_says_so() -> None:
    from modal_magic.notebook.stages import one_line

    assert one_line(KeyboardInterrupt()) == "KeyboardInterrupt"
    assert one_line(ValueError("bad value")) == "ValueError: bad value"
    shortened = one_line(ValueError("word " * 100), width=40)
    assert shortened == "ValueError: word word word word word …"
    assert one_line(RuntimeError("first line\nsecond line")) == "RuntimeError: first line …"
