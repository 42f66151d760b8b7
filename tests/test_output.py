"""What the cell prints and displays arrives here in order, while it runs."""

from __future__ import annotations

import time

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
