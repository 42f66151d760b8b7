"""``backends/modal/liveness``: the watch that notices a server gone quiet, and calls that cannot hold the notebook.

Real threads and a probe that really blocks (on an event, as a frozen server's RPC does); the stand-in server's
end-to-end tests are in ``test_modal_dead_server.py``.
"""

from __future__ import annotations

import threading
import time

import pytest

from modal_magic.backends.modal import liveness
from modal_magic.backends.modal.liveness import NoAnswer, Watch, bounded


def test_bounded_tells_done_failed_and_no_answer_apart() -> None:
    assert bounded(lambda: None) is True
    assert bounded(lambda: 1 / 0) is False
    release = threading.Event()
    ran: list[bool] = []
    with pytest.raises(NoAnswer):
        bounded(lambda: (release.wait(), ran.append(True)), 0.05)
    release.set()  # a call that answers late still finishes, in the background
    deadline = time.monotonic() + 5
    while not ran and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ran == [True]


def wait_until(condition, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_probe_that_hangs_makes_the_watch_lost_and_an_answer_ends_it(monkeypatch) -> None:
    monkeypatch.setattr(liveness, "NO_ANSWER", 0.3)
    monkeypatch.setattr(liveness, "PROBE_EVERY", 0.02)
    frozen, asked = threading.Event(), []
    frozen.set()

    def probe() -> None:
        asked.append(True)
        frozen.wait()  # set: answers at once; cleared: hangs, as a frozen server's RPC

    watch = Watch(probe, active=lambda: True)
    try:
        assert wait_until(lambda: len(asked) > 3) and not watch.lost  # a quiet stream, a server that answers
        frozen.clear()
        assert wait_until(lambda: watch.lost)
        frozen.set()
        assert wait_until(lambda: not watch.lost)
    finally:
        watch.stop()
        frozen.set()


def test_no_probe_while_no_cell_runs_or_frames_arrive(monkeypatch) -> None:
    monkeypatch.setattr(liveness, "PROBE_EVERY", 0.2)
    asked: list[bool] = []
    running = threading.Event()
    watch = Watch(lambda: asked.append(True), active=running.is_set)
    try:
        time.sleep(0.5)
        assert asked == []                  # no cell: no calls to the server between cells
        running.set()
        for _ in range(100):                # frames every 5 ms: the stream itself says the server is there
            watch.heard()
            time.sleep(0.005)
        assert asked == []
        assert wait_until(lambda: len(asked) > 1)  # quiet: it asks
    finally:
        watch.stop()
