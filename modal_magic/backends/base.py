"""The one small interface every backend implements.

A backend takes a request (``protocol.RunRequest``: the cell and what the
worker needs to run it), the packed inputs and the machine the cell asks for
(``protocol.Resources``), runs it on a worker somewhere, forwards the worker's
events as they arrive, and returns the cell's ``protocol.ResultFrame``. It
knows nothing about IPython, namespaces or analysis: that is the driver's job.

Implementations: ``LocalBackend`` (a worker process on this machine,
``local.py``) and ``ModalBackend`` (the same worker in a Modal container,
``modal/backend.py``).

A backend also describes itself, so that nothing else names it: whether it can
run here and why (``availability``, for ``--backend auto``), and the words
``--dry-run``, ``--map`` and ``torch.compile``'s errors use for it
(``describe``, ``image``). ``registry.py`` finds the backends by the
``modal_magic.backends`` entry point.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from ..protocol import OnEvent, Resources, ResultFrame, RunRequest, StoreReport
from ..wire import payload as wire

__all__ = ["Backend", "OnEvent", "ResultFrame"]


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run cells in this kernel, decided offline (no network), in the user's words."""

    ok: bool
    why: str
    """Asked for by name: why it runs there; or, not ok, what running it needs (a dry run still plans it)."""
    auto: str
    """What ``--backend auto`` says for taking it, or (not ok) for passing it over."""
    refusal: str = ""
    """Not ok: the error a cell that asks for it by name raises."""


@dataclass(frozen=True)
class Description:
    """How the user is told where a backend runs things (``--dry-run``, ``--map``'s progress, compile's errors)."""

    place: str
    """Where one call runs: 'the local worker', 'Modal (H100 or A100)'."""
    pool: str
    """Where ``--map``'s copies run, in its progress line: 'local workers', 'Modal'."""
    lanes: str
    """How many copies at once: '3 local workers', 'up to 3 Modal calls at once'."""
    map_plan: str
    """The dry run's ``--map`` line: 'local worker processes, one per core at most'."""
    no_timeout: str
    """The dry run's timeout without ``--timeout``: 'none', "none of ours; Modal's maximum, 24 h"."""
    gpu_note: str = ""
    """Said beside the dry run's ``--gpu`` when the GPU does not apply here."""


class Backend(abc.ABC):
    """Where cells run."""

    name: ClassVar[str] = "?"
    """Its ``--backend`` name, as the entry point names it."""
    summary: ClassVar[str] = ""
    """What it is, for ``--backend``'s help: 'a GPU container'."""
    runs_cells: ClassVar[str] = ""
    """Where cells run, for ``auto``'s notice: 'running cells on Modal — …'."""
    auto_order: ClassVar[int | None] = None
    """``--backend auto`` takes the first available backend, lowest first; None: only when asked for by name."""
    auto_help: ClassVar[str] = ""
    """When ``auto`` takes it, for ``--backend``'s help: 'Modal when configured'."""
    shares_disk: ClassVar[bool] = False
    """Whether its cells run where this machine's files are, at the same paths (a local worker process): memmaps
    and open files then cross as those files (``wire.files``); otherwise a memmap goes as a plain array and an
    open file stays behind, with a sentence saying so."""
    held: ClassVar[str] = ""
    """What is up while it is ``running``, as ``%modal_stop`` names it: 'the local worker'; default: 'the <name>
    backend'."""
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

    @classmethod
    def availability(cls) -> Availability:
        """Whether it can run cells here, and why; a backend that needs nothing is always available."""
        return Availability(True, "asked for", auto=cls.name)

    @classmethod
    @abc.abstractmethod
    def describe(cls, *, gpu: Sequence[str] = (), lanes: int = 1) -> Description:
        """Its words for the user, for a cell asking for ``gpu`` (types in order) and ``lanes`` copies at once."""

    @classmethod
    def image(cls, pip: Sequence[str]) -> list[str] | None:
        """The image a cell would run in with ``pip`` packages, as lines (``--dry-run``); None: no image of its own
        (it runs in this kernel's environment). Raises ``UsageProblem`` for packages it would refuse."""
        return None

    def lanes(self, wanted: int) -> list[Backend]:
        """Up to ``wanted`` backends whose ``run`` calls may go on at the same time, one per thread (``--map``).

        A backend that can run one cell at a time gives itself: the copies then run one after another.
        """
        return [self]

    @property
    def running(self) -> bool:
        """Whether something is up that holds state (a worker process, an app)."""
        return False

    def close(self) -> None:  # noqa: B027 - optional: a backend that holds nothing has nothing to release
        """Release what the backend holds (processes, apps). Idempotent."""
