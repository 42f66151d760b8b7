"""One message on a stream socket: a small pickled dict plus raw buffers.

Every event between the notebook and a runner is a frame: ``meta`` (a dict,
pickled with the standard library) and zero or more buffers sent as they are.
Buffers are received straight into freshly allocated arrays that then become
the rebuilt objects' memory (``wire.unpack`` wraps them without copying), so
a 1 GiB tensor costs one kernel copy each way and no extra Python copies.
"""

from __future__ import annotations

import pickle
import socket
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .payload import gc_paused

__all__ = ["send", "recv", "encode", "decode", "encode_pieces", "Pieces", "PIECE", "ConnectionClosed"]

_LEN = struct.Struct("<Q")
_SMALL = 1 << 16  # buffers below this are joined with their neighbours into one write
_BATCH = 1 << 20  # ...up to this many bytes per write
PIECE = 64 << 20  # the most one message carries where whole messages travel (Modal's items and arguments)


class ConnectionClosed(EOFError):
    """The other end went away (the worker died, or the notebook did)."""


@gc_paused()
def send(sock: socket.socket, meta: Mapping[str, Any], buffers: Sequence[Any] = ()) -> None:
    """Send ``meta`` and ``buffers`` (anything exposing the buffer protocol, C-contiguous)."""
    views = [memoryview(b) for b in buffers]
    head = _head(meta, views)
    batch: list[Any] = [head]
    batched = len(head)
    for view in views:  # small buffers go out joined (one syscall), big ones as they are (no copy)
        if view.nbytes >= _SMALL:
            sock.sendall(b"".join(batch))
            batch, batched = [], 0
            sock.sendall(view)
        else:
            batch.append(view)
            batched += view.nbytes
            if batched >= _BATCH:
                sock.sendall(b"".join(batch))
                batch, batched = [], 0
    if batch:
        sock.sendall(b"".join(batch))


def recv(sock: socket.socket) -> tuple[dict[str, Any], list[Any]]:
    """Receive one frame: ``(meta, buffers)``; buffers are writable and exclusively ours."""
    (size,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    meta = pickle.loads(_recv_exact(sock, size))
    with gc_paused():
        return meta, [_recv_buffer(sock, nbytes) for nbytes in meta.pop("_sizes")]


def encode(meta: Mapping[str, Any], buffers: Sequence[Any] = ()) -> bytes:
    """One frame as one bytes value (for transports that move whole messages, such as Modal's generators)."""
    views = [memoryview(b) for b in buffers]
    return b"".join([_head(meta, views), *views])


def _head(meta: Mapping[str, Any], views: list[memoryview]) -> bytes:
    """Length-prefixed pickled ``meta``, with the buffer sizes the receiver needs."""
    body = pickle.dumps({**meta, "_sizes": [v.nbytes for v in views]}, protocol=5)
    return _LEN.pack(len(body)) + body


def decode(data: bytes) -> tuple[dict[str, Any], list[memoryview]]:
    """The inverse of ``encode``; buffers are views into ``data`` (read-only, not copied)."""
    view = memoryview(data)
    (size,) = _LEN.unpack_from(view)
    meta = pickle.loads(view[_LEN.size:_LEN.size + size])
    position, buffers = _LEN.size + size, []
    for nbytes in meta.pop("_sizes"):
        buffers.append(view[position:position + nbytes])
        position += nbytes
    return meta, buffers


def encode_pieces(meta: Mapping[str, Any], buffers: Sequence[Any], piece: int = PIECE) -> Iterator[bytes]:
    """One frame as messages of at most ``piece`` bytes of buffers: a head, then the buffers' bytes in order.

    Where transport moves whole messages (Modal's generator items, each its
    own blob upload and download), one big frame would be one big blob: held
    whole on both sides, and shown as no progress at all. In pieces the
    container uploads the next while the notebook downloads this one, and the
    notebook writes each into memory it allocated once (``Pieces``).
    """
    views = [memoryview(b).cast("B") for b in buffers]
    yield encode({**meta, "_pieces": [view.nbytes for view in views]})
    batch: list[memoryview] = []
    size = 0
    for view in views:
        start = 0
        while start < view.nbytes:
            take = min(piece - size, view.nbytes - start)
            batch.append(view[start:start + take])
            size, start = size + take, start + take
            if size == piece:
                yield encode({"kind": "piece"}, batch)
                batch, size = [], 0
    if batch:
        yield encode({"kind": "piece"}, batch)


class Pieces:
    """Rebuilds the buffers of a frame sent by ``encode_pieces``, piece by piece, into writable memory."""

    def __init__(self, head: dict[str, Any]) -> None:
        self.meta = dict(head)
        self.buffers = [_allocate(nbytes) for nbytes in self.meta.pop("_pieces")]
        self.total = sum(memoryview(b).nbytes for b in self.buffers)
        self.received = 0
        self._targets = iter([memoryview(b).cast("B") for b in self.buffers if memoryview(b).nbytes])
        self._target, self._offset = next(self._targets, None), 0

    @property
    def complete(self) -> bool:
        return self.received == self.total

    def add(self, slices: Sequence[Any]) -> None:
        """Copy one piece's bytes to where they belong (one pass; the piece can then be freed)."""
        for piece in slices:
            view, position = memoryview(piece).cast("B"), 0
            while position < view.nbytes:
                if self._target is None:
                    raise ValueError("more bytes arrived than the frame's head announced")
                take = min(self._target.nbytes - self._offset, view.nbytes - position)
                self._target[self._offset:self._offset + take] = view[position:position + take]
                self._offset, position, self.received = self._offset + take, position + take, self.received + take
                if self._offset == self._target.nbytes:
                    self._target, self._offset = next(self._targets, None), 0


def _recv_buffer(sock: socket.socket, nbytes: int) -> Any:
    buf = _allocate(nbytes)
    _recv_into(sock, memoryview(buf))
    return buf


numpy: Any
try:
    import numpy
except ImportError:  # pragma: no cover - numpy ships with every torch
    numpy = None


def _allocate(nbytes: int) -> Any:
    """Uninitialised memory (numpy when present): bytearray would zero it first, a wasted pass."""
    return bytearray(nbytes) if numpy is None else numpy.empty(nbytes, dtype=numpy.uint8)


def _recv_exact(sock: socket.socket, nbytes: int) -> bytearray:
    buf = bytearray(nbytes)
    _recv_into(sock, memoryview(buf))
    return buf


def _recv_into(sock: socket.socket, view: memoryview) -> None:
    while view.nbytes:
        got = sock.recv_into(view)
        if got == 0:
            raise ConnectionClosed("connection closed mid-frame" if view.nbytes else "connection closed")
        view = view[got:]
