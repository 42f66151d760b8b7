"""The embedded backend: one persistent worker process on this machine.

The worker is started on first use, reused by later cells (so imports stay
warm), and replaced transparently when it is gone. It runs the same runner as
a Modal container, so CI and offline users exercise the whole path — analysis,
payload, a real process boundary, events, unpacking, injection.

The worker gets a scrubbed environment (no credentials leak through
``os.environ``), the notebook's working directory and ``sys.path`` (so the
user's own modules import there as here).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from ..errors import OUT_OF_FILES, BackendUnavailable, CellTimeout, InternalError, WorkerDied, describe_exit
from ..protocol import (
    Event,
    Frame,
    OnEvent,
    ReportRequest,
    Resources,
    ResultFrame,
    RunRequest,
    StageEvent,
    StoreReport,
    TickEvent,
    report_from_wire,
)
from ..wire import frames
from ..wire import payload as wire
from ..worker import stack
from ..worker.lifeline import PARENT
from .base import Backend, Description

# Variables a Python process needs to behave normally; everything else stays home.
# PYTHONHASHSEED: a kernel started with a pinned seed iterates sets and hashes strings in one
# order; the worker must do the same for a remote cell to behave as a local one.
_PASSED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TERM", "SHELL",
               "CUDA_VISIBLE_DEVICES", "PYTHONHASHSEED")
_GRACE = 2.0  # seconds an interrupted cell gets to unwind before its worker is replaced
_SOCKET_BUFFER = 4 << 20
_LAST_WORDS = 2048  # bytes of a dead worker's stderr quoted in the error
_SLICE = 0.1  # seconds between checks for a pending interrupt while a cell runs
_ASKED = 0.5  # seconds a worker that did not stop gets to say where its cell is
_GONE = "its state is gone; the next cell starts a fresh worker"
_PRELOAD = ("torch",)  # imported by a new worker before it is ready, when the notebook has imported them


class LocalBackend(Backend):
    name = "local"
    summary = "a worker process on this machine"
    runs_cells = "on the local backend (this machine)"
    auto_order = 100  # always available: auto's last resort
    auto_help = "local"
    shares_disk = True  # a process on this machine
    held = "the local worker"

    @classmethod
    def describe(cls, *, gpu: Sequence[str] = (), lanes: int = 1) -> Description:
        return Description(place="the local worker", pool="local workers",
                           lanes=f"{lanes} local worker{'s' if lanes > 1 else ''}",
                           map_plan="local worker processes, one per core at most", no_timeout="none",
                           gpu_note="used by the Modal backend; the local worker runs on this machine")

    def __init__(self, python: str = sys.executable, *, grace: float = _GRACE,
                 environment: dict[str, str] | None = None) -> None:
        """``environment`` replaces the scrubbed one: a Modal container passes its own (CUDA paths
        and the like), which is the container's, not the user's; ``grace`` is how long an
        interrupted cell gets to unwind before its worker is replaced."""
        self._python = python
        self._grace = grace
        self._environment = environment
        self._stderr: Any = None
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._helpers: list[LocalBackend] = []  # the other workers of a fan-out (``lanes``)

    # ------------------------------------------------------------ lifecycle
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        """This worker or one of its fan-out pool's is up."""
        return any(worker.pid is not None for worker in (self, *self._helpers))

    def start(self) -> None:
        """Start the worker now (a container does, before its first cell) rather than on first use."""
        self._ensure_worker()

    def _ensure_worker(self) -> socket.socket:
        if self._sock is not None and self._proc is not None and self._proc.poll() is None:
            return self._sock
        self._stop_worker()
        here = _notebook_directory() or _instead_of_a_deleted_directory()
        ours, theirs = socket.socketpair()
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        try:
            self._proc = subprocess.Popen(
                [self._python, "-m", "modal_magic.worker", str(theirs.fileno()),
                 *(m for m in _PRELOAD if m in sys.modules)],
                pass_fds=[theirs.fileno()], env=self._worker_env(), cwd=here, stderr=self._log(),
                start_new_session=True,  # a terminal's Ctrl-C reaches it only through us
            )
        except OSError as exc:
            ours.close()
            if exc.errno in OUT_OF_FILES:
                raise  # the kernel's limit, not the worker's: the driver says so (driver.files_to_spare)
            raise BackendUnavailable(f"could not start the local worker ({self._python}): {exc}") from exc
        finally:
            theirs.close()
        self._sock = ours
        try:
            meta, _ = self._recv()
        except WorkerDied as exc:
            raise BackendUnavailable(f"the local worker failed to start: {exc}") from None
        except KeyboardInterrupt:  # it was stopped as it started: nothing of it is lost, nothing to add
            raise KeyboardInterrupt from None
        if meta.get("kind") != "ready":
            raise BackendUnavailable(f"the local worker sent {meta!r} instead of 'ready'")
        return ours

    def _worker_env(self) -> dict[str, str]:
        env = dict(self._environment) if self._environment is not None else \
            {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_notebook_directory(), *paths) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env[PARENT] = str(os.getpid())  # the worker ends itself if this process dies (worker/lifeline.py)
        # torch's CPU allocator asks for transparent huge pages: fresh tensors (received
        # inputs, the cell's results) fault in ~2x faster (reference/torch_serialization.md §4).
        env["THP_MEM_ALLOC_ENABLE"] = os.environ.get("THP_MEM_ALLOC_ENABLE", "1")
        env["MPLBACKEND"] = "Agg"  # headless, as a container is: figures come back as PNGs
        return env

    def lanes(self, wanted: int) -> list[Backend]:
        """This worker and more like it, one per core at most: a fan-out's pool, kept warm for the next one."""
        count = max(1, min(wanted, os.cpu_count() or 1))
        while len(self._helpers) < count - 1:
            self._helpers.append(LocalBackend(self._python, grace=self._grace, environment=self._environment))
        return [self, *self._helpers[:count - 1]]

    def close(self) -> None:
        """Stop the worker and the fan-out pool's."""
        while self._helpers:
            self._helpers.pop().close()
        self._stop_worker()

    def _stop_worker(self) -> None:
        """Stop this worker only (it is replaced on next use); the pool's go on."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    # ----------------------------------------------------------------- a cell
    def run(self, request: RunRequest, inputs: wire.Payload, on_event: OnEvent, *, resources: Resources = Resources(),
            timeout: float | None = None, stop: threading.Event | None = None) -> ResultFrame:
        """As ``Backend.run``; setting ``stop`` (from another thread) interrupts the cell as Ctrl-C would.

        ``resources`` do not apply: the worker runs on this machine, as it is."""
        return ResultFrame.from_wire(*self._exchange(request.to_wire(), inputs, on_event, timeout=timeout, stop=stop))

    def resident_report(self) -> StoreReport | None:
        if self.pid is None:  # the session's store is this worker's (a fan-out's pool keeps nothing)
            return None
        meta, _ = self._exchange(ReportRequest().to_wire(), wire.pack({}), lambda event: None)
        return report_from_wire(meta)

    def _exchange(self, request: dict[str, Any], inputs: wire.Payload, on_event: OnEvent,
                  *, timeout: float | None = None, stop: threading.Event | None = None) -> Frame:
        """Send one request as it goes on the wire (``protocol``'s ``to_wire``); its ``result`` frame as it came."""
        warm = self.pid is not None
        on_event(StageEvent(kind="stage", stage="start", where="local worker", warm=warm))
        sock = self._ensure_worker()
        on_event(StageEvent(kind="stage", stage="upload", bytes=inputs.nbytes, where=f"local worker (pid {self.pid})"))
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            frames.send(sock, {**request, "inputs": inputs.meta()}, inputs.buffers)
        except KeyboardInterrupt:
            self._stop_worker()  # half a frame was sent: the stream is unusable
            raise KeyboardInterrupt(f"the interrupt cut the inputs off on their way to the worker, so it was "
                                    f"replaced: {_GONE}") from None
        except OSError:
            raise WorkerDied(f"the local worker {describe_exit(self._wait_exit())} before the cell started"
                             f"{self._last_words()}") from None
        while True:
            try:
                _check_stop(stop)  # on every frame too: a printing cell's stream never waits long enough to tick
                self._wait_readable(sock, deadline, lambda: _tick(on_event, stop))
            except KeyboardInterrupt:  # the cell's last frame: the driver raises the interrupt where the cell was
                return self._interrupt(on_event, request.get("code", ""))
            except TimeoutError:
                self._stop_worker()
                raise CellTimeout(
                    f"the cell ran longer than its timeout of {timeout:g} s and was stopped "
                    "(the worker was restarted). Raise it with --timeout SECONDS.") from None
            meta, buffers = self._recv()
            kind = meta["kind"]
            if kind == "result":
                return meta, buffers
            if kind == "interrupted":
                raise KeyboardInterrupt
            if kind == "internal_error":
                raise InternalError("modal_magic failed inside the worker (a bug; please report it):\n"
                                    + meta["traceback"])
            on_event(cast(Event, meta))  # an event, as the worker sent it

    def _recv(self) -> Frame:
        assert self._sock is not None
        try:
            return frames.recv(self._sock)
        except KeyboardInterrupt:
            self._stop_worker()  # interrupted mid-frame: the stream is unusable
            raise KeyboardInterrupt(f"the interrupt cut off what the worker was sending, so it was replaced: "
                                    f"{_GONE}") from None
        except (frames.ConnectionClosed, OSError):
            raise WorkerDied(
                f"the local worker {describe_exit(self._wait_exit())} while running the cell{self._last_words()}. "
                f"{_GONE.capitalize()}.") from None

    def _log(self) -> Any:
        """Where the worker's own stderr goes: what native code prints as it crashes, kept for the error.

        The cell's output never goes there (the runner turns it into events); a
        fresh file per worker, so it holds only that worker's last words.
        """
        if self._stderr is not None:
            self._stderr.close()
        self._stderr = tempfile.TemporaryFile()
        return self._stderr

    def _last_words(self) -> str:
        """': <the last lines the dead worker wrote to stderr>', or nothing."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(0, self._stderr.tell() - _LAST_WORDS))
        lines = [line.strip() for line in self._stderr.read().decode(errors="replace").splitlines() if line.strip()]
        return f" — its last words: {' / '.join(lines[-5:])}" if lines else ""

    def _wait_exit(self) -> int | None:
        proc = self._proc
        self._close_socket()
        if proc is None:
            return None
        try:
            return proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @staticmethod
    def _wait_readable(sock: socket.socket, deadline: float | None,
                       tick: Callable[[], None] | None = None) -> None:
        """Block until a frame starts arriving; interrupts here leave the stream aligned.

        Waits in short slices: a kernel interrupt that arrives as a pending
        Python signal (``_thread.interrupt_main``) rather than a real SIGINT
        does not wake ``select``, and must be noticed within a fraction of a second.
        """
        while True:
            wait = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError
            ready, _, _ = select.select([sock], [], [], wait)
            if ready:
                return
            if tick is not None:
                tick()  # lets a progress view show the time going by

    def _interrupt(self, on_event: OnEvent, code: str) -> Frame:
        """Forward the interrupt; keep the worker if the cell unwinds in time, else replace it.

        What the worker sends until its last frame still goes to ``on_event``: the cell's output as it unwinds
        (a ``!command``'s ``^C``), and the stage it had reached (the driver says where the interrupt landed).

        Returns the interrupted cell's last frame (it says where the cell was). Raises ``KeyboardInterrupt``
        when the interrupt did not end in the cell's own code: with a sentence saying what became of the
        cell or the worker, when there is one to say (the driver shows it, ``notebook/interrupts.py``).
        """
        if self._proc is None or self._sock is None:
            raise KeyboardInterrupt
        deadline: float | None = time.monotonic() + self._grace
        try:
            os.kill(self._proc.pid, signal.SIGINT)
            while True:
                self._wait_readable(self._sock, deadline)
                meta, buffers = frames.recv(self._sock)
                if meta["kind"] in ("result", "interrupted", "internal_error"):
                    break
                if meta.get("stage") == "download":  # the cell stopped: what it did is being packed, however long
                    deadline = None
                on_event(cast(Event, meta))
        except TimeoutError:
            why = f"the worker did not stop within {self._grace:g} s of the interrupt{self._where(code)}"
        except KeyboardInterrupt:
            why = ("a second interrupt came before the worker stopped" if deadline is not None else
                   "a second interrupt abandoned what the stopped cell had done (its results were coming back)")
        except (OSError, frames.ConnectionClosed):
            why = f"the worker {describe_exit(self._wait_exit())} as it was interrupted"
        else:
            if meta["kind"] == "result":  # stopped where it was; or it caught the interrupt and finished, as a
                return meta, buffers     # `!sleep 9` does (IPython stops the command, the cell goes on): as locally
            raise KeyboardInterrupt  # it landed in the worker outside the cell (packing the results): nothing to add
        self._stop_worker()
        raise KeyboardInterrupt(f"{why}, so it was replaced: {_GONE}")

    def _where(self, code: str) -> str:
        """' (the cell was at line 6: time.sleep(30))', asked of a worker that did not stop (``worker/stack.py``);
        '' when it does not say (a stopped worker cannot)."""
        assert self._proc is not None and self._stderr is not None
        log = self._stderr.fileno()
        start = os.fstat(log).st_size
        os.kill(self._proc.pid, stack.SIGNAL)
        deadline = time.monotonic() + _ASKED
        dump = ""
        while not stack.complete(dump) and time.monotonic() < deadline:
            time.sleep(0.02)
            # pread: the worker writes through the same open file, and moving its offset would misplace its words
            dump = os.pread(log, os.fstat(log).st_size - start, start).decode(errors="replace")
        number = stack.cell_line(dump)
        if number is None:
            return ""
        lines = code.splitlines()
        return f" (the cell was at line {number}" + (f": {lines[number - 1].strip()})" if number <= len(lines) else ")")


def _notebook_directory() -> str | None:
    """The notebook's working directory, where the worker starts so that relative paths mean the same there;
    None when it was deleted under the kernel (``os.chdir(tmp); shutil.rmtree(tmp)``), as ``os.getcwd`` then fails."""
    try:
        return os.getcwd()
    except FileNotFoundError:
        return None


def _instead_of_a_deleted_directory() -> str:
    """Where a worker starts when the notebook's directory is gone: the home directory, saying so.

    The notebook's cells go on working there (only relative paths fail), so a remote cell should too; refusing
    to start blamed the Python binary ("could not start … No such file or directory") for every cell until %cd.
    """
    try:  # Linux names the directory still, as '<path> (deleted)'
        gone = f" ({os.readlink('/proc/self/cwd').removesuffix(' (deleted)')})"
    except OSError:
        gone = ""
    home = os.path.expanduser("~")
    instead = home if os.path.isdir(home) else os.sep
    print(f"modal_gpu: the notebook's working directory{gone} no longer exists; the local worker starts in "
          f"{instead} instead, where relative paths differ — %cd to a directory that exists.", file=sys.stderr)
    return instead


def _check_stop(stop: threading.Event | None) -> None:
    """A stop asked for (from another thread) interrupts here, where an interrupt leaves the stream aligned."""
    if stop is not None and stop.is_set():
        raise KeyboardInterrupt


def _tick(on_event: OnEvent, stop: threading.Event | None) -> None:
    """Between slices of waiting: the view shows time going by; a stop asked for interrupts here."""
    _check_stop(stop)
    on_event(TickEvent(kind="tick"))
