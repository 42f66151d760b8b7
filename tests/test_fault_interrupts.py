"""Interrupts that land outside the cell's own code, and ``--map`` failures, through the real magic and workers.

The interrupt cases. The cell's own code interrupted: the ``KeyboardInterrupt`` at the cell's line, the worker
kept. Every other ends in one short ``KeyboardInterrupt`` saying where it landed, nothing of ``modal_magic/``
shown, and a ``modal_gpu:`` line when the worker had to be replaced:

* the worker is stopped (SIGSTOP) while the cell runs;
* the cell ignores SIGINT (``signal.signal(SIGINT, SIG_IGN)``, then sleeps): the worker still says the line;
* the inputs are going up (a 64 MB input to a stopped worker);
* the results are coming back (the worker stops itself while it sends a 64 MB result);
* a result whose ``__getstate__`` hangs (the worker unwinds and is kept);
* ``!sleep 987`` (the command stops, the cell finishes; the worker is kept);
* a ``--map`` whose workers ignore SIGINT.

The ``--map`` failures (the finished elements' results kept, one ``MapFailed`` naming what failed, a sentence
per failed element): an element whose worker dies, and a pool worker killed (SIGKILL) as it starts.

Each interrupt waits for a sign from the cell (a file it writes, a process it starts, a frame it is in), not for
a time, so the interrupt lands where the case says.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modal_magic.errors import BackendUnavailable, WorkerDied
from modal_magic.notebook.extension import current
from modal_magic.notebook.fanout import MapFailed

from .conftest import run
from .test_faults import assert_next_cell_works


def local_pid() -> int:
    pid = current().backends.get("local").pid
    assert pid is not None
    return pid


def wait_for(condition: Callable[[], bool], seconds: float = 120) -> bool:
    """Poll until ``condition`` holds (the cell's sign); False if it never did within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def interrupt_when(condition: Callable[[], bool], then: Callable[[], None] = _thread.interrupt_main,
                   before: Callable[[], None] = lambda: None) -> threading.Thread:
    """Press the stop button (``then``) from a thread once ``condition`` holds, after doing ``before``.

    It presses even when the sign never came (a loaded machine, a cell slower than thought): the test then fails
    on what it reads instead of hanging, as a cell blocked on a stopped worker would with no one to stop it."""
    def press() -> None:
        wait_for(condition)
        before()
        then()

    thread = threading.Thread(target=press, daemon=True)
    thread.start()
    return thread


def interrupt_running(sign: Callable[[], bool], before: Callable[[], None] = lambda: None) -> threading.Thread:
    """Press the stop button once the cell gave ``sign`` and the notebook waits for the worker's frames
    (not still leaving the code that sent the cell: an interrupt there cuts the inputs off)."""
    waiting = main_thread_in("_wait_readable", "backends/local.py")
    return interrupt_when(lambda: sign() and waiting(), before=before)



def sigint_main_thread() -> None:
    """The kernel's interrupt as a real SIGINT to its main thread: it breaks a ``send``/``recv`` blocked in C."""
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


def stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("T")


def main_thread_in(function: str, filename: str) -> Callable[[], bool]:
    """Whether the notebook's main thread is inside ``function`` of a file ending in ``filename``."""
    def check() -> bool:
        frame = sys._current_frames().get(threading.main_thread().ident or 0)
        while frame is not None:
            if frame.f_code.co_name == function and frame.f_code.co_filename.endswith(filename):
                return True
            frame = frame.f_back
        return False

    return check


def shown_interrupt(capsys) -> str:
    """What the user saw; asserts it is our short form: no frame of ours, no traceback header."""
    shown = capsys.readouterr()
    text = shown.out + shown.err
    assert "KeyboardInterrupt: interrupted " in text
    assert [line for line in text.splitlines() if "modal_magic/" in line] == []
    assert "Traceback (most recent call last)" not in text
    return text


def run_interrupted(shell, cell: str, presser: threading.Thread, *, state: str = "before") -> None:
    """Run ``cell`` (which binds ``state = 'after'``) while ``presser`` interrupts it: it ends in
    KeyboardInterrupt, with ``state`` as the notebook then holds it ('after' where the cell's own code was
    stopped and what it did came back, as locally; 'before' where nothing of it could)."""
    run(shell, "state = 'before'")
    result = run(shell, cell)
    presser.join()
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert shell.user_ns["state"] == state


