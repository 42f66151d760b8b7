"""The ways a remote cell can fail, told apart so the user knows whose problem it is.

* the cell's own code raised → the *original* exception is re-raised here, with
  the remote traceback (cell lines, not our internals) attached for IPython;
* the worker/container died → ``WorkerDied`` (exit code or signal);
* the backend could not be reached or started → ``BackendUnavailable``;
* our own code failed → ``InternalError`` (a bug to report, with its traceback).
"""

from __future__ import annotations

import errno
import signal
from typing import Any, TypeVar

__all__ = [
    "ModalMagicError", "UsageProblem", "WorkerDied", "BackendUnavailable", "InternalError", "ResultsLost",
    "CellTimeout", "OutOfFiles", "OUT_OF_FILES", "out_of_files", "RemoteError", "with_remote_traceback",
    "describe_exit",
]


class ModalMagicError(Exception):
    """Base class for failures of the machinery (not of the user's code)."""

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback through our internals.
        return [f"{type(self).__name__}: {self}"]


class UsageProblem(ModalMagicError, ValueError):
    """The request itself is wrong (flags, names, a cell we cannot run); nothing ran."""


class WorkerDied(ModalMagicError):
    """The process running the cell ended without finishing it."""


class BackendUnavailable(ModalMagicError):
    """The backend could not be started or reached."""


class InternalError(ModalMagicError):
    """A bug in modal_magic; the message holds the remote traceback."""


class ResultsLost(ModalMagicError):
    """The cell ran, but what it returned could not be rebuilt here; nothing was injected."""


class CellTimeout(ModalMagicError, TimeoutError):
    """The cell ran past its ``--timeout``; the remote work was stopped."""


class OutOfFiles(ModalMagicError, OSError):
    """The notebook's process (or the machine) has no file descriptor left to give the cell's machinery."""


OUT_OF_FILES = (errno.EMFILE, errno.ENFILE)
"""The ``errno`` of an ``OSError`` that says the process (``EMFILE``) or the machine (``ENFILE``) ran out of files."""


def out_of_files(exc: OSError) -> OutOfFiles:
    """``exc`` (an ``EMFILE`` or ``ENFILE``) as the sentence the user needs: whose limit, and what to do."""
    if exc.errno == errno.ENFILE:
        return OutOfFiles("the machine has run out of open files (every process's together); close some, "
                          "or stop what holds them, and run the cell again.")
    try:
        import resource  # not on Windows
    except ImportError:
        limit = ""
    else:
        limit = f" (limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]})"
    return OutOfFiles(f"the notebook process has run out of open files{limit}; close some files or raise "
                      "the limit (ulimit -n, or resource.setrlimit(resource.RLIMIT_NOFILE, …)), and run the cell "
                      "again.")


class RemoteError(Exception):
    """Stands in for a remote exception whose class cannot be rebuilt here."""

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        super().__init__(f"{type_name}: {message}")


_E = TypeVar("_E", bound=BaseException)


def with_remote_traceback(exc: _E, traceback_lines: list[str]) -> _E:
    """Make IPython show the remote traceback for ``exc`` instead of our local frames.

    IPython asks an exception for ``_render_traceback_()`` before formatting
    its own traceback (the mechanism ipyparallel uses for engine errors).
    """
    if traceback_lines:
        try:
            exc._render_traceback_ = lambda: list(traceback_lines)  # type: ignore[attr-defined]
        except AttributeError:  # exceptions with __slots__ and no __dict__
            pass
    return exc


def describe_exit(returncode: int | None) -> str:
    """'exited with code 3' / 'was killed by SIGKILL (…)' for a worker's return code."""
    if returncode is None:
        return "stopped answering"
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    hint: dict[str, Any] = {
        "SIGKILL": " — usually the out-of-memory killer; try a smaller batch or more memory",
        "SIGSEGV": " — a crash in native code (a C extension or CUDA)",
        "SIGABRT": " — native code aborted",
    }
    return f"was killed by {name}{hint.get(name, '')}"
