"""A stand-in for Modal's servers, for tests: Modal's own gRPC protocol on a local port.

Modal's servers cannot be reached from here, so this is the one mock in the
suite, and it mocks only the server: the client side is Modal's real SDK, which
the notebook process uses unchanged (``MODAL_SERVER_URL`` points it here).
It answers the RPCs an ephemeral app with one class needs — create the app,
images and mounts, bind ``with_options`` variants, call a generator method,
stream its items, cancel a call — and runs the class's methods in *this*
process, one instance per bound variant (a warm "container"), the way Modal
runs a serialized class: deserialize it, run its ``@modal.enter`` methods once,
then call the method per input. Cancelling a call raises Modal's
``InputCancellation`` in the running input, as the SIGUSR1 handler of a real
container does.

Run as ``python -m tests.fake_modal STATE_DIR``: prints its port and serves until
stdin closes. After every RPC it writes ``STATE_DIR/report.json`` (RPC counts,
image layers, GPUs asked for, containers started, calls cancelled). A fault to
inject is read from ``STATE_DIR/fail``: ``image`` (the import-check layer fails
to build, with its log), ``internal`` (a call ends in an internal failure, as
when a container is OOM-killed or preempted), ``auth`` (the token is refused)
or ``gpu`` (the workspace is out of GPUs). Timeouts are real: a call's
``timeout`` option stops it like Modal does.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import json
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from google.protobuf import empty_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from aiohttp import web
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server
from modal._partial_function import _find_callables_for_obj, _PartialFunctionFlags
from modal._runtime.execution_context import _set_current_context_ids
from modal._serialization import deserialize, serialize
from modal._utils.blob_utils import MAX_OBJECT_SIZE_BYTES
from modal.exception import InputCancellation
from modal_proto import api_grpc, api_pb2


# Faults a server answers with a gRPC status: (RPC, fault) -> (status, message).
REFUSALS = {
    ("AppCreate", "auth"): (Status.UNAUTHENTICATED, "Token rejected: the token id or secret is not valid"),
    ("FunctionMap", "gpu"): (Status.RESOURCE_EXHAUSTED, "Your workspace has reached its limit of H100 GPUs"),
}


class _Names:
    """Lets Modal's generated ``__mapping__`` list every RPC without a servicer behind it."""

    def __getattr__(self, name: str) -> str:
        return name


def _gpu_names(resources: api_pb2.Resources) -> list[str]:
    gpu = resources.gpu_config
    return [gpu.gpu_type + (f":{gpu.count}" if gpu.count > 1 else "")] if gpu.gpu_type else []


class _Call:
    """One function call: its data chunks so far, and its result once it ends."""

    def __init__(self, call_id: str, input_id: str) -> None:
        self.id, self.input_id = call_id, input_id
        self.chunks: list[api_pb2.DataChunk] = []
        self.result: api_pb2.GenericResult | None = None
        self.data_format = api_pb2.DATA_FORMAT_PICKLE
        self.running = False
        self.stopped: tuple[int, str] | None = None

    def put(self, chunk: api_pb2.DataChunk) -> None:
        self.chunks.append(chunk)

    def finish(self, result: api_pb2.GenericResult, data_format: int) -> None:
        self.result, self.data_format = result, data_format

    def stop(self, status: int, message: str) -> None:
        """Cancel or time out the input as a container does: SIGUSR1 to the main thread, which runs it."""
        if self.result is None and self.stopped is None:
            self.stopped = (status, message)
            if self.running:
                signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)


