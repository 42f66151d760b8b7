"""Issue 26's faults on the kernel's side, through the real magic and a real local worker: bad flags, a cell's
thread outliving it, ``%modal_stop`` from a thread, a deleted working directory, no file descriptors left.

Each one reads as a sentence, leaves the namespace as a local cell would, and the next cell works."""

from __future__ import annotations

import contextlib
import io
import os
import resource
import signal
import threading
import time

import pytest
from IPython.core.error import UsageError

from modal_magic.errors import OutOfFiles
from modal_magic.notebook.extension import current

from .conftest import run
from .test_faults import assert_next_cell_works


@pytest.mark.parametrize("flags, message", [
    ("--max-input 0", "--max-input takes a positive size like 500MB or 2GiB, not '0'"),
    ("--max-input -5GB", "--max-input takes a positive size like 500MB or 2GiB, not '-5GB'"),
    ("--timeout -inf", "--timeout must be a positive number of seconds, not '-inf'"),
    ("--timeout inf", "--timeout must be a finite number of seconds, not 'inf': for no limit leave the flag out"),
    ("--cpu -2", "--cpu takes a positive number of cores like 4 or 0.5, not '-2'"),
    ("--memory 0", "--memory takes a positive number of MiB like 16384, not '0'"),
    ("--pip torch -U", "--pip takes package specifiers like transformers==4.44.2, not '-U'"),
    ("--in 'x", "the flags have an unclosed quote: \"--backend local --in 'x\"; close it, or leave it out"),
    ("--timout 3", "%%modal_gpu has no flag --timout; did you mean --timeout?"),
    ("--timeout 3 4", "%%modal_gpu does not take '4' there: each value follows its flag"),
])
def test_a_bad_flag_is_one_sentence_and_changes_nothing(shell, capsys, flags: str, message: str) -> None:
    run(shell, "state = 'before'")
    result = run(shell, f"%%modal_gpu --backend local {flags}\nstate = 'after'")
    assert isinstance(result.error_in_exec, UsageError)
    assert str(result.error_in_exec).startswith(message)
    shown = capsys.readouterr()
    assert "Traceback" not in shown.out + shown.err
    assert shell.user_ns["state"] == "before"
    assert_next_cell_works(shell)


def test_a_value_that_starts_with_a_minus_is_a_value(shell) -> None:
    """``--map lr=[0.1, -0.01]``: argparse took ``-0.01]`` for a flag ('unrecognized arguments')."""
    assert run(shell, "%%modal_gpu --backend local --map lr=[0.1, -0.01]\nhalf = lr / 2").success
    assert shell.user_ns["half"] == [0.05, -0.005]


def test_out_naming_what_the_cell_did_not_bind_says_so(shell, capsys) -> None:
    result = run(shell, "%%modal_gpu --backend local --out made,never_bound\nmade = 1")
    assert result.success
    assert ("--out names 'never_bound', which the cell did not bind: nothing came back under that name"
            in capsys.readouterr().err)
    assert shell.user_ns["made"] == 1 and "never_bound" not in shell.user_ns
    assert_next_cell_works(shell)


def test_a_thread_a_cell_started_still_sees_its_names_when_the_next_cell_runs(shell) -> None:
    """The worker cleared the cell's namespace in place for the next cell: the thread died of NameError. It waits
    for the next cell to let it go on, so it reads ``helper`` while that cell runs, whatever the timing."""
    started = ("import threading\n"
               "def helper():\n    return 'still here'\n"
               "def loop(go, said):\n    go.wait()\n    try:\n        said.append(helper())\n"
               "    except NameError as exc:\n        said.append(repr(exc))\n"
               "go, said = threading.Event(), []\n"
               "thread = threading.Thread(target=loop, args=(go, said), name='mm-helper', daemon=True)\n"
               "thread.go, thread.said = go, said\n"
               "thread.start()")
    assert run(shell, f"%%modal_gpu --backend local --out helper\n{started}").success
    result = run(shell, "%%modal_gpu --backend local --out said\nimport threading\n"
                        "thread = next(t for t in threading.enumerate() if t.name == 'mm-helper')\n"
                        "thread.go.set()\nthread.join()\nsaid = thread.said[0]")
    assert result.success, result.error_in_exec
    assert shell.user_ns["said"] == "still here"
    assert callable(shell.user_ns["helper"]) and "thread" not in shell.user_ns
    assert_next_cell_works(shell)


def test_modal_stop_names_only_what_was_running(shell, capsys) -> None:
    """Issue 25: after only local cells it said it had stopped a Modal app that never ran."""
    run(shell, "%modal_stop")
    run(shell, "x = 1")
    capsys.readouterr()
    run(shell, "%modal_stop")
    assert "modal_gpu: nothing was running, so there was nothing to stop." in capsys.readouterr().out
    assert run(shell, "%%modal_gpu --backend local\ny = x + 1").success
    capsys.readouterr()
    run(shell, "%modal_stop")
    said = capsys.readouterr().out
    assert "modal_gpu: stopped the local worker, and released what it held; the next cell starts afresh." in said
    assert "Modal" not in said
    assert shell.user_ns["y"] == 2
    assert_next_cell_works(shell)


