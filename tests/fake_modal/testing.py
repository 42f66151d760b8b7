"""For tests: start the stand-in as a subprocess, read its report, arm faults, stop it and everything it started."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent

# Short waits, so tests of cancellation and blobs take seconds, not minutes.
TEST_KNOBS = {"FAKE_MODAL_CANCEL_KILL_DELAY": "3", "FAKE_MODAL_MULTIPART_THRESHOLD": str(4 * 1024 * 1024),
              "FAKE_MODAL_MULTIPART_PART_SIZE": str(1024 * 1024)}


class Server:
    """``python -m tests.fake_modal STATE`` in its own process group; ``stop`` ends it and its containers."""

    def __init__(self, state: Path, *, short_waits: bool = True, **knobs: str) -> None:
        """``short_waits``: ``TEST_KNOBS``, else Modal's defaults (for benchmarks); ``knobs``: ``FAKE_MODAL_*``."""
        self.state = state
        env = {**os.environ, **(TEST_KNOBS if short_waits else {}), **knobs}
        self.process = subprocess.Popen([sys.executable, "-m", "tests.fake_modal", str(state)], cwd=ROOT, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        start_new_session=True)
        self.port = int(self.process.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def report(self) -> dict[str, Any]:
        return json.loads((self.state / "report.json").read_text())

    def fail(self, fault: str) -> None:
        (self.state / "fail").write_text(fault)

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 15.0) -> dict:
        """The report once ``predicate`` holds for it (AssertionError with the last report if it never does)."""
        deadline = time.monotonic() + timeout
        while True:
            report = self.report()
            if predicate(report):
                return report
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout} s; report: {json.dumps(report)[:3000]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the server alone, as Modal's API server dying mid-cell: every RPC and blob transfer is refused.

        Unlike Modal, where containers run on other machines and reach other servers, the containers here lose
        their server too (they live on, orphans, until ``stop``)."""
        self.process.kill()
        self.process.wait()

    def freeze(self) -> None:
        """SIGSTOP the server: connections stay open and nothing answers, as a frozen server or a half-open
        connection after a network change. Its blob store (in the same process) freezes with it; on Modal,
        blobs come from a store of their own. ``thaw`` ends it."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.thaw()  # a frozen server would never read its closed stdin
            self.process.stdin.close()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        else:  # killed (``kill``): its containers, in its process group, are left
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def forget_modal_client() -> None:
    """Modal's client caches the one it made from the environment: drop it, so the next uses the new URL."""
    from modal.client import _Client

    _Client._set_env_client(None)


@contextlib.contextmanager
def serving(state: Path, before_stop: Callable[[], None] = lambda: None, **knobs: str) -> Iterator[Server]:
    """The stand-in, with this process's Modal client pointed at it (fake credentials), for a test module.

    ``before_stop`` runs while the server still answers (closing apps says goodbye to it); ``knobs``:
    ``FAKE_MODAL_*`` settings of this server.
    """
    import pytest

    server = Server(state, **knobs)
    forget_modal_client()
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("MODAL_SERVER_URL", server.url)
            env.setenv("MODAL_TOKEN_ID", "ak-fake")
            env.setenv("MODAL_TOKEN_SECRET", "as-fake")
            yield server
            before_stop()
    finally:
        forget_modal_client()
        server.stop()
