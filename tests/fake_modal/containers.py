"""Containers: Modal's own container entrypoint, run as a subprocess against the stand-in.

A container is ``python -m modal._container_entrypoint`` (this interpreter, so
torch and IPython come from its environment), started as modal-client's own
container tests start it: a serialized ``api_pb2.ContainerArguments`` in a file
named by ``MODAL_CONTAINER_ARGUMENTS_PATH``, ``MODAL_IS_REMOTE=1``,
``MODAL_TASK_ID`` and ``MODAL_SERVER_URL`` pointing at a port of the stand-in
that serves this task only (the task is known by the port it calls). The files
of the function's mounts are laid out under ``<state>/containers/<task>/``
(``/root/x`` at ``.../root/x``), whose ``root`` is the working directory and
the only ``PYTHONPATH`` entry, as ``/root`` is on Modal; nothing of the test's
``PYTHONPATH`` leaks in. Its output goes to ``.../container.log``.

From there on it is Modal's code: ContainerHello, the heartbeat loop,
FunctionGetInputs, the input loop that runs the serialized class (``@enter``
once, then the method per input), the generator output pump
(FunctionCallPutDataOut), FunctionPutOutputs, blobs, SIGUSR1 on cancellation
(delivered, as Modal's worker does, in the answer to a long-held
ContainerHeartbeat) and its exit code.

The worker side is modelled here: each bound function variant autoscales, one
input per container (Modal's default, no ``@modal.concurrent``): inputs waiting
beyond the idle and starting containers start new ones, up to the variant's
``max_containers`` (the class's, or its ``with_options`` one; none: no limit of
Modal's) and this machine's ``Config.max_containers``, past which inputs queue.
Containers are kept warm between inputs; one that exits is gone and the next
input starts a new one. A cancelled input whose container
does not answer ``TERMINATED`` within ``Config.cancel_kill_delay`` is killed
(modal-client#4125: with generator output in flight, Modal's pump fails and the
container answers FAILURE, then the worker kills it after 30 s); until then it
gets no new input, so the next input waits for a fresh container. Faults:
``preempt`` kills the container at the input's first output (or at the
``FAKE_MODAL_PREEMPT_AT_OUTPUT``-th FunctionCallPutDataOut) and delivers the
same input again (retry count + 1) to a fresh container; ``internal`` kills it
there and fails the call (as an OOM kill, without Modal's retries);
``gpu-queue`` leaves inputs of GPU functions waiting, with no container, until
the fault is cleared.

A warm container waits for its function's scale-down window, then is stopped
(``billing.py``, which also meters what Modal would bill). A GPU function's
container finds an ``nvidia-smi`` on its ``PATH`` that names the GPU its
function asked for (the first type of a fallback list), as Modal's containers
have the driver's one naming the GPU they got.

Not as strict as Modal: no memory or CPU limits, no GPU (``torch.cuda``
is whatever this machine has), no network isolation, one input at a time, no
workspace GPU quota (only ``Config.max_containers``), and a new container is
started at once for a waiting input (Modal's autoscaler takes its time and may
wait for a busy container to free up instead).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server
from modal_proto import api_pb2

from .apps import Apps, Function
from .calls import TERMINATED, Call, Calls
from .gpus import fake_nvidia_smi
from .server import Dispatcher, State

_INPUT_POLL = 5.0  # seconds a FunctionGetInputs is held when there is no input


def _die_with_parent() -> None:
    """In the child: SIGKILL when the server process dies, so no container outlives a crashed server."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Container:
    id: str
    function: Function
    root: Path
    process: asyncio.subprocess.Process | None = None
    server: Server | None = None
    current: Call | None = None
    cancels: list[str] = field(default_factory=list)          # input ids to deliver in the next heartbeat
    kill_timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    kill_reason: str = ""
    exit_code: int | None = None
    started: float = field(default_factory=time.monotonic)
    ready: float | None = None                                 # its first FunctionGetInputs (after @enter)
    task_result: api_pb2.GenericResult | None = None

    @property
    def alive(self) -> bool:
        return self.exit_code is None

    def kill(self, reason: str) -> None:
        if self.alive and self.process is not None and not self.kill_reason:
            self.kill_reason = reason
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Workers:
    def __init__(self, state: State, apps: Apps, calls: Calls, mounts: Any, services: list[Any]) -> None:
        self.state, self.apps, self.calls, self.mounts = state, apps, calls, mounts
        self.services = services                          # what a container's port serves
        self.pending: dict[str, list[Call]] = {}          # function id -> inputs waiting for a container
        self.live: dict[str, list[Container]] = {}        # function id -> its containers (starting or running)
        self.containers: list[Container] = []
        self.gpu_waits: set[str] = set()                  # calls that waited for a GPU
        self.restarts = 0
        apps.on_app_stop.append(self._app_stopped)

    def report(self) -> dict[str, Any]:
        return {"containers": len(self.containers), "container_restarts": self.restarts,
                "containers_live": len([c for c in self.containers if c.alive]),
                "container_exits": [{"id": c.id, "code": c.exit_code, "killed": c.kill_reason}
                                    for c in self.containers if not c.alive],
                "inputs_waiting_for_gpu": len(self.gpu_waits),
                "queued": sum(len(q) for q in self.pending.values())}

    # ------------------------------------------------------------------ scheduling
    def enqueue(self, call: Call) -> None:
        self.pending.setdefault(call.function.id, []).append(call)
        self.schedule()

    def schedule(self) -> None:
        for function_id, queue in self.pending.items():
            queue[:] = [call for call in queue if call.result is None]
            live = self.live[function_id] = [c for c in self.live.get(function_id, []) if c.alive]
            free = sum(1 for c in live if c.current is None and not c.kill_timers)  # idle, or still starting
            if len(queue) <= free:
                continue
            function = queue[0].function
            if self.state.fail == "gpu-queue" and function.gpus:
                self.gpu_waits.update(call.id for call in queue)
                continue
            limit = min(function.max_containers or self.state.config.max_containers, self.state.config.max_containers)
            for _ in range(min(len(queue) - free, limit - len(live))):
                container = Container(self.state.new_id("ta"), function, Path())  # starting
                live.append(container)
                asyncio.get_running_loop().create_task(self._start_or_fail(container))

    async def tick(self) -> None:
        """Re-schedule now and then: a cleared ``gpu-queue`` fault lets waiting inputs start."""
        while True:
            await asyncio.sleep(0.2)
            self.schedule()

    async def _start_or_fail(self, container: Container) -> None:
        try:
            await self._start(container)
        except Exception:  # noqa: BLE001 - a bug of the stand-in: fail the waiting inputs rather than leave them hanging
            import traceback

            self.state.errors.append(f"starting a container: {traceback.format_exc()}")
            container.exit_code = -1
            self._fail_pending(container.function.id, "the fake could not start a container (see report.json errors)")
            self.state.save()

    async def _start(self, container: Container) -> None:
        function = container.function
        container.root = self.state.root / "containers" / container.id
        app = self.apps.apps[function.app_id]
        definition = function.container_definition()
        root = container.root
        (root / "root").mkdir(parents=True, exist_ok=True)
        try:
            self.mounts.lay_out([*definition.mount_ids, *(function.options.mount_ids if function.options else [])],
                                root)
        except GRPCError as exc:
            self._fail_pending(function.id, f"container could not start: {exc.message}")
            container.exit_code = -1
            return
        layout = api_pb2.AppLayout(function_ids=app.functions, class_ids=app.classes)
        for function_id in app.functions.values():
            layout.objects.append(api_pb2.Object(object_id=function_id,
                                                 function_handle_metadata=self.apps.functions[function_id].metadata))
        arguments = api_pb2.ContainerArguments(
            task_id=container.id, function_id=function.id, app_id=function.app_id, function_def=definition,
            serialized_params=function.serialized_params, environment_name="main", app_layout=layout)
        (root / "container_arguments.bin").write_bytes(arguments.SerializeToString())
        container.server = Server([Dispatcher(self.state, self.services, task=container)])
        await container.server.start("127.0.0.1", 0)
        port = container.server._server.sockets[0].getsockname()[1]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root / "root"), "LANG": "C.UTF-8",
               "PYTHONPATH": str(root / "root"), "PYTHONUNBUFFERED": "1",
               "MODAL_SERVER_URL": f"http://127.0.0.1:{port}", "MODAL_TASK_ID": container.id,
               "MODAL_IS_REMOTE": "1", "MODAL_CONTAINER_ARGUMENTS_PATH": str(root / "container_arguments.bin"),
               "MODAL_IMAGE_ID": definition.image_id, "MODAL_ENVIRONMENT": "main"}
        if function.gpus:
            env["PATH"] = f"{fake_nvidia_smi(root, function.gpus[0])}:{env['PATH']}"
        log = open(root / "container.log", "wb")
        container.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "modal._container_entrypoint", cwd=root / "root", env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent)
        log.close()
        self.containers.append(container)
        self.state.save()
        asyncio.get_running_loop().create_task(self._watch(container))

    async def _watch(self, container: Container) -> None:
        code = await container.process.wait()
        container.exit_code = code
        for timer in container.kill_timers.values():
            timer.cancel()
        if container.server is not None:
            container.server.close()
        call = container.current
        container.current = None
        if call is not None and call.result is None:
            if container.kill_reason == "preempt":
                call.retry_count += 1
                call.preempted = True
                call.outputs_this_attempt = 0
                self.restarts += 1
                self.pending.setdefault(call.function.id, []).insert(0, call)
            elif container.kill_reason == "internal":
                call.finish(api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_INTERNAL_FAILURE,
                                                  exception="Container was OOM-killed (exit code 137)"))
            else:
                call.finish(api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_INTERNAL_FAILURE,
                                                  exception=f"Container exited with code {code} while running "
                                                            "the input"))
        if container.task_result is not None:  # it failed before taking inputs: so would the next one
            self._fail_pending(container.function.id, container.task_result.exception or "container failed")
        self.state.save()
        self.schedule()

    def _fail_pending(self, function_id: str, why: str) -> None:
        for call in self.pending.get(function_id, []):
            call.finish(api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_FAILURE, exception=why))

    def _app_stopped(self, app_id: str) -> None:
        for container in self.containers:
            if container.function.app_id == app_id:
                container.kill("app stopped")
        for queue in self.pending.values():
            for call in queue:
                if call.function.app_id == app_id:
                    call.finish(api_pb2.GenericResult(status=TERMINATED, exception="App was stopped"))

    def stop_call(self, call: Call, status: int, why: str, terminate_container: bool = False) -> None:
        """Cancel (or time out) a call: the client sees ``status`` now; its container is told, then maybe killed."""
        if call.result is not None:
            return
        call.cancelled = why
        call.finish(api_pb2.GenericResult(status=status, exception=why))
        container = call.container
        if container is None or not container.alive or container.current is not call:
            return
        if terminate_container:
            container.kill("cancelled with terminate_containers")
            return
        container.cancels.append(call.input_id)
        delay = self.state.config.cancel_kill_delay
        container.kill_timers[call.input_id] = asyncio.get_running_loop().call_later(
            delay, container.kill, f"input {call.input_id} failed to respond to cancellation for {delay:g} s")

    def shutdown(self) -> None:
        for container in self.containers:
            container.kill("server stopped")

    # ------------------------------------------------------------------ container-side RPCs
    @staticmethod
    def _task(ctx) -> Container:
        if ctx.task is None:
            raise GRPCError(Status.PERMISSION_DENIED, "only a container may call this")
        return ctx.task

    def ContainerHello(self, request, ctx):
        self._task(ctx)
        return empty_pb2.Empty()

    async def ContainerHeartbeat(self, request, ctx):
        container = self._task(ctx)
        deadline = time.monotonic() + self.state.config.container_heartbeat_hold
        while not container.cancels and time.monotonic() < deadline and container.alive:
            await asyncio.sleep(0.05)
        if container.cancels:
            ids, container.cancels = container.cancels, []
            return api_pb2.ContainerHeartbeatResponse(cancel_input_event=api_pb2.CancelInputEvent(input_ids=ids))
        return api_pb2.ContainerHeartbeatResponse()

    async def FunctionGetInputs(self, request, ctx):
        container = self._task(ctx)
        if request.function_id != container.function.id:
            raise GRPCError(Status.INVALID_ARGUMENT, f"task {container.id} runs {container.function.id}, "
                                                     f"not {request.function_id}")
        if container.current is not None:
            raise GRPCError(Status.FAILED_PRECONDITION, "the container asked for an input while running one")
        deadline = time.monotonic() + _INPUT_POLL
        container.ready = container.ready or time.monotonic()
        queue = self.pending.setdefault(container.function.id, [])
        while time.monotonic() < deadline:
            queue[:] = [call for call in queue if call.result is None]
            # A container with an unacknowledged cancellation gets no new input: it is waiting to be killed.
            if queue and container.alive and not container.kill_timers:
                call = queue.pop(0)
                call.container, container.current = container, call
                timeout = call.function.timeout
                attempt = call.retry_count
                asyncio.get_running_loop().call_later(timeout, self._timed_out, call, attempt, timeout)
                self.state.save()
                return api_pb2.FunctionGetInputsResponse(inputs=[api_pb2.FunctionGetInputsItem(
                    input_id=call.input_id, input=call.input, function_call_id=call.id,
                    retry_count=call.retry_count, attempt_token="",
                    function_call_invocation_type=api_pb2.FUNCTION_CALL_INVOCATION_TYPE_SYNC)])
            await asyncio.sleep(0.02)
        return api_pb2.FunctionGetInputsResponse()

    def _timed_out(self, call: Call, attempt: int, timeout: float) -> None:
        if call.result is None and call.retry_count == attempt:
            self.stop_call(call, api_pb2.GenericResult.GENERIC_STATUS_TIMEOUT, f"Function timed out after {timeout:g}s")

    def FunctionCallPutDataOut(self, request, ctx):
        container = self._task(ctx)
        call = self.calls.call(request.function_call_id)
        if call.container is not container or container.current is not call:
            raise GRPCError(Status.FAILED_PRECONDITION, f"task {container.id} is not running {call.id}")
        if call.cancelled:
            raise GRPCError(Status.FAILED_PRECONDITION, f"Function call {call.id} was cancelled")
        for chunk in request.data_chunks:
            if chunk.WhichOneof("data_oneof") == "data_blob_id":
                self.calls.blobs.require(chunk.data_blob_id)
        call.chunks.extend(request.data_chunks)
        call.outputs_this_attempt += 1
        fault = self.state.fail
        late_enough = call.outputs_this_attempt >= self.state.config.preempt_at_output
        if fault == "preempt" and not call.preempted and late_enough:
            container.kill("preempt")
        elif fault == "internal":
            container.kill("internal")
        return empty_pb2.Empty()

    def FunctionPutOutputs(self, request, ctx):
        container = self._task(ctx)
        for item in request.outputs:
            call = self.calls.by_input.get(item.input_id)
            if call is None:
                raise GRPCError(Status.NOT_FOUND, f"input {item.input_id!r} not found")
            if call.container is not container or item.retry_count != call.retry_count:
                continue  # a stale attempt's output: Modal ignores it too
            if item.result.WhichOneof("data_oneof") == "data_blob_id":
                self.calls.blobs.require(item.result.data_blob_id)
            if call.cancelled:
                if item.result.status == TERMINATED:  # the container acknowledged the cancellation
                    timer = container.kill_timers.pop(call.input_id, None)
                    if timer is not None:
                        timer.cancel()
            else:
                call.finish(item.result, item.data_format)
            if container.current is call:
                container.current = None
        return empty_pb2.Empty()

    def TaskResult(self, request, ctx):
        container = self._task(ctx)
        container.task_result = request.result
        return empty_pb2.Empty()
