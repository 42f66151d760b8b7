"""The one small interface every backend implements.

A backend takes a request (the cell, its options and the packed inputs), runs
it on a runner somewhere, forwards the runner's events as they arrive, and
returns the final ``result`` frame. It knows nothing about IPython, namespaces
or analysis: that is the driver's job.
"""

from __future__ import annotations

import abc
from typing import Any, Callable

from .. import wire

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
            *, timeout: float | None = None) -> ResultFrame:
        """Run one cell; call ``on_event`` for each intermediate event; return the result frame.

        Raises ``KeyboardInterrupt`` (after stopping the remote work) when
        interrupted, ``CellTimeout`` past ``timeout`` seconds, ``WorkerDied``
        or ``BackendUnavailable`` when the machinery fails.
        """

    @property
    def running(self) -> bool:
        """Whether something is up that holds state (a worker process, an app)."""
        return False

    def close(self) -> None:
        """Release what the backend holds (processes, apps). Idempotent."""
