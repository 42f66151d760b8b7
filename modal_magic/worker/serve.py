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

import importlib
import os
import signal
import socket
import sys
import traceback
from collections.abc import Sequence

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
from . import lifeline


def serve(sock: socket.socket, preload: Sequence[str] = ()) -> None:
    """Import ``preload``, then answer requests until the notebook closes the socket."""
    from .runner import Runner

    for module in preload:
        importlib.import_module(module)
    runner = Runner()
    frames.send(sock, ReadyFrame(kind="ready"))
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
                frames.send(sock, report_to_wire(runner.report()))
            else:
                inputs = wire.Payload.from_meta(request["inputs"], buffers)
                runner.run(parsed, inputs, lambda meta, bufs: frames.send(sock, meta, bufs))
        except KeyboardInterrupt:
            frames.send(sock, InterruptedFrame(kind="interrupted"))
        except Exception:  # noqa: BLE001 - reported to the notebook as our own failure
            frames.send(sock, InternalErrorFrame(kind="internal_error", traceback=traceback.format_exc()))


def main() -> None:
    # A parent that ignores SIGINT hands that on, and Python then keeps it ignored: Modal's container
    # entrypoint ignores it while @modal.enter runs, which is when a container starts its worker.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if lifeline.PARENT in os.environ:
        lifeline.hold(int(os.environ.pop(lifeline.PARENT)))
    sock = socket.socket(fileno=int(sys.argv[1]))
    try:
        serve(sock, sys.argv[2:])
    except (frames.ConnectionClosed, BrokenPipeError, ConnectionResetError):
        pass  # the notebook went away; nothing left to tell it