@pytest.fixture
def warm(shell) -> int:
    """A warm worker's pid."""
    assert run(shell, "%%modal_gpu\nx = 1").success
    return local_pid()


def test_an_interrupt_of_the_cells_own_code_shows_its_line_and_keeps_the_worker(shell, capsys, warm, tmp_path) -> None:
    sign = tmp_path / "running"
    presser = interrupt_running(sign.exists)
    run_interrupted(shell, f"%%modal_gpu\nstate = 'after'\nimport time\nopen({str(sign)!r}, 'w').close()\n"
                           "time.sleep(30)", presser, state="after")
    shown = capsys.readouterr()
    text = shown.out + shown.err
    assert "----> 5 time.sleep(30)" in text and "KeyboardInterrupt" in text  # where it stopped, as locally
    assert "modal_magic" not in text and "select" not in text               # nothing of our machinery
    assert_next_cell_works(shell)
    assert shell.user_ns["next_pid"] == warm  # the cell unwound; worker kept


def test_a_stopped_worker_is_replaced_and_said_so(shell, capsys, warm, tmp_path) -> None:
    sign = tmp_path / "running"
    presser = interrupt_running(sign.exists, before=lambda: os.kill(warm, signal.SIGSTOP))
    run_interrupted(shell, f"%%modal_gpu\nstate = 'after'\nimport time\nopen({str(sign)!r}, 'w').close()\n"
                           "time.sleep(30)", presser)
    text = shown_interrupt(capsys)
    assert "KeyboardInterrupt: interrupted while the cell ran" in text
    assert ("modal_gpu: the worker did not stop within 2 s of the interrupt, so it was replaced: its state is gone"
            in text)  # a stopped worker cannot say where its cell was
    assert_next_cell_works(shell)
    assert shell.user_ns["next_pid"] != warm


def test_a_cell_that_ignores_the_interrupt_is_replaced_and_said_so(shell, capsys, warm, tmp_path) -> None:
    sign = tmp_path / "ignoring"
    presser = interrupt_running(sign.exists)
    run_interrupted(shell, "%%modal_gpu\nstate = 'after'\nimport signal, time\n"
                           f"signal.signal(signal.SIGINT, signal.SIG_IGN)\nopen({str(sign)!r}, 'w').close()\n"
                           "time.sleep(30)", presser)
    text = shown_interrupt(capsys)
    assert ("modal_gpu: the worker did not stop within 2 s of the interrupt (the cell was at line 6: time.sleep(30)), "
            "so it was replaced: its state is gone") in text  # the worker said where, though it would not stop
    assert_next_cell_works(shell)
    assert shell.user_ns["next_pid"] != warm


def test_an_interrupt_while_the_inputs_go_up_replaces_the_worker_and_says_so(shell, capsys, warm) -> None:
    shell.user_ns["big"] = b"x" * 64_000_000  # far over the socket's buffers: a stopped worker never takes it all
    os.kill(warm, signal.SIGSTOP)
    presser = interrupt_when(main_thread_in("send", "wire/frames.py"), then=sigint_main_thread)
    run_interrupted(shell, "%%modal_gpu\nstate = 'after'\nn = len(big)", presser)
    text = shown_interrupt(capsys)
    assert "KeyboardInterrupt: interrupted while the inputs were going up" in text
    assert "modal_gpu: the interrupt cut the inputs off on their way to the worker, so it was replaced" in text
    del shell.user_ns["big"]
    assert_next_cell_works(shell)
    assert shell.user_ns["next_pid"] != warm


# The worker stops itself once its main thread sends the result frame: the notebook is then reading it, or
# waiting for it, and neither ends on its own.
STOP_WHILE_SENDING = """
import os, signal, sys, threading, time
def stop_while_sending(main=threading.main_thread().ident):
    while True:
        frame = sys._current_frames().get(main)
        while frame is not None:
            if frame.f_code.co_name == "send" and frame.f_locals.get("meta", {}).get("kind") == "result":
                os.kill(os.getpid(), signal.SIGSTOP)
                return
            frame = frame.f_back
        time.sleep(0.001)
threading.Thread(target=stop_while_sending, daemon=True).start()
big = b"y" * 64_000_000
state = 'after'
"""


