"""The one small interface every backend implements.

A backend takes a request (the cell, its options and the packed inputs), runs
it on a runner somewhere, forwards the runner's events as they arrive, and
returns the final ``result`` frame. It knows nothing about IPython, namespaces
or analysis: that is the driver's job.
"""

from __future__ import annotations

import abc
import threading
from typing import Any, Callable

from ..wire import payload as wire

OnEvent = Callable[[dict[str, Any]], None]
ResultFrame = tuple[dict[str, Any], list[Any]]


class Backend(abc.ABC):
    """Where cells run. Implementations: ``LocalBackend`` (a worker process)."""

    name: str = "?"
    hashes_buffers: bool = False
    """Whether big buffers the remote side holds already should go as their digest (``resident``): worth it
    where hashing (~0.5 s per GiB) is faster than the link."""

    @abc.abstractmethod
    def run(self, request: dict[str, Any], inputs: wire.Payload, on_event: OnEvent,
            *, timeout: float | None = None, stop: threading.Event | None = None) -> ResultFrame:
        """Run one cell; call ``on_event`` for each intermediate event; return the result frame.

        Raises ``KeyboardInterrupt`` (after stopping the remote work) when
        interrupted, ``CellTimeout`` past ``timeout`` seconds, ``WorkerDied``
        or ``BackendUnavailable`` when the machinery fails. Setting ``stop``
        (from another thread: a fan-out's cells do not run on the thread that
        gets the kernel's interrupt) stops the cell as an interrupt would.
        """

    def lanes(self, wanted: int) -> list["Backend"]:
        """Up to ``wanted`` backends whose ``run`` calls may go on at the same time, one per thread (``--map``).

        A backend that can run one cell at a time gives itself: the copies then run one after another.
        """
        return [self]

    @property
    def running(self) -> bool:
        """Whether something is up that holds state (a worker process, an app)."""
        return False

    def close(self) -> None:
        """Release what the backend holds (processes, apps). Idempotent."""
