"""``modal.Queue`` and ``modal.Dict``: the server side of both, reachable from the notebook and containers.

Ephemeral objects (``Queue.ephemeral()``, ``Dict.ephemeral()``) live while
their creator heartbeats; named ones are created with ``create_if_missing``
and looked up otherwise (NOT_FOUND when missing). Queues keep one FIFO per
partition (the default partition has the empty key); QueueGet long-polls up to
its ``timeout``; a partition holds at most ``MAX_PARTITION_ITEMS`` values
(QueuePut answers RESOURCE_EXHAUSTED beyond, which the client retries as
"full"); a partition key is 1..64 bytes. Dict keys and values are the client's
serialized bytes, compared as bytes.

Not as strict as Modal: partition TTLs and the ephemeral objects' expiry after
missed heartbeats are not modelled; no size limit per value.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from google.protobuf import empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from .server import State

MAX_PARTITION_ITEMS = 5000
EPHEMERAL = api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL
CREATE_IF_MISSING = api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING


class Queues:
    def __init__(self, state: State) -> None:
        self.state = state
        self.queues: dict[str, dict[bytes, collections.deque]] = {}
        self.named_queues: dict[str, str] = {}
        self.dicts: dict[str, dict[bytes, bytes]] = {}
        self.named_dicts: dict[str, str] = {}
        self.puts = 0
        self.gets = 0

    def report(self) -> dict[str, Any]:
        return {"queues": len(self.queues), "queue_puts": self.puts, "queue_gets": self.gets, "dicts": len(self.dicts)}

    def _get_or_create(self, request, named: dict[str, str], store: dict, prefix: str, kind: str) -> str:
        if request.object_creation_type == EPHEMERAL:
            if request.deployment_name:
                raise GRPCError(Status.INVALID_ARGUMENT, f"an ephemeral {kind} has no name")
            object_id = self.state.new_id(prefix)
            store[object_id] = {}
            return object_id
        if not request.deployment_name:
            raise GRPCError(Status.INVALID_ARGUMENT, f"a {kind} needs a name unless it is ephemeral")
        if request.deployment_name not in named:
            if request.object_creation_type != CREATE_IF_MISSING:
                raise GRPCError(Status.NOT_FOUND, f"{kind} {request.deployment_name!r} not found")
            named[request.deployment_name] = self.state.new_id(prefix)
            store[named[request.deployment_name]] = {}
        return named[request.deployment_name]

    # ------------------------------------------------------------------ queues
    def _queue(self, queue_id: str) -> dict[bytes, collections.deque]:
        if queue_id not in self.queues:
            raise GRPCError(Status.NOT_FOUND, f"Queue {queue_id!r} not found")
        return self.queues[queue_id]

    @staticmethod
    def _check_partition(key: bytes) -> None:
        if len(key) > 64:
            raise GRPCError(Status.INVALID_ARGUMENT, "partition key must be at most 64 bytes")

    def QueueGetOrCreate(self, request, ctx):
        queue_id = self._get_or_create(request, self.named_queues, self.queues, "qu", "Queue")
        return api_pb2.QueueGetOrCreateResponse(queue_id=queue_id)

    def QueueHeartbeat(self, request, ctx):
        self._queue(request.queue_id)
        return empty_pb2.Empty()

    def QueuePut(self, request, ctx):
        queue = self._queue(request.queue_id)
        self._check_partition(request.partition_key)
        partition = queue.setdefault(request.partition_key, collections.deque())
        if len(partition) + len(request.values) > MAX_PARTITION_ITEMS:
            raise GRPCError(Status.RESOURCE_EXHAUSTED, f"Queue partition is full ({MAX_PARTITION_ITEMS} items)")
        partition.extend(request.values)
        self.puts += len(request.values)
        return empty_pb2.Empty()

    async def QueueGet(self, request, ctx):
        queue = self._queue(request.queue_id)
        self._check_partition(request.partition_key)
        if request.n_values < 1:
            raise GRPCError(Status.INVALID_ARGUMENT, "n_values must be at least 1")
        deadline = time.monotonic() + min(request.timeout, 60)
        while True:
            partition = queue.get(request.partition_key)
            if partition:
                values = [partition.popleft() for _ in range(min(request.n_values, len(partition)))]
                self.gets += len(values)
                return api_pb2.QueueGetResponse(values=values)
            if time.monotonic() >= deadline:
                return api_pb2.QueueGetResponse()
            await asyncio.sleep(0.02)

    def QueueLen(self, request, ctx):
        queue = self._queue(request.queue_id)
        if request.total:
            return api_pb2.QueueLenResponse(len=sum(map(len, queue.values())))
        return api_pb2.QueueLenResponse(len=len(queue.get(request.partition_key, ())))

    def QueueClear(self, request, ctx):
        queue = self._queue(request.queue_id)
        if request.all_partitions:
            if request.partition_key:
                raise GRPCError(Status.INVALID_ARGUMENT, "give a partition key or all_partitions, not both")
            queue.clear()
        else:
            queue.pop(request.partition_key, None)
        return empty_pb2.Empty()

    # ------------------------------------------------------------------ dicts
    def _dict(self, dict_id: str) -> dict[bytes, bytes]:
        if dict_id not in self.dicts:
            raise GRPCError(Status.NOT_FOUND, f"Dict {dict_id!r} not found")
        return self.dicts[dict_id]

    def DictGetOrCreate(self, request, ctx):
        dict_id = self._get_or_create(request, self.named_dicts, self.dicts, "di", "Dict")
        for entry in request.data:
            self.dicts[dict_id][entry.key] = entry.value
        return api_pb2.DictGetOrCreateResponse(dict_id=dict_id)

    def DictHeartbeat(self, request, ctx):
        self._dict(request.dict_id)
        return empty_pb2.Empty()

    def DictUpdate(self, request, ctx):
        store = self._dict(request.dict_id)
        if request.if_not_exists:
            if len(request.updates) != 1:
                raise GRPCError(Status.INVALID_ARGUMENT, "put(skip_if_exists=True) takes exactly one entry")
            if request.updates[0].key in store:
                return api_pb2.DictUpdateResponse(created=False)
        for entry in request.updates:
            store[entry.key] = entry.value
        return api_pb2.DictUpdateResponse(created=True)

    def DictGet(self, request, ctx):
        store = self._dict(request.dict_id)
        if request.key in store:
            return api_pb2.DictGetResponse(found=True, value=store[request.key])
        return api_pb2.DictGetResponse(found=False)

    def DictContains(self, request, ctx):
        return api_pb2.DictContainsResponse(found=request.key in self._dict(request.dict_id))

    def DictLen(self, request, ctx):
        return api_pb2.DictLenResponse(len=len(self._dict(request.dict_id)))

    def DictPop(self, request, ctx):
        store = self._dict(request.dict_id)
        if request.key in store:
            return api_pb2.DictPopResponse(found=True, value=store.pop(request.key))
        return api_pb2.DictPopResponse(found=False)

    def DictClear(self, request, ctx):
        self._dict(request.dict_id).clear()
        return empty_pb2.Empty()