def test_modal_stop_from_a_thread_while_a_cell_runs_waits_for_the_cell(shell, capsys, tmp_path) -> None:
    """It stopped the worker under the running cell: a bare ``AssertionError`` from the package. The cell marks that
    it runs and waits for the thread's own mark, so the stop is asked for while it runs, whatever the timing."""
    running, asked = tmp_path / "running", tmp_path / "asked"
    said: list[str] = []

    def stop_while_it_runs() -> None:
        deadline = time.monotonic() + 60
        while not running.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            shell.run_line_magic("modal_stop", "")
        said.append(printed.getvalue())
        asked.touch()

    run(shell, f"state = 'before'\nmarks = {str(tmp_path)!r}")
    thread = threading.Thread(target=stop_while_it_runs)
    thread.start()
    result = run(shell, "%%modal_gpu --backend local --timeout 60\nimport os, time\n"
                        "open(os.path.join(marks, 'running'), 'w').close()\n"
                        "while not os.path.exists(os.path.join(marks, 'asked')):\n    time.sleep(0.01)\n"
                        "state = 'after'")
    thread.join()
    assert result.success, result.error_in_exec
    assert said == ["modal_gpu: a cell is running; the backends stop as soon as it ends (stopping them under it "
                    "would break it), and the next cell starts afresh.\n"]
    assert ("modal_gpu: (the %modal_stop asked for while the cell ran) stopped the local worker"
            in capsys.readouterr().err)
    assert shell.user_ns["state"] == "after"
    assert current().backends.running() == []
    assert_next_cell_works(shell)


def test_a_deleted_working_directory_is_named_and_the_worker_starts_at_home(shell, capsys, tmp_path,
                                                                             monkeypatch) -> None:
    """It blamed the Python binary ('could not start the local worker (…/python): No such file or directory'),
    for every cell until ``%cd``."""
    run(shell, "%modal_stop")  # a worker started before the directory went would not need one
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)  # and back, after the test
    gone.rmdir()
    run(shell, "state = 'before'")
    capsys.readouterr()
    try:
        result = run(shell, "%%modal_gpu --backend local\nimport os\nstate = 'after'\nwhere = os.getcwd()")
        assert result.success, result.error_in_exec
        home = os.path.expanduser("~")
        assert (f"modal_gpu: the notebook's working directory ({gone}) no longer exists; the local worker starts "
                f"in {home} instead, where relative paths differ — %cd to a directory that exists."
                in capsys.readouterr().err)
        assert shell.user_ns["state"] == "after" and shell.user_ns["where"] == home
        assert_next_cell_works(shell)
    finally:
        run(shell, "%modal_stop")  # the next test's worker starts where the notebook is


def test_out_of_file_descriptors_is_one_sentence_and_the_next_cell_works(shell, capsys) -> None:
    """It was a raw ``OSError: [Errno 24] Too many open files`` traceback, 57 lines through our internals."""
    run(shell, "%modal_stop")  # a cold worker: starting one takes a socket pair, two descriptors
    run(shell, "state = 'before'")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = len(os.listdir("/proc/self/fd")) + 16
    held = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        with contextlib.suppress(OSError):
            while True:
                held.append(open(os.devnull))  # held open on purpose, closed below
        result = run(shell, "%%modal_gpu --backend local\nstate = 'after'")
    finally:
        for file in held:
            file.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert isinstance(result.error_in_exec, OutOfFiles)
    assert str(result.error_in_exec) == (
        f"the notebook process has run out of open files (limit {low}); close some files or raise the limit "
        "(ulimit -n, or resource.setrlimit(resource.RLIMIT_NOFILE, …)), and run the cell again.")
    shown = capsys.readouterr()
    assert "Traceback" not in shown.out + shown.err
    assert shell.user_ns["state"] == "before"
    assert_next_cell_works(shell)


def test_a_fan_out_pool_left_running_is_stopped_and_named_but_holds_nothing_resident(shell, capsys) -> None:
    """The session's worker gone, a ``--map``'s other workers still up: ``%modal_stop`` has something to stop and
    says so, and ``%modal_resident`` (which asks only the session's worker) finds nothing resident."""
    assert run(shell, "%%modal_gpu --backend local --map a=[1, 2]\nb = a * 2").success
    assert shell.user_ns["b"] == [2, 4]
    backend = current().backends.get("local")
    if len(backend.lanes(2)) < 2:
        pytest.skip("one core: a fan-out has no pool of its own")
    assert backend.pid is not None
    os.kill(backend.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while backend.pid is not None and time.monotonic() < deadline:  # until the kill is seen
        time.sleep(0.01)
    assert backend.running  # its pool's worker
    capsys.readouterr()
    run(shell, "%modal_resident")
    assert "no backend is running, so nothing is resident remotely" in capsys.readouterr().out
    run(shell, "%modal_stop")
    assert "stopped the local worker" in capsys.readouterr().out
    assert current().backends.running() == []
    assert_next_cell_works(shell)
