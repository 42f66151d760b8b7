"""Apps, functions and classes: what the client defines, checked as Modal's control plane checks it.

An app lives from AppCreate until its client says goodbye (AppClientDisconnect)
or its heartbeats lapse (``Config.app_heartbeat_lapse``); then its containers
are stopped and any later RPC on it or its functions fails with
``FAILED_PRECONDITION`` (the SDK's ``ConflictError``). Which status the real
server gives for a stopped app is not documented: this is a guess, named here
so a test that depends on it can be found.

GPU types are validated server-side, as Modal does (the client only
upper-cases): a type not in ``GPU_TYPES`` or a count outside 1..8 fails
FunctionCreate / FunctionBindParams with ``INVALID_ARGUMENT``.

Not as strict as Modal: secrets, volumes, schedules, web endpoints, retries and
most resource limits are stored, not checked; function and class names are not
checked for collisions; deployments (AppPublish of a named app) are accepted as
ephemeral apps.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from .server import State

# Modal's GPU types (docs guide/gpu), upper-cased as the client sends them.
GPU_TYPES = {"T4", "L4", "A10", "A10G", "L40S", "A100", "A100-40GB", "A100-80GB", "RTX-PRO-6000",
             "H100", "H100!", "H200", "B200", "B200+"}
MAX_GPU_COUNT = 8


def gpu_names(resources: api_pb2.Resources) -> list[str]:
    gpu = resources.gpu_config
    return [gpu.gpu_type + (f":{gpu.count}" if gpu.count > 1 else "")] if gpu.gpu_type else []


def check_gpu(resources: api_pb2.Resources) -> None:
    gpu = resources.gpu_config
    if not gpu.gpu_type:
        return
    if gpu.gpu_type not in GPU_TYPES:
        raise GRPCError(Status.INVALID_ARGUMENT, f"Invalid GPU type: {gpu.gpu_type!r}. "
                                                 f"Valid types are: {', '.join(sorted(GPU_TYPES))}")
    if not 1 <= (gpu.count or 1) <= MAX_GPU_COUNT:
        raise GRPCError(Status.INVALID_ARGUMENT, f"Invalid GPU count {gpu.count} for {gpu.gpu_type}: "
                                                 f"must be between 1 and {MAX_GPU_COUNT}")


@dataclass
class App:
    id: str
    last_heartbeat: float
    stopped: str = ""                               # why, once stopped
    functions: dict[str, str] = field(default_factory=dict)   # tag -> function id (AppPublish)
    classes: dict[str, str] = field(default_factory=dict)     # tag -> class id


@dataclass
class Function:
    id: str
    app_id: str
    name: str
    definition: api_pb2.Function | None = None     # set by FunctionCreate
    metadata: api_pb2.FunctionHandleMetadata | None = None
    base: Function | None = None                   # for a bound variant: the function it binds
    options: api_pb2.FunctionOptions | None = None
    serialized_params: bytes = b""

    @property
    def root(self) -> Function:
        return self.base or self

    def container_definition(self) -> api_pb2.Function:
        """The definition a container of this variant runs: the class's, with the variant's options applied."""
        definition = api_pb2.Function()
        data = self.root.definition
        definition.CopyFrom(data)
        if self.options is not None:
            if self.options.HasField("resources"):
                definition.resources.CopyFrom(self.options.resources)
            if self.options.HasField("timeout_secs"):
                definition.timeout_secs = self.options.timeout_secs
        return definition

    @property
    def gpus(self) -> list[str]:
        if self.options is not None and self.options.HasField("resources"):
            return gpu_names(self.options.resources)
        return gpu_names(self.root.definition.resources) if self.root.definition else []

    @property
    def max_containers(self) -> int | None:
        """The variant's cap on its containers (``with_options``, else the class's); None: no cap of Modal's."""
        if self.options is not None and self.options.concurrency_limit:
            return self.options.concurrency_limit
        definition = self.root.definition
        if definition is None:
            return None
        return definition.autoscaler_settings.max_containers or definition.concurrency_limit or None

    @property
    def timeout(self) -> float:
        if self.options is not None and self.options.HasField("timeout_secs") and self.options.timeout_secs:
            return self.options.timeout_secs
        return (self.root.definition.timeout_secs if self.root.definition else 0) or 300