class FakeModal:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.rpcs: collections.Counter[str] = collections.Counter()
        self.ids = itertools.count(1)
        self.functions: dict[str, dict[str, Any]] = {}   # function id -> definition, options
        self.calls: dict[str, _Call] = {}                # function call id -> its state
        self.images: list[str] = []                      # every image layer asked for, as text
        self.bound: dict[bytes, str] = {}                # FunctionBindParams request -> bound function id
        self.mounts: list[Any] = []                      # mounts by name, or by their files
        self.gpus: list[list[str]] = []                  # the GPUs each call asked for
        self.fallbacks: list[list[str]] = []             # GPU fallback lists the app's class was defined with
        self.containers: dict[str, Any] = {}             # bound function id -> the entered instance
        self.inputs: queue.Queue = queue.Queue()          # calls waiting for the "container"
        self.cancelled: list[str] = []                   # function call ids the client cancelled
        self.blobs: dict[str, bytes] = {}                # blob id -> bytes (Modal's blob store)
        self.saving = threading.Lock()
        self.blob_url = ""                               # set once the blob endpoint listens
        self.input_bytes: list[int] = []                 # the size of each call's arguments

    # ------------------------------------------------------------------ plumbing
    @property
    def fail(self) -> str:
        """The fault to inject now: the test writes it to ``<state>/fail`` between cells."""
        path = self.state / "fail"
        return path.read_text().strip() if path.exists() else ""

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-fake{next(self.ids):06d}"

    def __mapping__(self) -> dict[str, Handler]:
        generated = api_grpc.ModalClientBase.__mapping__(_Names())  # type: ignore[arg-type]
        return {path: handler._replace(func=self._handler(handler)) for path, handler in generated.items()}

    def _handler(self, generated: Handler):
        name = generated.func
        own = getattr(self, name, None)

        async def handle(stream) -> None:
            request = await stream.recv_message()
            self.rpcs[name] += 1
            if (name, self.fail) in REFUSALS:
                raise GRPCError(*REFUSALS[name, self.fail])
            if own is None:
                reply = generated.reply_type()
            else:
                reply = own(request)
                if asyncio.iscoroutine(reply):
                    reply = await reply
            self.save()
            if generated.cardinality is Cardinality.UNARY_STREAM:
                async for item in reply:
                    await stream.send_message(item)
            else:
                await stream.send_message(reply)

        return handle

    # ------------------------------------------------------------------ the app
    def AppCreate(self, request):
        return api_pb2.AppCreateResponse(app_id=self.new_id("ap"), app_page_url="https://modal.invalid/apps/fake")

    def EnvironmentGetOrCreate(self, request):
        return api_pb2.EnvironmentGetOrCreateResponse(environment_id=self.new_id("en"),
                                                      metadata=api_pb2.EnvironmentMetadata(
            name="main", settings=api_pb2.EnvironmentSettings(image_builder_version="2025.06")))

    def _handle_metadata(self, name: str, function_type: int, methods, is_method: bool = False,
                         method_name: str = "") -> api_pb2.FunctionHandleMetadata:
        metadata = api_pb2.FunctionHandleMetadata(
            function_name=name, function_type=function_type, is_method=is_method, use_method_name=method_name,
            class_parameter_info=api_pb2.ClassParameterInfo(
                format=api_pb2.ClassParameterInfo.PARAM_SERIALIZATION_FORMAT_PROTO),
            supported_input_formats=[api_pb2.DATA_FORMAT_PICKLE],
            supported_output_formats=[api_pb2.DATA_FORMAT_PICKLE])
        for method, definition in methods.items():
            metadata.method_handle_metadata[method].CopyFrom(self._handle_metadata(
                definition.function_name, definition.function_type, {}, is_method=True, method_name=method))
        return metadata

    def FunctionPrecreate(self, request):
        function_id = request.existing_function_id or self.new_id("fu")
        metadata = self._handle_metadata(request.function_name, request.function_type, request.method_definitions)
        self.functions[function_id] = {"metadata": metadata}
        return api_pb2.FunctionPrecreateResponse(function_id=function_id, handle_metadata=metadata)

    def FunctionCreate(self, request):
        if request.HasField("function_data"):  # GPU fallbacks: one ranked definition per choice
            data = request.function_data
            self.fallbacks.append([name for ranked in data.ranked_functions
                                   for name in _gpu_names(ranked.function.resources)])
        else:
            data = api_pb2.FunctionData(
                function_name=request.function.function_name, function_type=request.function.function_type,
                ranked_functions=[api_pb2.FunctionData.RankedFunction(rank=0, function=request.function)])
            for method, definition in request.function.method_definitions.items():
                data.method_definitions[method].CopyFrom(definition)
        function_id = request.existing_function_id or self.new_id("fu")
        metadata = self._handle_metadata(data.function_name, data.function_type, data.method_definitions)
        self.functions[function_id] = {"metadata": metadata, "data": data}
        return api_pb2.FunctionCreateResponse(function_id=function_id, handle_metadata=metadata, function_data=data)

    def FunctionBindParams(self, request):
        key = request.SerializeToString(deterministic=True)  # Modal's bound ids are deterministic too
        bound_id = self.bound.setdefault(key, self.new_id("fu"))
        base = self.functions[request.function_id]
        self.functions[bound_id] = {**base, "options": request.function_options, "base": request.function_id}
        return api_pb2.FunctionBindParamsResponse(bound_function_id=bound_id, handle_metadata=base["metadata"])

    def ClassCreate(self, request):
        return api_pb2.ClassCreateResponse(class_id=self.new_id("cs"), handle_metadata=api_pb2.ClassHandleMetadata())

    # ------------------------------------------------------------------ mounts and images
    def MountGetOrCreate(self, request):
        self.mounts.append(request.deployment_name or sorted(f.filename for f in request.files))
        return api_pb2.MountGetOrCreateResponse(
            mount_id=self.new_id("mo"), handle_metadata=api_pb2.MountHandleMetadata(content_checksum_sha256_hex="0"))

    def ImageGetOrCreate(self, request):
        image_id = self.new_id("im")
        commands = "\n".join(request.image.dockerfile_commands)
        self.images.append(commands)
        if self.fail == "image" and "does not import" in commands:  # not built yet: the client joins its build
            return api_pb2.ImageGetOrCreateResponse(image_id=image_id)
        return api_pb2.ImageGetOrCreateResponse(
            image_id=image_id, result=api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS))

    async def ImageJoinStreaming(self, request):
        """A failing build ends in failure; its log is kept for ``Image.logs`` (see below)."""
        yield api_pb2.ImageJoinStreamingResponse(
            result=api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_FAILURE), entry_id="1")

    # A failed build's log, as `modal image logs` reads it: the build chain, then the builder's app logs.
    BUILD_LOG = ("Step 1: RUN python -c ...\nmodal_magic: package torch was installed but does not import: "
                 "ImportError('libcudnn.so.9: cannot open shared object file')\n")

    def ImageBuildChainGet(self, request):
        started = Timestamp(seconds=int(time.time()) - 60)
        return api_pb2.ImageBuildChainGetResponse(build_steps=[api_pb2.ImageBuildStep(
            image_id=request.image_id, started_at=started, finished_at=Timestamp(seconds=started.seconds + 30),
            builder_app_id="ap-builder", builder_task_id="ta-builder")])

    def AppCountLogs(self, request):
        return api_pb2.AppCountLogsResponse(app_id=request.app_id, buckets=[
            api_pb2.AppCountLogsResponse.LogBucket(bucket_start_at=request.since, stdout_logs=1)])

    def AppFetchLogs(self, request):
        log = api_pb2.TaskLogs(data=self.BUILD_LOG, timestamp=request.since.seconds + 1.0,
                               file_descriptor=api_pb2.FILE_DESCRIPTOR_STDOUT)
        return api_pb2.AppFetchLogsResponse(batches=[api_pb2.TaskLogsBatch(task_id="ta-builder", items=[log])])

    # ------------------------------------------------------------------ blobs (payloads over 2 MiB)
    def BlobCreate(self, request):
        blob_id = self.new_id("bl")
        return api_pb2.BlobCreateResponse(blob_ids=[blob_id], upload_urls=api_pb2.UploadUrlList(
            items=[f"{self.blob_url}/{blob_id}"]))

    def BlobGet(self, request):
        return api_pb2.BlobGetResponse(download_url=f"{self.blob_url}/{request.blob_id}")

    async def _put_blob(self, request: web.Request) -> web.Response:
        data = await request.read()
        self.blobs[request.match_info["blob_id"]] = data
        return web.Response(headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    async def _get_blob(self, request: web.Request) -> web.Response:
        return web.Response(body=self.blobs[request.match_info["blob_id"]])

    def _chunk(self, item: Any, index: int) -> api_pb2.DataChunk:
        """A generator item as Modal sends it: inline up to 2 MiB, else through the blob store."""
        data = serialize(item)
        if len(data) <= MAX_OBJECT_SIZE_BYTES:
            return api_pb2.DataChunk(data_format=api_pb2.DATA_FORMAT_PICKLE, data=data, index=index)
        blob_id = self.new_id("bl")
        self.blobs[blob_id] = data
        return api_pb2.DataChunk(data_format=api_pb2.DATA_FORMAT_PICKLE, data_blob_id=blob_id, index=index)

    # ------------------------------------------------------------------ calls
    def FunctionMap(self, request):
        item = request.pipelined_inputs[0].input
        call = _Call(self.new_id("fc"), self.new_id("in"))
        self.calls[call.id] = call
        function = self.functions[request.function_id]
        options = function.get("options")
        self.gpus.append(_gpu_names(options.resources) if options is not None else [])
        args = self.blobs[item.args_blob_id] if item.args_blob_id else item.args
        self.input_bytes.append(len(args))
        self.inputs.put((call, request.function_id, item.method_name, args))
        return api_pb2.FunctionMapResponse(
            function_call_id=call.id,
            pipelined_inputs=[api_pb2.FunctionPutInputsResponseItem(idx=0, input_id=call.input_id)])

    def _container(self, function_id: str) -> Any:
        """The warm instance for a bound variant: deserialized and entered once, like a container start."""
        if function_id not in self.containers:
            function = self.functions[function_id]
            definition = self.functions[function.get("base", function_id)]["data"].ranked_functions[0].function
            user_cls = deserialize(definition.class_serialized, None)
            instance = user_cls()
            for enter in _find_callables_for_obj(instance, _PartialFunctionFlags.ENTER_POST_SNAPSHOT).values():
                enter()
            self.containers[function_id] = instance
        return self.containers[function_id]

    def run_inputs(self) -> None:
        """The "container": runs inputs one at a time in the main thread, as Modal runs a sync input.

        Cancellation and timeouts arrive as SIGUSR1, which raises ``InputCancellation``
        wherever the input is, as the handler of Modal's container entrypoint does.
        """
        def cancelled(signum, frame):
            raise InputCancellation("Input was cancelled by user")

        while (job := self.inputs.get()) is not None:
            call = job[0]
            if call.stopped is not None:  # cancelled while queued
                self._finish(call, api_pb2.GenericResult(status=call.stopped[0], exception=call.stopped[1]),
                            api_pb2.DATA_FORMAT_PICKLE)
                continue
            previous = signal.signal(signal.SIGUSR1, cancelled)
            try:
                self._run(*job)
            except InputCancellation:  # a signal that arrived as the input ended
                pass
            finally:
                signal.signal(signal.SIGUSR1, previous)

    def _run(self, call: _Call, function_id: str, method_name: str, args: bytes) -> None:
        options = self.functions[function_id].get("options")
        if options is not None and options.timeout_secs:
            threading.Timer(options.timeout_secs, call.stop, (
                api_pb2.GenericResult.GENERIC_STATUS_TIMEOUT, f"Function timed out after {options.timeout_secs} s",
            )).start()
        if self.fail == "internal":  # the container dies under the input: the OOM killer, a preemption
            self._finish(call, api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_INTERNAL_FAILURE,
                                              exception="Container was OOM-killed (exit code 137)"),
                        api_pb2.DATA_FORMAT_PICKLE)
            return
        try:
            call.running = True
            instance = self._container(function_id)
            _set_current_context_ids([call.input_id], [call.id], [""])
            method = _find_callables_for_obj(instance, _PartialFunctionFlags.CALLABLE_INTERFACE)[method_name]
            call_args, call_kwargs = deserialize(args, None)
            for item in method(*call_args, **call_kwargs):
                chunk = self._chunk(item, len(call.chunks) + 1)
                self.save()  # before the client can see the item: the test reads what led to it
                call.put(chunk)
            done = api_pb2.GeneratorDone(items_total=len(call.chunks))
            self._finish(call, api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS,
                                              data=done.SerializeToString()), api_pb2.DATA_FORMAT_GENERATOR_DONE)
        except InputCancellation:
            status, message = call.stopped or (api_pb2.GenericResult.GENERIC_STATUS_TERMINATED, "cancelled")
            self._finish(call, api_pb2.GenericResult(status=status, exception=message), api_pb2.DATA_FORMAT_PICKLE)
        except Exception as exc:  # the method raised: Modal sends the pickled exception back
            self._finish(call, api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_FAILURE,
                                              exception=repr(exc), data=serialize(exc)), api_pb2.DATA_FORMAT_PICKLE)
        finally:
            call.running = False

    def _finish(self, call: _Call, result: api_pb2.GenericResult, data_format: int) -> None:
        self.save()
        call.finish(result, data_format)

    async def FunctionGetOutputs(self, request):
        call = self.calls[request.function_call_id]
        deadline = time.monotonic() + request.timeout
        while call.result is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if call.result is None:
            return api_pb2.FunctionGetOutputsResponse()
        return api_pb2.FunctionGetOutputsResponse(outputs=[api_pb2.FunctionGetOutputsItem(
            result=call.result, idx=0, input_id=call.input_id, data_format=call.data_format)])

    async def FunctionCallGetDataOut(self, request):
        call = self.calls[request.function_call_id]
        sent = request.last_index
        while True:
            while sent < len(call.chunks):
                yield call.chunks[sent]
                sent += 1
            if call.result is not None:
                await asyncio.sleep(0.05)  # the client ends the stream once it has every item
                return
            await asyncio.sleep(0.01)

    def FunctionCallCancel(self, request):
        self.cancelled.append(request.function_call_id)
        self.calls[request.function_call_id].stop(api_pb2.GenericResult.GENERIC_STATUS_TERMINATED,
                                                  "Input was cancelled by user")
        return empty_pb2.Empty()

    def save(self) -> None:
        """Write the report where the test reads it (atomically: the test may read at any time)."""
        with self.saving:
            temporary = self.state / "report.json.new"
            temporary.write_text(json.dumps(self.report()))
            temporary.replace(self.state / "report.json")

    def report(self) -> dict[str, Any]:
        return {"rpcs": dict(self.rpcs), "images": self.images, "gpus": self.gpus, "fallbacks": self.fallbacks, "mounts": self.mounts,
                "containers": len(self.containers), "cancelled": len(self.cancelled),
                "input_bytes": self.input_bytes, "blobs": len(self.blobs)}


async def _serve(fake: FakeModal) -> None:
    blobs = web.Application(client_max_size=2**31)
    blobs.add_routes([web.put("/blob/{blob_id}", fake._put_blob), web.get("/blob/{blob_id}", fake._get_blob)])
    runner = web.AppRunner(blobs)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.blob_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/blob"
    server = Server([fake])
    await server.start("127.0.0.1", 0)
    print(server._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    server.close()
    await server.wait_closed()
    await runner.cleanup()
    fake.inputs.put(None)


if __name__ == "__main__":
    fake = FakeModal(Path(sys.argv[1]))
    fake.save()
    threading.Thread(target=asyncio.run, args=(_serve(fake),), daemon=True).start()
    fake.run_inputs()
