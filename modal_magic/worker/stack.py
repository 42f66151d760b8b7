"""Where a cell that will not stop is: the worker's stacks, written on a signal, read by the notebook.

A cell that ignores SIGINT, or is stuck in native code, never raises the
``KeyboardInterrupt`` whose traceback would say its line, and the notebook
replaces its worker. Before it does, it sends ``SIGNAL``: ``faulthandler``
(armed by ``arm`` as the worker starts) writes every thread's stack to the
worker's stderr — from C, so a cell sleeping in a system call or spinning in
native code still answers — and ``cell_line`` finds the cell's innermost line
in what was written. A stopped (SIGSTOP) worker cannot answer; then there is
no line to say.
"""

from __future__ import annotations

import faulthandler
import re
import signal

__all__ = ["SIGNAL", "arm", "cell_line", "complete"]

SIGNAL = signal.SIGUSR1

_CELL = re.compile(r'File "<ipython-input-\d+-[0-9a-f]+>", line (\d+)')
"""A frame of the cell's code (functions it defines included), as IPython names the code it compiles."""
_MAIN = "in _run_module_as_main"
"""The outermost frame of the worker's main thread (``python -m modal_magic.worker``): its stack is whole."""


def arm() -> None:
    """Write every thread's stack to stderr when ``SIGNAL`` arrives (the worker's, started by ``serve.main``)."""
    faulthandler.register(SIGNAL, all_threads=True)


def complete(dump: str) -> bool:
    """Whether ``dump`` holds the main thread's whole stack (faulthandler writes it last)."""
    return _MAIN in dump


def cell_line(dump: str) -> int | None:
    """The line of the cell the main thread is at, from a faulthandler dump; None when it is not in the cell.

    Each thread's stack is a block, most recent call first; the main thread's ends in ``_run_module_as_main``.
    """
    for block in dump.split("\n\n"):
        if _MAIN in block:
            found = _CELL.search(block)
            return int(found.group(1)) if found else None
    return None
