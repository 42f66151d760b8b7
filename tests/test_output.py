"""What the cell prints and displays arrives here in order, while it runs."""

from __future__ import annotations

import time

import pytest

from modal_magic import run_cell

from .conftest import published_displays, run


def test_output_events_keep_their_order_and_prints_are_whole_lines() -> None:
    events: list[dict] = []
    body = ("print('one', 2)\nfrom IPython.display import display, HTML\ndisplay(HTML('<b>x</b>'))\n"
            "import sys\nprint('oops', file=sys.stderr)\nprint('three')")
    run_cell(body, {}, on_event=events.append)
    shown = [(e["kind"], e.get("text") or e.get("data", {}).get("text/html"))
             for e in events if e["kind"] in ("stream", "display")]
    assert shown == [("stream", "one 2\n"), ("display", "<b>x</b>"), ("stream", "oops\n"), ("stream", "three\n")]


def test_output_streams_live() -> None:
    arrivals: list[tuple[float, str]] = []

    def on_event(event: dict) -> None:
        if event["kind"] == "stream":
            arrivals.append((time.monotonic(), event["text"]))

    run_cell("print('early')\nimport time\ntime.sleep(2)\nprint('late')", {}, on_event=on_event)
    ended = time.monotonic()
    early = next(t for t, text in arrivals if "early" in text)
    assert ended - early >= 1.5


def test_carriage_return_progress_is_sent_as_written(shell, capsys) -> None:
    run(shell, "%%modal_gpu --quiet\nimport sys\nfor i in range(3):\n    sys.stdout.write(f'\\rstep {i}')\nprint()")
    assert capsys.readouterr().out == "\rstep 0\rstep 1\rstep 2\n"


def test_rich_display_reaches_the_notebook(shell) -> None:
    with published_displays(shell) as published:
        assert run(shell, "%%modal_gpu --quiet\nfrom IPython.display import display, HTML\n"
                          "display(HTML('<i>hi</i>'))").success
    assert published and published[0]["text/html"] == "<i>hi</i>"


def test_matplotlib_figures_come_back_as_png(shell) -> None:
    with published_displays(shell) as published:
        assert run(shell, "%%modal_gpu --quiet\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3])").success
    png = [d for d in published if "image/png" in d]
    assert len(png) == 1
    import base64

    assert base64.b64decode(png[0]["image/png"]).startswith(b"\x89PNG")


def test_matplotlib_inline_in_a_remote_cell_works_and_figures_come_back_once(shell) -> None:
    with published_displays(shell) as published:
        result = run(shell, "%%modal_gpu --quiet\n%matplotlib inline\nimport matplotlib.pyplot as plt\n"
                            "plt.plot([1, 2, 3])\nplt.show()")
    assert result.success, result.error_in_exec  # the base shell refused it: NotImplementedError
    assert len([d for d in published if "image/png" in d]) == 1


def test_text_view_summary_in_a_terminal_shell(shell, capsys) -> None:
    shell.user_ns["x"] = [1, 2, 3]
    assert run(shell, "%%modal_gpu\ny = len(x)").success
    out = capsys.readouterr().out
    assert "modal_gpu: done in" in out and "on local worker (pid" in out
    assert "sent: x (" in out and "came back: y = 3" in out
    assert "\x1b[" not in out and "{" not in out           # plain lines: no ANSI, no JSON


def test_a_failed_cells_summary_names_what_it_bound_before_the_error(shell, capsys) -> None:
    result = run(shell, "%%modal_gpu\ny = 3\nraise ValueError('late')")
    assert isinstance(result.error_in_exec, ValueError) and shell.user_ns["y"] == 3  # bound, as locally
    out = capsys.readouterr().out
    assert "modal_gpu: failed in" in out and "came back: y = 3" in out and "error: ValueError: late" in out


def test_quiet_shows_only_the_cells_own_output(shell, capsys) -> None:
    assert run(shell, "%%modal_gpu --quiet\nprint('just this')").success
    assert capsys.readouterr().out == "just this\n"


def test_usage_error_shows_no_progress(shell, capsys) -> None:
    run(shell, "%%modal_gpu --in missing_name\nx = 1")
    assert "modal_gpu: " not in capsys.readouterr().out


def test_printed_lines_arrive_batched_whole_and_in_order() -> None:
    """One event per ``print`` made printing 44x slower than a plain cell (issue 26): lines come in batches."""
    events: list[dict] = []
    body = "import sys\nfor i in range(10_000):\n    print(i)\nprint('err', file=sys.stderr)\nprint('last')"
    run_cell(body, {}, on_event=events.append)
    streams = [(e["name"], e["text"]) for e in events if e["kind"] == "stream"]
    assert len(streams) < 100                                       # not 10,002
    out = "".join(text for name, text in streams[:-2])
    assert out == "".join(f"{i}\n" for i in range(10_000))
    assert streams[-2:] == [("stderr", "err\n"), ("stdout", "last\n")]  # the streams' order, as written


