"""A worker never outlives the process that started it.

The notebook's kernel starts its worker in a session of its own (so a terminal's Ctrl-C reaches it only through
the kernel). When the kernel exits cleanly it closes the socket and stops the worker; when it is killed
(``restart_kernel(now=True)``, SIGKILL, the OOM killer) mid-cell, nothing tells a worker busy in ``while True:
pass``, and it ran on, orphaned, at full CPU. So the worker watches its parent: once it has been re-parented, the
kernel is gone and nobody can read what it would send.

Polling ``getppid`` rather than Linux's ``PR_SET_PDEATHSIG``: that signal fires when the *thread* that forked the
worker exits, and a ``--map`` pool starts workers from threads that end long before the kernel does.
"""

from __future__ import annotations

import os
import threading
import time

PARENT = "MODAL_MAGIC_PARENT"
"""The environment variable that carries the starting process's pid to the worker."""

_EVERY = 0.5  # seconds between looks; a cell's thread gives the watcher the GIL far more often than that


def hold(parent: int) -> None:
    """End this process as soon as ``parent`` is no longer its parent (at once, if it already is not)."""
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), name="modal_magic-lifeline", daemon=True).start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_EVERY)
    os._exit(1)  # no cleanup to run: the results have nobody to go to, and the user's code may be stuck
