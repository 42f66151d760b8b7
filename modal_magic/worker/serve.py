"""The local backend's worker process: ``python -m modal_magic.worker FD [MODULE …]``.

It serves requests on the socket it inherited as file descriptor ``FD``, one
frame in, a stream of event frames out, with the same ``Runner`` a Modal
container uses. SIGINT from the notebook interrupts the running cell (IPython
turns it into the cell's KeyboardInterrupt); between cells it is ignored.

The ``MODULE``s (the heavy ones the notebook has imported, torch above all)
are imported before the worker says it is ready: the first cell would import
them anyway, to rebuild its inputs, and that second or two belongs to starting
the worker, where the progress view counts it, not to uploading the inputs.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..protocol import (
    InternalErrorFrame,
    InterruptedFrame,
    ReadyFrame,
    ReportRequest,
    report_to_wire,
    request_from_wire,
)
from ..wire import frames
from ..wire import payload as wire
from . import lifeline, stack


class Channel:
    """Where every frame leaves the worker (the local backend's, and so a Modal container's): one at a time, whole.

    Not only the cell's main thread sends: the output's flusher does, and so does
    any thread the cell started that prints through a stream it kept. Two frames
    written at once interleave on the socket, and the notebook reads garbage,
    then every later frame misaligned (issue 26: a ``UnicodeDecodeError``, then
    a bare ``MemoryError`` in every cell until ``%modal_stop``). So each frame
    goes out under one lock, and an interrupt that arrives while it does (a
    30 MB ``print`` takes a while) is raised once the frame is whole.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock, self._lock = sock, threading.Lock()
        os.register_at_fork(after_in_child=self._new_lock)  # a child of the cell may copy it held

    def _new_lock(self) -> None:
        self._lock = threading.Lock()

    def send(self, meta: Mapping[str, Any], buffers: Sequence[Any] = ()) -> None:
        with self._lock, _interrupts_deferred():
            frames.send(self._sock, meta, buffers)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT's handler back until the block ends (in the main thread, the only one it interrupts)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if arrived and callable(previous):
            previous(signal.SIGINT, None)  # the cell's KeyboardInterrupt (or its own handler), now


def serve(sock: socket.socket, preload: Sequence[str] = ()) -> None:
    """Import ``preload``, then answer requests until the notebook closes the socket."""
    from .runner import Runner

    for module in preload:
        importlib.import_module(module)
    runner = Runner()
    channel = Channel(sock)
    channel.send(ReadyFrame(kind="ready"))
    while True:
        try:
            request, buffers = frames.recv(sock)
        except frames.ConnectionClosed:
            return
        except KeyboardInterrupt:  # an interrupt that arrived between cells
            continue
        try:
            parsed = request_from_wire(request)
            if isinstance(parsed, ReportRequest):  # its own kind of request: nothing runs
                channel.send(report_to_wire(runner.report()))
            else:
                inputs = wire.Payload.from_meta(request["inputs"], buffers)
                runner.run(parsed, inputs, channel.send)
        except KeyboardInterrupt:
            channel.send(InterruptedFrame(kind="interrupted"))
        except Exception:  # noqa: BLE001 - reported to the notebook as our own failure
            channel.send(InternalErrorFrame(kind="internal_error", traceback=traceback.format_exc()))


def main() -> None:
    # A parent that ignores SIGINT hands that on, and Python then keeps it ignored: Modal's container
    # entrypoint ignores it while @modal.enter runs, which is when a container starts its worker.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stack.arm()  # a cell that will not stop can still be asked where it is
    if lifeline.PARENT in os.environ:
        lifeline.hold(int(os.environ.pop(lifeline.PARENT)))
    sock = socket.socket(fileno=int(sys.argv[1]))
    try:
        serve(sock, sys.argv[2:])
    except (frames.ConnectionClosed, BrokenPipeError, ConnectionResetError):
        pass  # the notebook went away; nothing left to tell it