class Apps:
    def __init__(self, state: State) -> None:
        self.state = state
        self.apps: dict[str, App] = {}
        self.functions: dict[str, Function] = {}
        self.classes: dict[str, str] = {}            # class id -> app id
        self.bound: dict[bytes, str] = {}            # FunctionBindParams request -> bound function id
        self.fallbacks: list[list[str]] = []
        self.on_app_stop: list[Any] = []             # callbacks (app id) -> None: containers stop
        self.stopped_apps: dict[str, str] = {}       # app id -> why

    def report(self) -> dict[str, Any]:
        return {"fallbacks": self.fallbacks, "apps_stopped": self.stopped_apps,
                "function_timeouts": [f.definition.timeout_secs for f in self.functions.values() if f.definition]}

    # ------------------------------------------------------------------ lookups the other services use
    def app(self, app_id: str) -> App:
        app = self.apps.get(app_id)
        if app is None:
            raise GRPCError(Status.NOT_FOUND, f"App {app_id!r} not found")
        if app.stopped:
            raise GRPCError(Status.FAILED_PRECONDITION, f"App {app_id} has stopped: {app.stopped}")
        return app

    def function(self, function_id: str) -> Function:
        function = self.functions.get(function_id)
        if function is None:
            raise GRPCError(Status.NOT_FOUND, f"Function {function_id!r} not found")
        self.app(function.app_id)
        return function

    def stop(self, app_id: str, why: str) -> None:
        app = self.apps[app_id]
        if not app.stopped:
            app.stopped = why
            self.stopped_apps[app_id] = why
            for callback in self.on_app_stop:
                callback(app_id)
            self.state.save()

    async def watch_heartbeats(self) -> None:
        """Stop apps whose client went quiet (a laptop asleep, a lost network)."""
        while True:
            await asyncio.sleep(min(1.0, self.state.config.app_heartbeat_lapse / 4))
            now = time.monotonic()
            if self.state.fail == "app-stopped":  # as after missed heartbeats, without waiting for the lapse
                for app in list(self.apps.values()):
                    if not app.stopped:
                        self.stop(app.id, "no heartbeat from its client (fault app-stopped)")
            for app in list(self.apps.values()):
                if not app.stopped and now - app.last_heartbeat > self.state.config.app_heartbeat_lapse:
                    self.stop(app.id, f"no heartbeat from its client for {now - app.last_heartbeat:.0f} s")

    # ------------------------------------------------------------------ RPCs
    def ClientHello(self, request, ctx):
        return api_pb2.ClientHelloResponse()

    def EnvironmentGetOrCreate(self, request, ctx):
        return api_pb2.EnvironmentGetOrCreateResponse(
            environment_id="en-fake", metadata=api_pb2.EnvironmentMetadata(
                name=request.deployment_name or "main",
                settings=api_pb2.EnvironmentSettings(image_builder_version="2025.06")))

    def AppCreate(self, request, ctx):
        if request.app_state not in (api_pb2.APP_STATE_EPHEMERAL, api_pb2.APP_STATE_DETACHED,
                                     api_pb2.APP_STATE_UNSPECIFIED):
            raise GRPCError(Status.INVALID_ARGUMENT, f"unexpected app state {request.app_state}")
        app = App(self.state.new_id("ap"), time.monotonic())
        self.apps[app.id] = app
        return api_pb2.AppCreateResponse(app_id=app.id, app_page_url=f"https://modal.invalid/apps/{app.id}")

    def AppHeartbeat(self, request, ctx):
        app = self.app(request.app_id)
        if self.state.fail == "network-loss":  # the heartbeat never arrives
            raise GRPCError(Status.UNAVAILABLE, "connection lost")
        app.last_heartbeat = time.monotonic()
        return empty_pb2.Empty()

    def AppClientDisconnect(self, request, ctx):
        if request.app_id not in self.apps:
            raise GRPCError(Status.NOT_FOUND, f"App {request.app_id!r} not found")
        self.stop(request.app_id, "its client disconnected" + (f" ({request.reason})" if request.reason else ""))
        return empty_pb2.Empty()

    def AppPublish(self, request, ctx):
        app = self.app(request.app_id)
        for tag, function_id in request.function_ids.items():
            if self.functions.get(function_id, None) is None or self.functions[function_id].app_id != app.id:
                raise GRPCError(Status.INVALID_ARGUMENT, f"function {function_id} is not in app {app.id}")
            if self.functions[function_id].definition is None:
                raise GRPCError(Status.FAILED_PRECONDITION, f"function {tag} ({function_id}) was never created")
        for class_id in request.class_ids.values():
            if self.classes.get(class_id) != app.id:
                raise GRPCError(Status.INVALID_ARGUMENT, f"class {class_id} is not in app {app.id}")
        app.functions, app.classes = dict(request.function_ids), dict(request.class_ids)
        return api_pb2.AppPublishResponse(url=f"https://modal.invalid/apps/{app.id}")

    def _handle_metadata(self, name: str, function_type: int, methods, is_method: bool = False,
                         method_name: str = "") -> api_pb2.FunctionHandleMetadata:
        metadata = api_pb2.FunctionHandleMetadata(
            function_name=name, function_type=function_type, is_method=is_method, use_method_name=method_name,
            class_parameter_info=api_pb2.ClassParameterInfo(
                format=api_pb2.ClassParameterInfo.PARAM_SERIALIZATION_FORMAT_PROTO),
            supported_input_formats=[api_pb2.DATA_FORMAT_PICKLE],
            supported_output_formats=[api_pb2.DATA_FORMAT_PICKLE],
            max_object_size_bytes=self.state.config.max_object_size)
        for method, definition in methods.items():
            metadata.method_handle_metadata[method].CopyFrom(self._handle_metadata(
                definition.function_name, definition.function_type, {}, is_method=True, method_name=method))
        return metadata

    def FunctionPrecreate(self, request, ctx):
        self.app(request.app_id)
        function_id = request.existing_function_id or self.state.new_id("fu")
        metadata = self._handle_metadata(request.function_name, request.function_type, request.method_definitions)
        self.functions[function_id] = Function(function_id, request.app_id, request.function_name, metadata=metadata)
        return api_pb2.FunctionPrecreateResponse(function_id=function_id, handle_metadata=metadata)

    def FunctionCreate(self, request, ctx):
        self.app(request.app_id)
        if request.HasField("function_data"):  # GPU fallbacks: one ranked definition per choice
            data = request.function_data
            for ranked in data.ranked_functions:
                check_gpu(ranked.function.resources)
            self.fallbacks.append([name for ranked in data.ranked_functions
                                   for name in gpu_names(ranked.function.resources)])
            definition = api_pb2.Function()
            definition.CopyFrom(data.ranked_functions[0].function)  # the first choice is always free here
        else:
            definition = request.function
            check_gpu(definition.resources)
            data = api_pb2.FunctionData(
                function_name=definition.function_name, function_type=definition.function_type,
                ranked_functions=[api_pb2.FunctionData.RankedFunction(rank=0, function=definition)])
            for method, method_definition in definition.method_definitions.items():
                data.method_definitions[method].CopyFrom(method_definition)
        if not (definition.function_serialized or definition.class_serialized or definition.module_name):
            raise GRPCError(Status.INVALID_ARGUMENT, "function has neither serialized code nor a module to import")
        if not definition.image_id:
            raise GRPCError(Status.INVALID_ARGUMENT, "function has no image")
        function_id = request.existing_function_id or self.state.new_id("fu")
        existing = self.functions.get(function_id)
        if request.existing_function_id and existing is None:
            raise GRPCError(Status.NOT_FOUND, f"Function {function_id!r} was not precreated")
        metadata = self._handle_metadata(data.function_name, data.function_type, data.method_definitions)
        self.functions[function_id] = Function(function_id, request.app_id, data.function_name,
                                               definition=definition, metadata=metadata)
        return api_pb2.FunctionCreateResponse(function_id=function_id, handle_metadata=metadata, function_data=data)

    def FunctionBindParams(self, request, ctx):
        base = self.function(request.function_id)
        if base.definition is None:
            raise GRPCError(Status.FAILED_PRECONDITION, f"Function {base.id} was never created")
        if request.HasField("function_options") and request.function_options.HasField("resources"):
            check_gpu(request.function_options.resources)
        key = request.SerializeToString(deterministic=True)  # Modal's bound ids are deterministic too
        bound_id = self.bound.setdefault(key, self.state.new_id("fu"))
        options = request.function_options if request.HasField("function_options") else None
        self.functions[bound_id] = Function(bound_id, base.app_id, base.name, metadata=base.metadata, base=base,
                                            options=options, serialized_params=request.serialized_params)
        return api_pb2.FunctionBindParamsResponse(bound_function_id=bound_id, handle_metadata=base.metadata)

    def ClassCreate(self, request, ctx):
        self.app(request.app_id)
        class_id = self.state.new_id("cs")
        self.classes[class_id] = request.app_id
        return api_pb2.ClassCreateResponse(class_id=class_id, handle_metadata=api_pb2.ClassHandleMetadata())
