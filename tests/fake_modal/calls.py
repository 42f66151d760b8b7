"""Function calls as the notebook's client sees them: FunctionMap, outputs, the data stream, cancel.

A call holds one input (the stand-in serves ``.remote``/``.remote_gen``, not
``.map`` batches). Its result is what the container put (FunctionPutOutputs),
or what the server decided: ``TERMINATED`` when the client cancelled it,
``TIMEOUT`` when the function's timeout passed while it ran (scheduling time
does not count, as on Modal), ``INTERNAL_FAILURE`` when its container died
under it (fault ``internal``). Generator items arrive on the data stream in the
order containers put them; a re-run after a preemption starts again at index 1
and the client drops what it has seen (``_stream_function_call_data``), as it
does on Modal.

Checked as Modal does: the function exists, was created and belongs to a
running app; an inline argument is at most the announced
``max_object_size_bytes`` (bigger must go through the blob store), and a blob
argument was uploaded; the method exists on the class.

Not as strict as Modal: no input plane, no ``.map``/``.spawn`` specifics, no
JWTs; fault ``gpu`` (a workspace GPU limit) answers RESOURCE_EXHAUSTED at once.
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

from .apps import Apps, Function
from .server import State

TERMINATED = api_pb2.GenericResult.GENERIC_STATUS_TERMINATED


@dataclass
class Call:
    id: str
    input_id: str
    function: Function
    input: api_pb2.FunctionInput
    retry_count: int = 0
    chunks: list[api_pb2.DataChunk] = field(default_factory=list)
    result: api_pb2.GenericResult | None = None
    data_format: int = api_pb2.DATA_FORMAT_PICKLE
    cancelled: str = ""           # why the server stopped it (cancel, timeout), if it did
    container: Any = None         # the container running it now
    preempted: bool = False
    outputs_this_attempt: int = 0  # FunctionCallPutDataOut calls of the current attempt
    queued_at: float = field(default_factory=time.monotonic)

    def finish(self, result: api_pb2.GenericResult, data_format: int = api_pb2.DATA_FORMAT_PICKLE) -> None:
        if self.result is None:
            self.result, self.data_format = result, data_format


class Calls:
    def __init__(self, state: State, apps: Apps, blobs: Any) -> None:
        self.state, self.apps, self.blobs = state, apps, blobs
        self.calls: dict[str, Call] = {}
        self.by_input: dict[str, Call] = {}
        self.workers: Any = None                    # containers.Workers, set by the server
        self.gpus: list[list[str]] = []
        self.input_bytes: list[int] = []
        self.cancelled: list[str] = []

    def report(self) -> dict[str, Any]:
        return {"gpus": self.gpus, "input_bytes": self.input_bytes, "cancelled": len(self.cancelled),
                "calls": {c.id: {"status": c.result.status if c.result else None, "retries": c.retry_count,
                                 "items": len(c.chunks)} for c in self.calls.values()}}

    def call(self, call_id: str) -> Call:
        call = self.calls.get(call_id)
        if call is None:
            raise GRPCError(Status.NOT_FOUND, f"Function call {call_id!r} not found")
        return call

    def FunctionMap(self, request, ctx):
        function = self.apps.function(request.function_id)
        if function.root.definition is None:
            raise GRPCError(Status.FAILED_PRECONDITION, f"Function {function.id} was never created")
        if self.state.fail == "gpu" and function.gpus:
            raise GRPCError(Status.RESOURCE_EXHAUSTED, f"Your workspace has reached its limit of "
                                                       f"{function.gpus[0].split(':')[0]} GPUs")
        if len(request.pipelined_inputs) != 1:
            raise GRPCError(Status.UNIMPLEMENTED, "the fake serves calls of exactly one input")
        item = request.pipelined_inputs[0].input
        which = item.WhichOneof("args_oneof")
        if which == "args":
            if len(item.args) > self.state.config.max_object_size:
                raise GRPCError(Status.INVALID_ARGUMENT, f"inline input of {len(item.args)} bytes exceeds the "
                                                         f"maximum of {self.state.config.max_object_size} bytes")
            size = len(item.args)
        elif which == "args_blob_id":
            size = self.blobs.require(item.args_blob_id)
        else:
            raise GRPCError(Status.INVALID_ARGUMENT, "input has neither args nor args_blob_id")
        methods = function.root.definition.method_definitions
        if function.root.definition.is_class and item.method_name not in methods:
            raise GRPCError(Status.INVALID_ARGUMENT, f"method {item.method_name!r} is not defined on the class "
                                                     f"(defined: {sorted(methods)})")
        call = Call(self.state.new_id("fc"), self.state.new_id("in"), function, item)
        self.calls[call.id] = call
        self.by_input[call.input_id] = call
        self.gpus.append(function.gpus)
        self.input_bytes.append(size)
        self.workers.enqueue(call)
        return api_pb2.FunctionMapResponse(
            function_call_id=call.id,
            pipelined_inputs=[api_pb2.FunctionPutInputsResponseItem(idx=0, input_id=call.input_id)])

    async def FunctionGetOutputs(self, request, ctx):
        call = self.call(request.function_call_id)
        deadline = time.monotonic() + min(request.timeout, 60)
        while call.result is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if call.result is None:
            return api_pb2.FunctionGetOutputsResponse()
        return api_pb2.FunctionGetOutputsResponse(outputs=[api_pb2.FunctionGetOutputsItem(
            result=call.result, idx=0, input_id=call.input_id, data_format=call.data_format,
            retry_count=call.retry_count)])

    async def FunctionCallGetDataOut(self, request, ctx):
        call = self.call(request.function_call_id)
        sent = 0
        while sent < len(call.chunks) and call.chunks[sent].index <= request.last_index:
            sent += 1
        while True:
            while sent < len(call.chunks):
                yield call.chunks[sent]
                sent += 1
            if call.result is not None:
                await asyncio.sleep(0.05)  # the client ends the stream once it has every item
                if sent == len(call.chunks):
                    return
            await asyncio.sleep(0.01)

    def FunctionCallCancel(self, request, ctx):
        call = self.call(request.function_call_id)
        self.cancelled.append(call.id)
        self.workers.stop_call(call, TERMINATED, "Input was cancelled by user",
                               terminate_container=request.terminate_containers)
        return empty_pb2.Empty()