def test_carriage_return_progress_is_batched_yet_stays_live() -> None:
    arrivals: list[float] = []
    texts: list[str] = []

    def on_event(event: dict) -> None:
        if event["kind"] == "stream":
            arrivals.append(time.monotonic())
            texts.append(event["text"])

    body = "import sys, time\nfor i in range(1000):\n    sys.stdout.write(f'\\r{i}')\n    time.sleep(0.001)\nprint()"
    run_cell(body, {}, on_event=on_event)
    assert "".join(texts) == "".join(f"\r{i}" for i in range(1000)) + "\n"
    assert len(texts) < 500                         # batched: not one event per write
    assert len(texts) >= 5                          # yet redrawn many times over the second or more it takes


def test_a_display_goes_after_the_text_written_before_it() -> None:
    events: list[dict] = []
    body = ("from IPython.display import display\nfor i in range(3):\n    print(i)\n    display(i)\n"
            "    print(i, end='')\n    display(i)\nprint('tail', end='')\nraise ValueError('late')")
    with pytest.raises(ValueError, match="late"):
        run_cell(body, {}, on_event=events.append)
    shown = [e["text"] if e["kind"] == "stream" else e["data"]["text/plain"]
             for e in events if e["kind"] in ("stream", "display")]
    assert shown == [piece for i in range(3) for piece in (f"{i}\n", f"{i}", f"{i}", f"{i}")] + ["tail"]


def test_a_line_printed_right_after_another_arrives_while_the_cell_sleeps() -> None:
    """The second line waits for the batch's deadline, not for the cell's end."""
    arrivals: list[tuple[float, str]] = []

    def on_event(event: dict) -> None:
        if event["kind"] == "stream":
            arrivals.append((time.monotonic(), event["text"]))

    run_cell("print('first')\nprint('second')\nimport time\ntime.sleep(2)", {}, on_event=on_event)
    ended = time.monotonic()
    assert "".join(text for _, text in arrivals) == "first\nsecond\n"
    second = next(t for t, text in arrivals if "second" in text)
    assert ended - second >= 1.5


class TestCellOutput:
    """The batching policy itself (``worker/output.py``), in this process."""

    @pytest.fixture(autouse=True)
    def _long_interval(self, monkeypatch) -> None:
        """Two writes in a row land within one interval however loaded the machine is."""
        monkeypatch.setattr("modal_magic.worker.output.INTERVAL", 0.5)

    def _output(self):
        from modal_magic.worker.output import CellOutput

        sent: list[tuple[str, str]] = []
        output = CellOutput(lambda meta, buffers: sent.append((meta.get("name", meta["kind"]), meta.get("text"))))
        return output, sent

    def test_a_line_after_a_quiet_spell_goes_at_once_without_the_flusher(self) -> None:
        # (the flusher cannot run while a cell holds the GIL in C right after its print)
        output, sent = self._output()
        try:
            output.stdout.write("first\n")
            assert sent == [("stdout", "first\n")]
            output.stdout.write("second\n")        # within the interval of the first: it waits
            output.stdout.write("third")
            assert sent == [("stdout", "first\n")]
            deadline = time.monotonic() + 10
            while len(sent) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert sent[1] == ("stdout", "second\n")  # whole lines at the deadline; the line being written waits
            output.stdout.flush()                    # the user's flush sends what is pending
            assert sent[-1] == ("stdout", "third")
        finally:
            output.close()

    def test_the_other_stream_a_display_and_the_end_send_what_is_pending(self) -> None:
        output, sent = self._output()
        output.stdout.write("a\n")
        output.stdout.write("b\n")
        output.stderr.write("c\n")
        output.stderr.write("d\n")
        output.emit({"kind": "display"}, [])
        output.stdout.write("e")
        output.close()
        assert sent == [("stdout", "a\n"), ("stdout", "b\n"), ("stderr", "c\nd\n"), ("display", None),
                        ("stdout", "e")]

    def test_a_big_batch_goes_at_once(self) -> None:
        from modal_magic.worker.output import LIMIT

        output, sent = self._output()
        try:
            output.stdout.write("x\n")
            output.stdout.write("y" * LIMIT)
            assert sent == [("stdout", "x\n"), ("stdout", "y" * LIMIT)]
        finally:
            output.close()

    def _wait_for(self, sent: list, count: int) -> None:
        deadline = time.monotonic() + 10
        while len(sent) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def test_the_line_being_written_goes_at_the_next_deadline_with_nothing_more_written(self) -> None:
        output, sent = self._output()
        try:
            output.stdout.write("done\nnext: ")     # after a quiet spell: the whole line goes at once
            assert sent == [("stdout", "done\n")]
            self._wait_for(sent, 2)
            assert sent[1] == ("stdout", "next: ")  # the rest, by the flusher, though nothing followed
        finally:
            output.close()

    def test_a_progress_bars_latest_redraw_is_never_split_from_its_carriage_return(self) -> None:
        output, sent = self._output()
        try:
            output.stdout.write("\r1")              # after a quiet spell: at once
            output.stdout.write("\r2")
            output.stdout.write("\r3")
            self._wait_for(sent, 3)
            assert sent == [("stdout", "\r1"), ("stdout", "\r2"), ("stdout", "\r3")]  # no bare "\r" alone
        finally:
            output.close()
