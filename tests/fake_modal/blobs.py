"""Modal's blob store: payloads over the inline limit, uploaded to presigned URLs (here: HTTP on loopback).

BlobCreate answers with one upload URL, or, at or above
``Config.multipart_threshold`` bytes, with a multipart upload (part URLs of
``Config.multipart_part_size`` and a completion URL), as Modal's server does
for large objects; the client's ``blob_utils.py`` then PUTs the parts
concurrently and POSTs the S3-style completion XML. The store checks what S3
and Modal check: each part's ETag is its MD5; the completion lists every part
in order with its ETag and answers the multipart ETag (MD5 of the part MD5s,
``-N``); the assembled object must have the length, MD5 and SHA-256 the client
declared in BlobCreate, else the blob is refused (a later BlobGet or use fails).

``FAKE_MODAL_CLIENT_BLOB_URL`` (a benchmark's knob): the URLs handed to the
notebook's client start with it instead of the store's own (e.g. a throttling
proxy in front of the store); containers still get the direct URL.

Complete blobs are kept as files under the state directory (``blobs/``), not in
memory: a long benchmark moves tens of GiB through the store.

Not as strict as Modal: URLs do not expire, nor do blobs; no Content-MD5 header is expected
(Modal's client only sends it to amazonaws.com/r2 hosts); no byte budget.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from .server import State


@dataclass
class _Upload:
    length: int
    md5_b64: str
    sha256_b64: str
    parts: dict[int, bytes] = field(default_factory=dict)   # multipart: part number -> bytes
    n_parts: int = 0


class Blobs:
    def __init__(self, state: State) -> None:
        self.state = state
        self.url = ""                                # set once the HTTP endpoint listens
        self.client_url = os.environ.get("FAKE_MODAL_CLIENT_BLOB_URL", "")  # for the notebook's client, if set
        self._folder = state.root / "blobs"          # blob id -> a file there, once complete and checked
        self._folder.mkdir(parents=True, exist_ok=True)
        self._sizes: dict[str, int] = {}
        self.uploads: dict[str, _Upload] = {}        # blob id -> upload under way
        self.multipart_uploads = 0
        self.refused: list[str] = []

    def base(self, ctx) -> str:
        """Where the caller fetches blobs: the notebook's client (no task) may be sent through a proxy."""
        return self.client_url if ctx.task is None and self.client_url else self.url

    def report(self) -> dict[str, Any]:
        return {"blob_url": self.url, "blobs": len(self._sizes), "blob_bytes": sum(self._sizes.values()),
                "multipart_uploads": self.multipart_uploads, "blobs_refused": self.refused}

    def get(self, blob_id: str) -> bytes:
        return self._path(blob_id).read_bytes()

    def require(self, blob_id: str) -> int:
        """The blob's size; NOT_FOUND (as Modal answers) where no upload of it completed."""
        self._path(blob_id)
        return self._sizes[blob_id]

    def put(self, data: bytes) -> str:
        """A blob the server itself writes (never needed by Modal's own flow here; kept for tools)."""
        blob_id = self.state.new_id("bl")
        self._keep(blob_id, data)
        return blob_id

    def _path(self, blob_id: str) -> Path:
        if blob_id not in self._sizes:
            raise GRPCError(Status.NOT_FOUND, f"Blob {blob_id!r} not found (or its upload never completed)")
        return self._folder / blob_id

    def _keep(self, blob_id: str, data: bytes) -> None:
        (self._folder / blob_id).write_bytes(data)
        self._sizes[blob_id] = len(data)

    # ------------------------------------------------------------------ RPCs
    def BlobCreate(self, request, ctx):
        if not request.content_md5 or not request.content_sha256_base64:
            raise GRPCError(Status.INVALID_ARGUMENT, "BlobCreate needs content_md5 and content_sha256_base64")
        blob_id = self.state.new_id("bl")
        upload = _Upload(request.content_length, request.content_md5, request.content_sha256_base64)
        self.uploads[blob_id] = upload
        config, base = self.state.config, self.base(ctx)
        if request.content_length >= config.multipart_threshold:
            upload.n_parts = max(1, -(-request.content_length // config.multipart_part_size))
            self.multipart_uploads += 1
            return api_pb2.BlobCreateResponse(blob_ids=[blob_id], multiparts=api_pb2.MultiPartUploadList(items=[
                api_pb2.MultiPartUpload(
                    part_length=config.multipart_part_size,
                    upload_urls=[f"{base}/{blob_id}/part/{n}" for n in range(1, upload.n_parts + 1)],
                    completion_url=f"{base}/{blob_id}/complete")]))
        return api_pb2.BlobCreateResponse(blob_ids=[blob_id], upload_urls=api_pb2.UploadUrlList(
            items=[f"{base}/{blob_id}"]))

    def BlobGet(self, request, ctx):
        self.get(request.blob_id)
        return api_pb2.BlobGetResponse(download_url=f"{self.base(ctx)}/{request.blob_id}")

    # ------------------------------------------------------------------ HTTP
    def routes(self) -> list[Any]:
        return [web.put("/blob/{blob_id}", self._put), web.get("/blob/{blob_id}", self._get),
                web.put("/blob/{blob_id}/part/{n}", self._put_part),
                web.post("/blob/{blob_id}/complete", self._complete)]

    def _finish(self, blob_id: str, data: bytes) -> str | None:
        """Check the object against what BlobCreate declared; None if it passes, else why not."""
        upload = self.uploads.pop(blob_id)
        why = None
        if len(data) != upload.length:
            why = f"length {len(data)} != declared {upload.length}"
        elif base64.b64encode(hashlib.md5(data).digest()).decode() != upload.md5_b64:
            why = "MD5 differs from the declared content_md5"
        elif base64.b64encode(hashlib.sha256(data).digest()).decode() != upload.sha256_b64:
            why = "SHA-256 differs from the declared content_sha256_base64"
        if why:
            self.refused.append(f"{blob_id}: {why}")
        else:
            self._keep(blob_id, data)
        self.state.save()
        return why

    async def _put(self, request: web.Request) -> web.Response:
        blob_id = request.match_info["blob_id"]
        upload = self.uploads.get(blob_id)
        if upload is None or upload.n_parts:
            return web.Response(status=403, text="no single-part upload for this blob")
        data = await request.read()
        why = self._finish(blob_id, data)
        if why:
            return web.Response(status=400, text=why)
        return web.Response(headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    async def _put_part(self, request: web.Request) -> web.Response:
        blob_id, number = request.match_info["blob_id"], int(request.match_info["n"])
        upload = self.uploads.get(blob_id)
        if upload is None or not 1 <= number <= upload.n_parts:
            return web.Response(status=403, text="no such part")
        data = await request.read()
        last = number == upload.n_parts
        expected = (upload.length - (upload.n_parts - 1) * self.state.config.multipart_part_size) if last \
            else self.state.config.multipart_part_size
        if len(data) != expected:
            return web.Response(status=400, text=f"part {number} has {len(data)} bytes, expected {expected}")
        upload.parts[number] = data
        return web.Response(headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    async def _complete(self, request: web.Request) -> web.Response:
        blob_id = request.match_info["blob_id"]
        upload = self.uploads.get(blob_id)
        if upload is None or not upload.n_parts:
            return web.Response(status=404, text="NoSuchUpload")
        body = (await request.read()).decode()
        listed = [(int(n), etag) for n, etag in
                  re.findall(r"<PartNumber>(\d+)</PartNumber>\s*<ETag>\"?([0-9a-f]+)\"?</ETag>", body)]
        every = list(range(1, upload.n_parts + 1))
        if [n for n, _ in listed] != every or sorted(upload.parts) != every:
            return web.Response(status=400, text="InvalidPart: the completion must list every uploaded part in order")
        for n, etag in listed:
            if hashlib.md5(upload.parts[n]).hexdigest() != etag:
                return web.Response(status=400, text=f"InvalidPart: ETag of part {n} does not match")
        data = b"".join(upload.parts[n] for n in range(1, upload.n_parts + 1))
        etag = hashlib.md5(b"".join(hashlib.md5(upload.parts[n]).digest() for n in sorted(upload.parts))).hexdigest()
        why = self._finish(blob_id, data)
        if why:
            return web.Response(status=400, text=why)
        return web.Response(text=f"<CompleteMultipartUploadResult><ETag>\"{etag}-{upload.n_parts}\"</ETag>"
                                 "</CompleteMultipartUploadResult>")

    async def _get(self, request: web.Request) -> web.Response:
        blob_id = request.match_info["blob_id"]
        if blob_id not in self._sizes:
            return web.Response(status=404, text="NoSuchKey")
        return web.FileResponse(self._folder / blob_id)