def test_an_interrupt_while_the_results_come_back_replaces_the_worker_and_says_so(shell, capsys, warm) -> None:
    presser = interrupt_when(lambda: stopped(warm), then=sigint_main_thread)
    run_interrupted(shell, f"%%modal_gpu{STOP_WHILE_SENDING}", presser)
    text = shown_interrupt(capsys)
    assert "KeyboardInterrupt: interrupted while the results were being packed and sent back" in text
    assert "so it was replaced: its state is gone" in text
    assert "big" not in shell.user_ns
    assert_next_cell_works(shell)
    assert shell.user_ns["next_pid"] != warm


def test_an_interrupt_while_a_result_is_packed_keeps_the_worker(shell, capsys, warm, tmp_path) -> None:
    sign = tmp_path / "packing"
    presser = interrupt_running(sign.exists)
    run_interrupted(shell, "%%modal_gpu\nstate = 'after'\nimport time\nclass Slow:\n    def __getstate__(self):\n"
                           f"        open({str(sign)!r}, 'w').close()\n        while True:\n"
                           "            time.sleep(0.1)\nslow = Slow()", presser)
    text = shown_interrupt(capsys)
    assert "KeyboardInterrupt: interrupted while the results were being packed and sent back" in text
    assert "modal_gpu:" not in text.split("KeyboardInterrupt: interrupted")[1]  # nothing to add: the worker is kept
    assert_next_cell_works(shell)
    assert shell.user_ns["next_pid"] == warm


def test_an_interrupted_shell_command_stops_and_the_cell_goes_on_as_locally(shell, capsys, warm) -> None:
    """IPython stops an interrupted ``!command`` and the cell goes on (locally too): it finishes, and what it
    made comes back; no KeyboardInterrupt reaches the notebook."""
    def sleeping() -> bool:
        return any(Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x00987\x00"
                   for pid in os.listdir("/proc") if pid.isdigit() and Path(f"/proc/{pid}/cmdline").exists())

    presser = interrupt_running(sleeping)
    run(shell, "state = 'before'")
    result = run(shell, "%%modal_gpu\n!sleep 987\nstate = 'after'")
    presser.join()
    assert result.success, result.error_in_exec
    assert shell.user_ns["state"] == "after"
    assert_next_cell_works(shell)
    assert shell.user_ns["next_pid"] == warm


