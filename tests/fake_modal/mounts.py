"""Mounts: files the client uploads (MountPutFile), checked by hash, laid out for containers.

A file is stored under its SHA-256, which the server checks against the bytes
(inline, or from a blob). MountBatchedCheckExistence answers which hashes are
missing; MountGetOrCreate refuses a mount naming a file whose contents were
never uploaded, and a file name that is not absolute. ``lay_out`` writes a
function's mounts under a container's root directory, so ``/root/modal_magic/x.py``
becomes ``<root>/root/modal_magic/x.py``.

Not as strict as Modal: named (deployed) mounts are accepted empty; mode bits
are applied but ownership is not; there is no size limit per file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from .server import State


class Mounts:
    def __init__(self, state: State, blobs: Any) -> None:
        self.state = state
        self.blobs = blobs
        self.files: dict[str, bytes] = {}                 # sha256 hex -> contents
        self.mounts: dict[str, list[api_pb2.MountFile]] = {}
        self.described: list[Any] = []                   # per mount: its name, or its file names (report)

    def report(self) -> dict[str, Any]:
        return {"mounts": self.described, "mount_files": len(self.files)}

    def MountBatchedCheckExistence(self, request, ctx):
        return api_pb2.MountBatchedCheckExistenceResponse(
            missing_sha256_hex_hashes=[h for h in request.sha256_hex_hashes if h not in self.files])

    def MountPutFile(self, request, ctx):
        which = request.WhichOneof("data_oneof")
        if which == "data_blob_id":
            data = self.blobs.get(request.data_blob_id)
        elif which == "data":
            data = request.data
        else:  # asking whether the file exists
            return api_pb2.MountPutFileResponse(exists=request.sha256_hex in self.files)
        if hashlib.sha256(data).hexdigest() != request.sha256_hex:
            raise GRPCError(Status.INVALID_ARGUMENT, f"sha256 mismatch for uploaded file {request.sha256_hex}")
        self.files[request.sha256_hex] = data
        return api_pb2.MountPutFileResponse(exists=True)

    def MountGetOrCreate(self, request, ctx):
        if request.deployment_name and not request.files:
            self.described.append(request.deployment_name)
            files: list[api_pb2.MountFile] = []
        else:
            for file in request.files:
                if not file.filename.startswith("/"):
                    raise GRPCError(Status.INVALID_ARGUMENT, f"mount file name {file.filename!r} is not absolute")
                if file.sha256_hex not in self.files:
                    raise GRPCError(Status.FAILED_PRECONDITION,
                                    f"mount file {file.filename} ({file.sha256_hex}) was never uploaded")
            files = list(request.files)
            self.described.append(sorted(f.filename for f in files))
        mount_id = self.state.new_id("mo")
        self.mounts[mount_id] = files
        digest = hashlib.sha256(b"".join(f.filename.encode() + f.sha256_hex.encode() for f in files)).hexdigest()
        return api_pb2.MountGetOrCreateResponse(
            mount_id=mount_id, handle_metadata=api_pb2.MountHandleMetadata(content_checksum_sha256_hex=digest))

    def lay_out(self, mount_ids: list[str], root: Path) -> None:
        for mount_id in mount_ids:
            if mount_id not in self.mounts:
                raise GRPCError(Status.NOT_FOUND, f"Mount {mount_id!r} not found")
            for file in self.mounts[mount_id]:
                target = root / file.filename.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self.files[file.sha256_hex])
                if file.mode:
                    target.chmod(file.mode & 0o777)
