"""The cell's ``sys.stdout`` and ``sys.stderr`` in the worker: what it writes, batched into few ``stream`` events.

Every event is a frame on the worker's socket, and on Modal a generator item of
its own; one event per ``print`` made printing 44× slower than in a plain cell
(and ``'\\r'`` progress 83×). So writes gather into one pending batch, sent as
one event:

* when the batch reaches ``LIMIT`` characters;
* ``INTERVAL`` after its first write (a flusher thread's deadline), so output
  still looks live: a ``'\\r'`` progress bar redraws about 20 times a second, and
  a cell that prints and then sleeps, or waits in C with the GIL released,
  shows its line within ``INTERVAL``;
* at once, for a write that ends a line after ``INTERVAL`` without output: the
  first line after a quiet spell does not wait for the flusher, which cannot
  run while the cell holds the GIL in C (a long native call right after a
  ``print``);
* on ``flush()`` (``print(..., flush=True)``, ``sys.stdout.flush()``);
* before every other event of the cell (displays, ``clear_output``, and, as
  the cell ends, its result or error), so their order is kept exactly.

A batch holds one stream's text: a write to the other stream sends it first,
so stdout and stderr interleave as they were written. The deadline sends whole
lines and keeps the line still being written (after the last ``'\\n'``, or a
progress bar's redraw from its ``'\\r'``), so a ``print`` of several arguments
stays one piece; that rest goes at the next deadline. One lock orders the
cell's threads' writes and the flusher.

A process the cell forks (a DataLoader's workers) has no flusher and may have
copied that lock while it was held: there each write goes out as it comes.
"""

from __future__ import annotations

import io
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from ..protocol import StreamEvent

if TYPE_CHECKING:  # (the runner imports this module)
    from .runner import Emit

__all__ = ["CellOutput", "INTERVAL", "LIMIT"]

INTERVAL = 0.05   # seconds a batch waits for more output, at most
LIMIT = 64 << 10  # characters that make a batch go at once


class CellOutput:
    """Both streams of one cell, batched (see the module's docstring); ``emit`` sends other events in order."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._ready = threading.Condition(threading.RLock())  # re-entrant: a write from inside a send
        self._name: str | None = None  # the stream the pending batch belongs to
        self._pending: list[str] = []
        self._size = 0
        self._since: float | None = None  # when the pending batch's first write came
        self._sent = 0.0                  # when the last batch went
        self._closed = False
        self.stdout, self.stderr = _Stream("stdout", self), _Stream("stderr", self)
        self._flusher = threading.Thread(target=self._flush_on_deadlines, daemon=True, name="modal_magic-output")
        self._flusher.start()
        _live.add(self)

    def write(self, name: str, text: str) -> None:
        with self._ready:
            if self._closed:  # a stream the cell kept past its end (a thread's): each write goes as it comes
                self._emit(StreamEvent(kind="stream", name=name, text=text), [])
                return
            if self._pending and name != self._name:
                self._send()
            self._name = name
            self._pending.append(text)
            self._size += len(text)
            now = time.monotonic()
            if self._size >= LIMIT:
                self._send()
            elif now - self._sent >= INTERVAL and ("\n" in text or "\r" in text):
                self._send(whole_lines=True)
            if self._pending and self._since is None:
                self._since = now
                self._ready.notify()

    def flush(self) -> None:
        with self._ready:
            self._send()

    def emit(self, meta: Any, buffers: list[Any]) -> None:
        """Send another event of the cell, after the output written before it."""
        with self._ready:
            self._send()
            self._emit(meta, buffers)

    def close(self) -> None:
        """Send what is pending and stop the flusher (the cell ended)."""
        with self._ready:
            self._send()
            self._closed = True
            self._ready.notify()
        self._flusher.join()

    def _send(self, whole_lines: bool = False) -> None:
        """The pending batch as one event; with ``whole_lines``, only up to the last line still being written
        (after the last ``'\\n'``, or from the last ``'\\r'``: a progress bar's latest redraw), which waits."""
        if not self._pending:
            return
        text = "".join(self._pending)
        cut = max(text.rfind("\n") + 1, text.rfind("\r")) if whole_lines else len(text)
        if cut <= 0:  # all of it is the line being written: it goes, it is INTERVAL old (or after a quiet spell)
            cut = len(text)
        rest = text[cut:]
        self._pending, self._size = ([rest], len(rest)) if rest else ([], 0)
        self._sent = time.monotonic()
        self._since = self._sent if rest else None
        if rest:
            self._ready.notify()  # the flusher sends the rest at its own deadline
        assert self._name is not None  # set with the first pending write
        self._emit(StreamEvent(kind="stream", name=self._name, text=text[:cut]), [])

    def _flush_on_deadlines(self) -> None:
        """The flusher thread: send each batch ``INTERVAL`` after its first write, whole lines first."""
        with self._ready:
            while not self._closed:
                if self._since is None:
                    self._ready.wait()
                    continue
                due = self._since + INTERVAL - time.monotonic()
                if due > 0:
                    self._ready.wait(due)
                    continue
                try:
                    self._send(whole_lines=True)
                except OSError:  # the notebook went away: the cell's own next write will say so
                    return

    def _unbatch(self) -> None:
        """In a forked child: a fresh lock, nothing pending (the parent sends that), every write sent at once."""
        self._ready = threading.Condition(threading.RLock())
        self._pending, self._size, self._since, self._closed = [], 0, None, True


_live: weakref.WeakSet[CellOutput] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for output in list(_live):
        output._unbatch()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Stream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` for the cell: its writes go to the cell's batched output."""

    def __init__(self, name: str, output: CellOutput) -> None:
        self.name, self._output = name, output

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            self._output.write(self.name, text)
        return len(text)

    def flush(self) -> None:
        self._output.flush()

    def isatty(self) -> bool:
        return False
