"""The extension's state for the life of a kernel, in one object instead of module globals.

``%load_ext modal_magic`` makes one (``magic.load_ipython_extension``) with the ``ModalMagics`` instance
as its session defaults; ``%unload_ext`` closes it. A plain script that calls ``modal_magic.run_cell``
never loads the extension: its ``Extension`` is made on first use, with the table's defaults
(``options.py``). Everything that must live as long as the kernel — and end with it — is reached from
``current()``.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

from ..backends.registry import Backends
from .options import Defaults
from .session import Session

__all__ = ["Extension", "current", "start", "stop"]


class Extension:
    """One kernel's backends, session defaults, remote-resident session and ``torch.compile`` places."""

    def __init__(self, defaults: Defaults | None = None) -> None:
        self.defaults = Defaults() if defaults is None else defaults
        """The session defaults (``%modal_config``): the loaded ``ModalMagics``, or the table's."""
        self.backends = Backends()
        """The live backends, one of each, kept warm from cell to cell."""
        self.session = Session()
        """Which notebook tensors mirror remote ones (``session.py``)."""
        self.compile_places: dict[Any, Any] = {}
        """``compile/backend.py``'s ``Place`` per (options, compiler): shared by every compiler using it."""
        self._lock = threading.Lock()
        self._cell_thread: int | None = None
        """The thread running a cell now (``cell_running``), if one is."""
        self._stop_asked = False
        """A ``stop_backends`` came from another thread while the cell ran: it is done as the cell ends."""
        atexit.register(self.close)

    def stop_backends(self) -> str:
        """Stop the backends (``%modal_stop``): nothing is resident remotely any more; the next cell starts one.

        Returns the sentence saying what was stopped — only what was running, or that nothing was. Asked for
        from another thread while a cell runs (``cell_running``), it stops nothing yet: the cell's exchange
        with its worker would break under it (it raised a bare ``AssertionError``), so the backends stop as the
        cell ends, and the sentence says so.
        """
        with self._lock:
            if self._cell_thread is not None and self._cell_thread != threading.get_ident():
                self._stop_asked = True
                return ("modal_gpu: a cell is running; the backends stop as soon as it ends "
                        "(stopping them under it would break it), and the next cell starts afresh.")
            stopped = self._stop()
        return f"modal_gpu: {_stopped(stopped)}"

    def _stop(self) -> list[str]:
        stopped = self.backends.close()
        self.session.forget()
        return stopped

    @contextlib.contextmanager
    def cell_running(self) -> Iterator[None]:
        """For the length of a cell (``driver.run_cell``): a ``stop_backends`` from another thread waits for its end."""
        with self._lock:
            outer, self._cell_thread = self._cell_thread, threading.get_ident()
        try:
            yield
        finally:
            with self._lock:
                self._cell_thread = outer
                stopped = self._stop() if self._stop_asked and outer is None else None
                self._stop_asked = self._stop_asked and stopped is None
            if stopped is not None:
                print(f"modal_gpu: (the %modal_stop asked for while the cell ran) {_stopped(stopped)}",
                      file=sys.stderr)

    def close(self) -> None:
        """Release everything (``%unload_ext``, interpreter exit). Idempotent."""
        self.stop_backends()
        atexit.unregister(self.close)


def _stopped(stopped: list[str]) -> str:
    """What ``%modal_stop`` did, naming only what was running ('the local worker'), or that nothing was."""
    if not stopped:
        return "nothing was running, so there was nothing to stop."
    return (f"stopped {' and '.join(stopped)}, and released what {'it' if len(stopped) == 1 else 'they'} held; "
            "the next cell starts afresh.")


_current: Extension | None = None
"""The kernel's extension: the package's one module-level piece of session state."""


def current() -> Extension:
    """The kernel's extension: the one ``%load_ext`` made, else one made now (a script using ``run_cell``)."""
    global _current
    if _current is None:
        _current = Extension()
    return _current


def start(defaults: Defaults) -> Extension:
    """A fresh extension for this kernel with ``defaults`` (``%load_ext``), the previous one closed."""
    global _current
    stop()
    _current = Extension(defaults)
    return _current


def stop() -> None:
    """Close the kernel's extension, if there is one (``%unload_ext``)."""
    global _current
    if _current is not None:
        _current.close()
        _current = None
