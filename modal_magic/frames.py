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
from typing import Any, Sequence

from .wire import gc_paused

__all__ = ["send", "recv", "encode", "decode", "ConnectionClosed"]

_LEN = struct.Struct("<Q")
_SMALL = 1 << 16  # buffers below this are joined with their neighbours into one write
_BATCH = 1 << 20  # ...up to this many bytes per write


class ConnectionClosed(EOFError):
    """The other end went away (the worker died, or the notebook did)."""


@gc_paused()
def send(sock: socket.socket, meta: dict[str, Any], buffers: Sequence[Any] = ()) -> None:
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


def encode(meta: dict[str, Any], buffers: Sequence[Any] = ()) -> bytes:
    """One frame as one bytes value (for transports that move whole messages, such as Modal's generators)."""
    views = [memoryview(b) for b in buffers]
    return b"".join([_head(meta, views), *views])


def _head(meta: dict[str, Any], views: list[memoryview]) -> bytes:
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


def _recv_buffer(sock: socket.socket, nbytes: int) -> Any:
    buf = _allocate(nbytes)
    _recv_into(sock, memoryview(buf))
    return buf


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
