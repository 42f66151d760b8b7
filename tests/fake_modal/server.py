"""RPC dispatch, shared state, the report and faults: the part of the stand-in that is no Modal service.

Every RPC of Modal's ``ModalClient`` service is routed here. One the stand-in
implements goes to the method of that name on one of the service objects
(``apps``, ``images``, ``mounts``, ``blobs``, ``calls``, ``containers``,
``queues``); any other fails with ``UNIMPLEMENTED``, as a server that does not
know the method would: a new RPC the client starts sending shows up as a test
failure, never as an empty success.

The notebook's client and each container reach the stand-in on different
ports. A container's port names its task (Modal's workers know which task is
calling from the network namespace; the container's client sends no task id),
so container-side RPCs know which container they come from.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from modal_proto import api_grpc


class Config:
    """Knobs a test may turn, read from ``FAKE_MODAL_*`` environment variables of the server process.

    The defaults are Modal's where Modal documents one; tests shorten the waits.
    """

    def __init__(self) -> None:
        env = os.environ.get
        # An app whose client sent no AppHeartbeat for this long is stopped (Modal's lapse is not
        # documented; its client beats every 15 s).
        self.app_heartbeat_lapse = float(env("FAKE_MODAL_APP_HEARTBEAT_LAPSE", "60"))
        # A cancelled input whose container did not answer TERMINATED is killed after this long
        # (the worker's "failed to respond to cancellation for too long: 30 seconds - killing task").
        self.cancel_kill_delay = float(env("FAKE_MODAL_CANCEL_KILL_DELAY", "30"))
        # Inline payload limit announced in function handle metadata (Modal's default: 2 MiB).
        self.max_object_size = int(env("FAKE_MODAL_MAX_OBJECT_SIZE", str(2 * 1024 * 1024)))
        # BlobCreate answers with a multipart upload at or above this size, in parts of this size.
        self.multipart_threshold = int(env("FAKE_MODAL_MULTIPART_THRESHOLD", str(64 * 1024 * 1024)))
        self.multipart_part_size = int(env("FAKE_MODAL_MULTIPART_PART_SIZE", str(16 * 1024 * 1024)))
        # How long the server holds a container's ContainerHeartbeat waiting for a cancellation to deliver
        # (the client's attempt timeout is its heartbeat interval + 0.1 s: 15.1 s by default).
        self.container_heartbeat_hold = float(env("FAKE_MODAL_CONTAINER_HEARTBEAT_HOLD", "14"))
        # Fault ``preempt`` kills the container at this FunctionCallPutDataOut of the input (1: its first output).
        self.preempt_at_output = int(env("FAKE_MODAL_PREEMPT_AT_OUTPUT", "1"))
        # Containers one function variant may run at once, whatever it asks for: each is a real process
        # (and a worker process under it), so this machine, not Modal, sets the bound.
        self.max_containers = int(env("FAKE_MODAL_MAX_CONTAINERS", "4"))
        # Every scale-down window is this many times its length (``billing.py``): 0.01 makes 300 s pass in 3 s.
        self.scaledown_scale = float(env("FAKE_MODAL_SCALEDOWN_SCALE", "1"))
        # report.json is rewritten after every RPC (0), or at most this often, in seconds: each write
        # lists every call so far, so a benchmark of thousands of calls measures the writes, not Modal's path.
        self.report_every = float(env("FAKE_MODAL_REPORT_EVERY", "0"))


class State:
    """What every service shares: ids, counters for the report, the fault file, the state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = Config()
        self.rpcs: collections.Counter[str] = collections.Counter()
        self.unimplemented: collections.Counter[str] = collections.Counter()
        self._ids = itertools.count(1)
        self.report_parts: list[Any] = []  # objects with a ``report() -> dict``
        self.errors: list[str] = []        # tracebacks of handler bugs: a test can assert there are none
        self._saved = -float("inf")
        self._save_due: asyncio.TimerHandle | None = None

    @property
    def fail(self) -> str:
        """The fault armed now: the test writes it to ``<state>/fail`` between cells."""
        path = self.root / "fail"
        return path.read_text().strip() if path.exists() else ""

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-fake{next(self._ids):06d}"

    def save(self) -> None:
        """Write ``report.json`` atomically: the test may read it at any time (``Config.report_every``: a
        write within that time of the last one is put off to its end)."""
        now = time.monotonic()
        if now - self._saved < self.config.report_every:
            if self._save_due is None:
                self._save_due = asyncio.get_running_loop().call_later(self._saved + self.config.report_every - now,
                                                                       self._save_now)
            return
        self._save_now()

    def _save_now(self) -> None:
        self._saved, self._save_due = time.monotonic(), None
        report: dict[str, Any] = {"rpcs": dict(self.rpcs), "unimplemented": dict(self.unimplemented),
                                  "errors": self.errors}
        for part in self.report_parts:
            report.update(part.report())
        temporary = self.root / "report.json.new"
        temporary.write_text(json.dumps(report, indent=1))
        temporary.replace(self.root / "report.json")


class _Names:
    """Lets Modal's generated ``__mapping__`` list every RPC without a servicer behind it."""

    def __getattr__(self, name: str) -> str:
        return name


class Context:
    """Who is calling: the notebook's client (``task`` None) or a container (its task)."""

    def __init__(self, task: Any, stream: Any) -> None:
        self.task = task
        self.metadata = dict(stream.metadata or {})


class Dispatcher:
    """The grpclib servicer: every RPC of ``ModalClient``, implemented ones routed to a service."""

    def __init__(self, state: State, services: list[Any], task: Any = None) -> None:
        self.state, self.services, self.task = state, services, task

    def __mapping__(self) -> dict[str, Handler]:
        generated = api_grpc.ModalClientBase.__mapping__(_Names())  # type: ignore[arg-type]
        return {path: handler._replace(func=self._handler(handler)) for path, handler in generated.items()}

    def _find(self, name: str):
        for service in self.services:
            method = getattr(service, name, None)
            if method is not None and name[:1].isupper():
                return method
        return None

    def _handler(self, generated: Handler):
        name = generated.func
        own = self._find(name)

        async def handle(stream) -> None:
            request = await stream.recv_message()
            self.state.rpcs[name] += 1
            if own is None:
                self.state.unimplemented[name] += 1
                self.state.save()
                raise GRPCError(Status.UNIMPLEMENTED, f"the fake Modal server does not implement {name}")
            if name != "ClientHello" and self.state.fail == "auth" and self.task is None:
                raise GRPCError(Status.UNAUTHENTICATED, "Token rejected: the token id or secret is not valid")
            context = Context(self.task, stream)
            try:
                if generated.cardinality is Cardinality.UNARY_STREAM:
                    async for item in own(request, context):
                        self.state.save()
                        await stream.send_message(item)
                    self.state.save()
                    return
                reply = own(request, context)
                if asyncio.iscoroutine(reply):
                    reply = await reply
            except GRPCError:
                self.state.save()
                raise
            except Exception as exc:  # a bug of the stand-in: say so loudly, in the report and to the client
                self.state.errors.append(f"{name}: {traceback.format_exc()}")
                self.state.save()
                raise GRPCError(Status.INTERNAL, f"fake Modal server bug in {name} (see report.json errors)") from exc
            self.state.save()
            await stream.send_message(reply)

        return handle
