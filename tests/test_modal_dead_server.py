"""The Modal path when Modal's server dies or freezes mid-cell (issue 26, "Hang"): a sentence in seconds, the
namespace as before the cell, an interrupt that ends the cell at once, and a next cell that reconnects.

Each test has a stand-in server of its own (``tests/fake_modal``), killed (``Server.kill``) or frozen
(``Server.freeze``, SIGSTOP) while a cell runs. ``liveness.NO_ANSWER`` is shrunk so the tests take seconds;
a cell ends by the fault long before its own end (``time.sleep(60)``). Every cell has a guard: an interrupt
after ``GUARD`` seconds, so code that hangs (the old code did, for minutes) fails the test instead of holding it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modal_magic.backends.modal import liveness
from modal_magic.errors import BackendUnavailable
from modal_magic.notebook.extension import current

from .conftest import run
from .fake_modal.testing import Server, forget_modal_client

NO_ANSWER = 4.0  # seconds: the test's bound for a server that does not answer (12 s in use)
GUARD = 40.0     # seconds after which a cell that has not ended is interrupted (twice): the test then fails
LONG_CELL = "%%modal_gpu --backend modal\nstate = 'after'\nimport time\ntime.sleep(60)"
SENTENCE = "lost the connection to Modal's server mid-cell"


@pytest.fixture
def server(tmp_path: Path, shell, monkeypatch) -> Iterator[Server]:
    """A stand-in for this test alone (it is killed or frozen), the client pointed at it, a warm app on it."""
    monkeypatch.setattr(liveness, "NO_ANSWER", NO_ANSWER)
    monkeypatch.setattr(liveness, "PROBE_EVERY", 0.5)
    shell.run_cell("%modal_stop", store_history=True)
    server = Server(tmp_path / "state")
    forget_modal_client()
    monkeypatch.setenv("MODAL_SERVER_URL", server.url)
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-fake")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-fake")
    try:
        assert run(shell, "%%modal_gpu --backend modal\nwarm = 1").success
        run(shell, "state = 'before'")
        yield server
    finally:
        if server.process.poll() is None:
            server.thaw()
        current().backends.get("modal").close(wait=liveness.ANSWER)  # a dead server's app is not waited for
        forget_modal_client()
        server.stop()


def guarded(shell, source: str):
    """``run`` with the guard: interrupts at ``GUARD`` and 5 s later, cancelled once the cell ends."""
    timers = [threading.Timer(GUARD + extra, os.kill, (os.getpid(), signal.SIGINT)) for extra in (0, 5)]
    for timer in timers:
        timer.start()
    started = time.monotonic()
    try:
        return run(shell, source), time.monotonic() - started
    finally:
        for timer in timers:
            timer.cancel()


def assert_one_sentence(result, shown: str) -> None:
    """The cell ended by the lost connection, said in one sentence, and the namespace is as before it."""
    assert isinstance(result.error_in_exec, BackendUnavailable), result.error_in_exec
    assert SENTENCE in str(result.error_in_exec) and "the next cell reconnects" in str(result.error_in_exec)
    assert "Traceback" not in shown


def test_a_server_killed_mid_cell_is_told_in_seconds_and_the_next_cell_reconnects(
        server, shell, capsys, tmp_path, monkeypatch) -> None:
    threading.Timer(2.0, server.kill).start()
    result, took = guarded(shell, LONG_CELL)
    shown = capsys.readouterr()
    assert_one_sentence(result, shown.out + shown.err)
    assert took < GUARD and shell.user_ns["state"] == "before"
    # The server is back (a fresh one: the stand-in cannot restart on its port): the next cell runs there.
    back = Server(tmp_path / "back")
    try:
        forget_modal_client()
        monkeypatch.setenv("MODAL_SERVER_URL", back.url)
        result, _ = guarded(shell, "%%modal_gpu --backend modal\nnext_cell = 'ran'")
        assert result.success, result.error_in_exec
        assert shell.user_ns["next_cell"] == "ran" and shell.user_ns["state"] == "before"
        current().backends.get("modal").close(wait=liveness.ANSWER)
    finally:
        back.stop()


def test_a_server_frozen_mid_cell_is_told_in_seconds_and_the_next_cell_runs_once_it_answers(
        server, shell, capsys) -> None:
    threading.Timer(2.0, server.freeze).start()
    result, took = guarded(shell, LONG_CELL)
    shown = capsys.readouterr()
    assert_one_sentence(result, shown.out + shown.err)
    assert f"no answer for {NO_ANSWER:g} s" in str(result.error_in_exec)
    assert took < GUARD and shell.user_ns["state"] == "before"
    server.thaw()
    result, _ = guarded(shell, "%%modal_gpu --backend modal\nnext_cell = 'ran'")
    assert result.success, result.error_in_exec
    assert shell.user_ns["next_cell"] == "ran"


def test_an_interrupt_while_the_server_is_frozen_ends_the_cell_at_once_in_one_line(
        server, shell, capsys, monkeypatch) -> None:
    monkeypatch.setattr(liveness, "NO_ANSWER", GUARD)  # the interrupt, not the bound, must end the cell
    threading.Timer(2.0, server.freeze).start()
    pressed: list[float] = []
    threading.Timer(4.0, lambda: (pressed.append(time.monotonic()), os.kill(os.getpid(), signal.SIGINT))).start()
    result, _ = guarded(shell, LONG_CELL)
    ended = time.monotonic()
    shown = capsys.readouterr()
    shown = shown.out + shown.err
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert ended - pressed[0] < liveness.ANSWER + 2           # the first interrupt ended it, without the server
    assert "Modal's server has not answered" in str(result.error_in_exec), result.error_in_exec
    assert "Traceback (most recent call last)" not in shown, shown
    assert not [line for line in shown.splitlines() if "site-packages/modal/" in line or "modal_magic/" in line]
    assert shell.user_ns["state"] == "before"
    server.thaw()
    result, _ = guarded(shell, "%%modal_gpu --backend modal\nnext_cell = 'ran'")
    assert result.success, result.error_in_exec


def test_a_stall_mid_download_is_named_a_stall_of_the_connection_not_out_of_memory(
        server, shell, capsys, monkeypatch) -> None:
    """The server freezes once the first piece of a two-piece result (over ``frames.PIECE``) has come down."""
    from modal_magic.wire import frames

    add = frames.Pieces.add

    def freeze_at_first_piece(pieces: frames.Pieces, buffers: list) -> None:
        if not pieces.received:
            server.freeze()
        add(pieces, buffers)

    monkeypatch.setattr(frames.Pieces, "add", freeze_at_first_piece)
    result, took = guarded(shell, "%%modal_gpu --backend modal\nimport numpy as np\nstate = 'after'\n"
                                  f"big = np.ones({(frames.PIECE + (8 << 20)) // 8})")
    shown = capsys.readouterr()
    assert_one_sentence(result, shown.out + shown.err)
    assert "memory" not in str(result.error_in_exec) and "preempted" not in str(result.error_in_exec)
    assert took < GUARD and shell.user_ns["state"] == "before" and "big" not in shell.user_ns


def test_a_cell_started_while_the_server_is_frozen_says_so_in_seconds(server, shell, capsys) -> None:
    """Modal's client has no deadline for starting an app: a frozen server held the cell for ever."""
    shell.run_cell("%modal_stop", store_history=True)
    server.freeze()
    result, took = guarded(shell, "%%modal_gpu --backend modal\nstate = 'after'")
    shown = capsys.readouterr()
    assert isinstance(result.error_in_exec, BackendUnavailable), result.error_in_exec
    assert f"took the connection but did not answer within {NO_ANSWER:g} s" in str(result.error_in_exec)
    assert "Traceback" not in shown.out + shown.err
    assert took < GUARD and shell.user_ns["state"] == "before"
    server.thaw()
    result, _ = guarded(shell, "%%modal_gpu --backend modal\nnext_cell = 'ran'")
    assert result.success, result.error_in_exec
