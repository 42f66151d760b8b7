"""What a worker process keeps across requests: the resident session's tensors, and compiled graphs' holdings.

One ``Store`` per process (``this_process``), with two namespaces of one table type (``wire.resident.Table``):

* ``table``, the session's: the tensors cells received and made. The protocol both sides speak (keys,
  versions, fingerprints; ``Sender``, ``Receiver``) is in ``wire/resident.py``. Retention: until the notebook
  releases a key (its mirror died); unvouched for when a cell may have changed it unreported (``begin``).
* ``compiled``, ``torch.compile``'s (``compile/remote.py``): graphs, and the parameters, buffers and saved
  activations they run on, under keys the notebook minted (``compile/residency.py``). Retention: until a call
  drops a key (the notebook's tensor died); never fingerprinted, since the notebook sends a tensor again when
  its version counter moved and a call reports what this side lacks.

Both die with the process: a recycled worker or container starts empty, and the notebook sends again what it
is told is missing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Literal

from ..wire import handles
from ..wire.resident import Entry, Receiver, Sender, Table, fingerprint, torch_module

__all__ = ["Store", "Compiled", "this_process"]


class Store:
    """The remote session's resident tensors: what its cells received and made, kept across cells.

    Lives as long as the worker process (a recycled worker or container starts
    empty, and the notebook's references then come back as ``missing``).
    """

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:8]
        self.table = Table(f"{self.id}.", weak=False)
        """The session's namespace (see the module's docstring)."""
        self.compiled = Compiled()
        """``torch.compile``'s namespace (see the module's docstring)."""
        self._unsettled = False
        handles.start_holding()  # a session's worker keeps what cannot travel, for the notebook's handles
        self._inputs: Receiver | None = None
        self._changed: list[Entry] = []

    def begin(self, release: Iterable[str], resync: bool = False) -> None:
        """Before a cell: drop what the notebook released; stop vouching for what changed unreported
        (a cell that was interrupted, or whose results did not go out), or for everything on ``resync``."""
        for key in release:
            if handles.is_key(key):  # a value kept for a remote handle the notebook let go
                handles.drop(key)
            else:
                self.table.drop(key)
        if resync or self._unsettled:
            for entry in self.table.entries():
                if resync or entry.print != fingerprint(entry.holder):
                    entry.version = None
        self._unsettled = True

    def lacks(self, references: dict[str, str]) -> list[str]:
        """Which of a payload's references this store cannot honour (absent, at another version, a buffer gone)."""
        lacking = []
        for key, version in references.items():
            if key.startswith("#"):
                held = self.table.digests.get(key[1:])
                if held is None or held() is None:
                    lacking.append(key)
            elif (entry := self.table.get(key)) is None or entry.version != version:
                lacking.append(key)
        return lacking

    def receiver(self) -> Receiver:
        """The receiver of a cell's inputs; what it resolves is what the cell can reach (``results``)."""
        self._inputs = Receiver(self.table)
        return self._inputs

    def results(self, fallback: Any, same_values: Callable[[Any], bool]) -> tuple[Sender, list[Any]]:
        """The sender for a cell's results, and the resident tensors the cell changed (in place, a new
        ``.grad``…), named in it or not.

        Only the tensors the cell was given (and their sums, for parameters) are fingerprinted in full: a
        ``.data`` write needs a reference to the tensor, while a tensor it was not given can change only
        through what counts its versions (an in-place change through a view it was given, shared with it;
        ``backward()`` on a resident graph, for one that requires grad). A big model kept for later cells
        costs a cell that does not use it no pass over its memory, and ten thousand small tensors kept a
        look at their version counters.
        """
        given = self._inputs.resolved if self._inputs is not None else set()
        prints: dict[int, tuple] = {}
        self._changed = []
        for entry in self.table.entries():
            t = entry.holder
            if entry.key in given:
                now = prints[id(t)] = fingerprint(t)
                if now != entry.print or not same_values(t):
                    self._changed.append(entry)
            elif t.requires_grad or t._version != entry.print[0][0]:
                content, rest = fingerprint(t, summed=False)
                if content != entry.print[0][:len(content)] or rest != entry.print[1]:
                    self._changed.append(entry)
        sender = Sender(self.table, force=lambda t: not same_values(t), fallback=fallback, keeps_graphs=True,
                        prints=prints)
        return sender, [entry.holder for entry in self._changed]

    def settle(self, sender: Sender) -> None:
        """The results went out: record what they carried; whatever else changed is no longer vouched for."""
        sender.commit()
        for entry in self._changed:
            if entry.key not in sender.sent:
                entry.version = None
        self._inputs, self._changed, self._unsettled = None, [], False

    def report(self) -> dict[str, Any]:
        """What is resident and the memory it holds (each storage counted once), for ``%modal_resident``."""
        rows, seen, totals = [], set(), {"cpu": 0, "cuda": 0}
        for entry in self.table.entries():
            t = entry.holder
            storage = t.untyped_storage()
            nbytes = 0 if storage._cdata in seen else storage.nbytes()
            seen.add(storage._cdata)
            totals[t.device.type] = totals.get(t.device.type, 0) + nbytes
            rows.append({"key": entry.key, "type": type(t).__name__, "shape": list(t.shape),
                         "dtype": str(t.dtype).replace("torch.", ""), "device": str(t.device), "bytes": nbytes,
                         "graph": type(t.grad_fn).__name__ if t.grad_fn is not None else None})
        torch = torch_module()
        cuda = torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized()
        return {"store": self.id, "rows": rows, "host_bytes": totals["cpu"], "gpu_bytes": totals["cuda"],
                "gpu_allocated": torch.cuda.memory_allocated() if cuda else None, "rss": _rss()}


Kind = Literal["parameter", "buffer", "saved"]


class Compiled:
    """Compiled graphs' holdings in this process: graphs by (key, compiler), tensors by the notebook's keys.

    A tensor is held as a ``parameter``, a ``buffer`` (compared by content after a run: batch norm's statistics
    change without a version bump) or a ``saved`` activation (kept from a training forward; the notebook has only
    a stand-in, so it never goes back as changed).
    """

    def __init__(self) -> None:
        self.graphs: dict[tuple[str, str], Callable[..., Any]] = {}
        """Compiled graphs by key (a hash of their code and constants) and compiler: a graph travels once."""
        self.tensors = Table("", weak=False)  # the keys are the notebook's: this side never mints one
        self._kinds: dict[str, Kind] = {}

    def hold(self, key: str, tensor: Any, kind: Kind) -> None:
        self.tensors.put(key, tensor, None, ())  # no version, no fingerprint: the notebook's key says it all
        self._kinds[key] = kind

    def drop(self, key: str) -> None:
        self.tensors.drop(key)
        self._kinds.pop(key, None)

    def tensor(self, key: str) -> Any:
        """The tensor held under ``key``, or ``None``."""
        entry = self.tensors.get(key)
        return None if entry is None else entry.holder

    def kind(self, key: str | None) -> Kind | None:
        return self._kinds.get(key) if key is not None else None


_STORE: Store | None = None


def this_process() -> Store:
    """This process's store: the runner's and the compiled graphs', so that both namespaces share its life."""
    global _STORE
    if _STORE is None:
        _STORE = Store()
    return _STORE


def _rss() -> int | None:
    """This process's resident memory (Linux), which counts what graphs hold besides the tensors themselves."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
