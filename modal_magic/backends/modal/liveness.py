"""Whether Modal's server still answers while a cell runs, and Modal calls that cannot block the notebook.

Modal's client never gives up on a running cell by itself. Its output stream
has no deadline: a server that is killed is retried (and the app's heartbeat
logs a traceback every 15 s) for minutes; one that is frozen, or a half-open
connection after a network change, holds the stream open with nothing on it
for ever. A cell that prints nothing for an hour looks the same from the
stream, so silence on it proves nothing. ``Watch`` therefore asks the server
something of its own (the length of the session's queue: one small RPC)
whenever the stream has been quiet for ``PROBE_EVERY``, and the cell is given
up once nothing at all came from the server — no frame, no answer — for
``NO_ANSWER`` seconds.

Calls the notebook must make to a server that may be gone (the in-band stop,
cancelling a call, closing the app) go through ``bounded``: on a thread of
their own, waited for at most a few seconds, so neither a dead server nor an
interrupt can leave the notebook inside Modal's client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["NO_ANSWER", "PROBE_EVERY", "ANSWER", "Watch", "NoAnswer", "bounded"]

NO_ANSWER = 12.0
"""Seconds without a frame or an answer from Modal's server before a running cell is given up as lost.

A live server answers a queue length in well under a second, and Modal's client
retries a failed call three times within about two seconds, so this is several
missed answers in a row, not one slow one; and it is short enough that the user
hears in seconds what used to take minutes. The price: a network drop longer
than this ends the cell (its app is dropped; the next cell starts a fresh one)
where a drop Modal's client rode out would have let it finish."""

PROBE_EVERY = 2.0
"""Seconds of quiet on the cell's stream before the server is asked whether it is there (and between asks)."""

ANSWER = 3.0
"""Seconds a live server takes at most to answer one small call (a stop token, a cancel, closing the app)."""


class Watch:
    """For one app: when Modal's server was last heard from, by a frame of a cell or by an answer to a probe.

    ``probe`` is one small call to the server; it runs on the watch's own
    thread, only while ``active()`` (a cell is running: no calls between
    cells) and only after ``PROBE_EVERY`` without a frame, so a chatty cell
    costs no calls and the cells of a fan-out share one probe. A probe that
    hangs (a frozen server) only stops the clock; one still hanging when the
    app closes is left to finish on its own (a daemon thread).
    """

    def __init__(self, probe: Callable[[], Any], active: Callable[[], bool]) -> None:
        self._probe, self._active = probe, active
        self._heard = time.monotonic()
        self._done = threading.Event()
        threading.Thread(target=self._ask, daemon=True, name="modal_magic-liveness").start()

    def heard(self) -> None:
        """Something came from the server (a frame of a cell), or a cell starts: the clock starts again."""
        self._heard = time.monotonic()

    @property
    def silence(self) -> float:
        """Seconds since the server was last heard from."""
        return time.monotonic() - self._heard

    @property
    def lost(self) -> bool:
        return self.silence > NO_ANSWER

    def stop(self) -> None:
        self._done.set()

    def _ask(self) -> None:
        while not self._done.wait(PROBE_EVERY):
            if not self._active() or self.silence < PROBE_EVERY / 2:  # no cell, or frames are arriving
                continue  # (half: a quiet stream is asked every PROBE_EVERY, however the two clocks fall)
            try:
                self._probe()
            except Exception:  # noqa: BLE001 - no answer is what the clock measures
                continue
            self.heard()


class NoAnswer(Exception):
    """A call to Modal's server did not finish within its bound."""


def bounded(call: Callable[[], Any], seconds: float | None = None) -> bool:
    """Run ``call`` on a thread of its own and wait for it at most ``seconds`` (``ANSWER``): whether it succeeded.

    False: it failed (the server answered, or the connection was refused: the
    exception is dropped, as every caller has a fallback for a call that did not
    do its job). ``NoAnswer``: it did not finish in time; it goes on in the
    background, a daemon, so a server that answers late still gets it.
    """
    outcome: list[bool] = []
    finished = threading.Event()

    def target() -> None:
        try:
            call()
            outcome.append(True)
        except Exception:  # noqa: BLE001 - see above: the caller's fallback covers it
            outcome.append(False)
        finally:
            finished.set()

    threading.Thread(target=target, daemon=True, name="modal_magic-bounded").start()
    if not finished.wait(ANSWER if seconds is None else seconds):
        raise NoAnswer
    return outcome[0]
