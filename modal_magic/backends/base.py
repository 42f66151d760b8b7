"""The one small interface every backend implements.

A backend takes a request (``protocol.RunRequest``: the cell and what the
worker needs to run it), the packed inputs and the machine the cell asks for
(``protocol.Resources``), runs it on a worker somewhere, forwards the worker's
events as they arrive, and returns the cell's ``protocol.ResultFrame``. It
knows nothing about IPython, namespaces or analysis: that is the driver's job.

Implementations: ``LocalBackend`` (a worker process on this machine,
``local.py``) and ``ModalBackend`` (the same worker in a Modal container,
``modal/backend.py``).
"""

from __future__ import annotations

import abc
import threading

from ..protocol import OnEvent, Resources, ResultFrame, RunRequest, StoreReport
from ..wire import payload as wire

__all__ = ["Backend", "OnEvent", "ResultFrame"]


class Backend(abc.ABC):
    """Where cells run."""

    name: str = "?"
    hashes_buffers: bool = False
    """Whether big buffers the remote side holds already should go as their digest (``resident``): worth it
    where hashing (~0.5 s per GiB) is faster than the link. A property of the link, so the backend says it;
    the session (``notebook.session.Crossing``) decides from it how to pack, before the request goes."""

    @abc.abstractmethod
    def run(self, request: RunRequest, inputs: wire.Payload, on_event: OnEvent, *, resources: Resources = Resources(),
            timeout: float | None = None, stop: threading.Event | None = None) -> ResultFrame:
        """Run one cell; call ``on_event`` for each intermediate event; return its result with its buffers.

        ``resources`` is what the cell asks of the machine (a backend applies what it can). Raises
        ``KeyboardInterrupt`` (after stopping the remote work) when interrupted, ``CellTimeout`` past
        ``timeout`` seconds, ``WorkerDied`` or ``BackendUnavailable`` when the machinery fails. Setting
        ``stop`` (from another thread: a fan-out's cells do not run on the thread that gets the kernel's
        interrupt) stops the cell as an interrupt would.
        """

    @abc.abstractmethod
    def resident_report(self) -> StoreReport | None:
        """What the running worker's resident store holds (``%modal_resident``); ``None`` when none is running.

        Never starts a worker: a report is about what is there.
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