def test_a_map_whose_workers_ignore_the_interrupt_says_they_were_replaced(shell, capsys, tmp_path) -> None:
    signs = [tmp_path / f"ignoring{i}" for i in range(2)]
    presser = interrupt_when(lambda: all(sign.exists() for sign in signs))
    run_interrupted(shell, f"%%modal_gpu --backend local --quiet --map i=range(2)\nstate = 'after'\n"
                           "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                           f"open({str(tmp_path)!r} + f'/ignoring{{i}}', 'w').close()\ntime.sleep(30)", presser)
    text = shown_interrupt(capsys)
    assert ("every element was stopped; nothing was changed in the notebook; the worker did not stop within 2 s of "
            "the interrupt (the cell was at line 6: time.sleep(30)), so it was replaced: its state is gone; the next "
            "cell starts a fresh worker (elements [0], [1])") in text
    assert run(shell, "%%modal_gpu --backend local --quiet --map i=range(2)\ny = i").success
    assert shell.user_ns["y"] == [0, 1]


# ------------------------------------------------------------------ --map failures
def shown_map_failure(capsys) -> str:
    """What the user saw of a MapFailed: a sentence per failed element, no frame of our lanes."""
    shown = capsys.readouterr()
    text = shown.out + shown.err
    assert [line for line in text.splitlines() if "modal_magic/" in line] == []
    return text


def test_a_map_element_whose_worker_dies_is_a_sentence_and_the_others_come_back(shell, capsys) -> None:
    result = run(shell, "%%modal_gpu --backend local --quiet --map i=range(6)\nimport os\n"
                        "if i == 0:\n    os.kill(os.getpid(), 9)\nsq = i * i")
    error = result.error_in_exec
    assert isinstance(error, MapFailed) and error.indices == (0,)
    assert isinstance(error.exceptions[0], WorkerDied)
    assert shell.user_ns["sq"] == [None, 1, 4, 9, 16, 25]
    text = shown_map_failure(capsys)
    assert "WorkerDied: the local worker was killed by SIGKILL" in text and "[0] i=0" in text


def test_a_pool_worker_killed_as_it_starts_keeps_the_finished_elements(shell, capsys, tmp_path) -> None:
    """A lane whose worker is SIGKILLed before it is ready fails its element with ``BackendUnavailable``; the
    other lane's elements that finished come back, and the rest are cancelled, all in one ``MapFailed``."""
    dies = tmp_path / "python"  # a worker that is killed as it starts, a second after its lane asked for it
    dies.write_text("#!/bin/sh\nsleep 1\nkill -9 $$\n")
    dies.chmod(0o755)
    backend = current().backends.get("local")
    backend.close()
    backend.start()
    lanes = backend.lanes(2)
    if len(lanes) < 2:
        pytest.skip("one core: the pool has no second worker")
    lanes[1]._python = str(dies)  # type: ignore[attr-defined]  # that lane's worker, started on its first element
    try:
        result = run(shell, "%%modal_gpu --backend local --quiet --map i=range(6)\nsq = i * i")
    finally:
        backend.close()
    error = result.error_in_exec
    assert isinstance(error, MapFailed), error
    assert [type(e) for e in error.exceptions] == [BackendUnavailable]
    assert "the local worker failed to start" in str(error.exceptions[0])
    sq = shell.user_ns["sq"]
    assert [value for value in sq if value is not None] and all(v in (None, i * i) for i, v in enumerate(sq))
    text = shown_map_failure(capsys)
    assert "BackendUnavailable: the local worker failed to start" in text
    assert_next_cell_works(shell)


def test_an_interrupted_training_loop_keeps_the_epochs_it_ran(shell, capsys, warm, tmp_path) -> None:
    """Issue 25: stopping a training cell when the loss looks good keeps what it did, as a local cell does:
    the weights changed in place, the losses appended, the names bound so far; then KeyboardInterrupt at the
    cell's line, and the worker is kept."""
    sign = tmp_path / "five-epochs"
    run(shell, "import torch\nw = torch.zeros(3)\nlosses = []")
    w_before = shell.user_ns["w"]
    presser = interrupt_running(sign.exists)
    result = run(shell, "%%modal_gpu\nimport time\nfor epoch in range(100_000):\n    w.add_(1)\n"
                        "    losses.append(float(w.sum()))\n"
                        f"    if epoch == 5:\n        open({str(sign)!r}, 'w').close()\n    time.sleep(0.01)")
    presser.join()
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    ns = shell.user_ns
    assert ns["w"] is w_before                              # the notebook's tensor, changed in place
    steps = int(ns["w"][0])
    assert steps > 5 and ns["epoch"] in (steps - 1, steps)  # as far as the loop got, whichever line it was on
    assert len(ns["losses"]) in (steps - 1, steps) and ns["losses"][:2] == [3.0, 6.0]
    shown = capsys.readouterr()
    assert "KeyboardInterrupt" in shown.out + shown.err and "modal_magic/" not in shown.out
    assert_next_cell_works(shell)
    assert shell.user_ns["next_pid"] == warm


def test_after_an_interrupt_the_next_cell_does_not_say_the_session_was_recycled(shell, capsys, warm, tmp_path) -> None:
    """Issue 25: the worker is the same after the interrupt, and so is its session: the next cell uses the tensor the
    interrupted cell changed as it is there, without "the remote session was recycled" and values sent again."""
    sign = tmp_path / "changed"
    run(shell, "import torch\nw = torch.zeros(256, 1024)")
    assert run(shell, "%%modal_gpu\ntotal = float(w.sum())").success  # w is now resident in the worker
    presser = interrupt_running(sign.exists)
    run_interrupted(shell, f"%%modal_gpu\nstate = 'after'\nimport time\nw.add_(2)\nopen({str(sign)!r}, 'w').close()\n"
                           "time.sleep(30)", presser, state="after")
    capsys.readouterr()
    assert run(shell, "%%modal_gpu\ntotal = float(w.sum())\nprint('total', total)").success
    shown = capsys.readouterr()
    assert "total 524288.0" in shown.out and shell.user_ns["total"] == 2 * 256 * 1024
    assert "recycled" not in shown.out + shown.err
    assert local_pid() == warm
