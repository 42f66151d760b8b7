"""Image builds: each layer parsed as a Dockerfile and its ``RUN`` lines run by ``/bin/sh``.

Modal turns every element of ``Image.dockerfile_commands`` into one line of a
Dockerfile (``_image.py``: ``["FROM base"] + [f"RUN {cmd}" ...]``; its own
``poetry_install_from_file`` sends a backslash continuation as two elements).
So the layer's text is the elements joined by newlines, and it is parsed the
way Docker's parser does: one instruction per line, a line continued only when
it ends with a backslash, blank lines and ``#`` comments skipped, an unknown
instruction word a parse error that fails the build. An element that spans
several lines is named in that error.

Then every ``RUN`` line is executed by ``/bin/sh -c`` in a scratch directory
(``<state>/builds/<image id>``, the working directory), with ``python`` the
interpreter of this process (containers run it too). Package managers are
stand-ins, first on ``PATH``: ``pip``/``pip3``/``uv`` (and ``python -m pip`` /
``python -m uv``) do not download anything; ``install`` checks each requirement
against the distributions installed in this interpreter and fails the build,
naming it, when none satisfies it (``packaging`` specifiers, pre-releases
allowed). Installer tooling (``pip``, ``uv``, ``wheel``, ``setuptools``) is
accepted as is. ``apt-get`` and ``debconf-set-selections`` are accepted without
running (system packages are not modelled). ``COPY`` of a context file or of
uv's binary places it under the scratch directory, and that absolute path in
later ``RUN`` lines of the layer is mapped there.

Fault ``image``: the scratch environment's ``torch`` fails to import (as a CUDA
build without its libraries does), so the image's own import check, if it
checks torch, fails with its own words.

Not as strict as Modal: ``FROM`` a registry image other than ``python:X.Y`` is
accepted unchecked (a ``python:`` tag must match this interpreter's X.Y, the
only Python the stand-in's containers have); ``ENV``/``WORKDIR``/``ARG`` are
recorded, not all honoured; nothing is installed, so a build never takes
minutes and a requirement's own dependencies are not resolved.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from .server import State

INSTRUCTIONS = {"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
                "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}
_SHIMS = Path(__file__).parent / "shims"
_RUN_TIMEOUT = 300


class ParseError(Exception):
    pass


def parse_dockerfile(elements: list[str]) -> list[tuple[int, str, str]]:
    """``(line number, INSTRUCTION, arguments)`` per instruction, as Docker reads the joined lines."""
    lines = "\n".join(elements).split("\n")
    element_of: list[int] = [i for i, element in enumerate(elements) for _ in element.split("\n")]
    spans = {i: len(element.split("\n")) for i, element in enumerate(elements) if "\n" in element}
    instructions: list[tuple[int, str, str]] = []
    pending: list[str] = []
    start = 0
    for number, line in enumerate(lines, start=1):
        if not pending:
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            start = number
        if line.rstrip().endswith("\\"):
            pending.append(line.rstrip()[:-1])
            continue
        text = " ".join([*pending, line]).strip()
        pending = []
        word, _, arguments = text.partition(" ")
        if word.upper() not in INSTRUCTIONS:
            element = element_of[start - 1]
            hint = (f" (element {element + 1} of dockerfile_commands spans {spans[element]} lines: a Dockerfile "
                    "instruction ends at a newline unless the line ends with a backslash)" if element in spans else "")
            raise ParseError(f"Dockerfile parse error line {start}: unknown instruction: {word.upper()}{hint}")
        instructions.append((start, word.upper(), arguments.strip()))
    if pending:
        raise ParseError("Dockerfile parse error: the last line ends with a backslash")
    return instructions


@dataclass
class Build:
    id: str
    layers: str
    base: Build | None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    ok: bool = False
    log: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    finished: float = 0.0


class Images:
    def __init__(self, state: State, mounts: Any) -> None:
        self.state = state
        self.mounts = mounts
        self.builds: dict[str, Build] = {}       # image id -> its build
        self.by_content: dict[bytes, str] = {}   # the layer request -> image id (Modal dedupes by content)
        self.layers: list[str] = []              # every layer asked for, as text (report)
        self.failed: list[str] = []              # image ids whose build failed

    def report(self) -> dict[str, Any]:
        return {"images": self.layers, "image_builds_failed": self.failed,
                "image_builds": len(self.builds)}

    def ImageGetOrCreate(self, request, ctx):
        image = request.image
        self.layers.append("\n".join(image.dockerfile_commands))
        fault = self.state.fail if self.state.fail == "image" else ""
        key = request.image.SerializeToString(deterministic=True) + fault.encode()  # a broken build is its own
        cached = self.builds.get(self.by_content.get(key, ""))
        if cached is not None and not request.force_build and not (cached.done.is_set() and not cached.ok):
            build = cached  # a built (or building) layer is reused; a failed one is built again
            if build.done.is_set():
                return api_pb2.ImageGetOrCreateResponse(image_id=build.id, result=self._result(build))
            return api_pb2.ImageGetOrCreateResponse(image_id=build.id)
        base = None
        if image.base_images:
            base = self.builds.get(image.base_images[0].image_id)
            if base is None:
                raise GRPCError(Status.NOT_FOUND, f"base image {image.base_images[0].image_id} not found")
        build = Build(self.state.new_id("im"), "\n".join(image.dockerfile_commands), base)
        self.builds[build.id] = build
        self.by_content[key] = build.id
        asyncio.get_running_loop().create_task(self._build(build, image, fault))
        return api_pb2.ImageGetOrCreateResponse(image_id=build.id)

    @staticmethod
    def _result(build: Build) -> api_pb2.GenericResult:
        if build.ok:
            return api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS)
        return api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_FAILURE,
                                     exception=f"Image build for {build.id} failed. See build logs for more details.")

    async def ImageJoinStreaming(self, request, ctx):
        build = self.builds.get(request.image_id)
        if build is None:
            raise GRPCError(Status.NOT_FOUND, f"Image {request.image_id!r} not found")
        try:
            await asyncio.wait_for(build.done.wait(), timeout=request.timeout or 55)
        except asyncio.TimeoutError:
            yield api_pb2.ImageJoinStreamingResponse(entry_id="0")  # the client joins again
            return
        yield api_pb2.ImageJoinStreamingResponse(result=self._result(build), entry_id="1", eof=True)

    def ImageBuildChainGet(self, request, ctx):
        build = self.builds.get(request.image_id)
        if build is None:
            raise GRPCError(Status.NOT_FOUND, f"Image {request.image_id!r} not found")
        steps = []
        while build is not None:
            steps.append(api_pb2.ImageBuildStep(
                image_id=build.id, started_at=Timestamp(seconds=int(build.started) - 1),
                finished_at=Timestamp(seconds=int(build.finished or time.time()) + 1),
                builder_app_id=f"ap-builder-{build.id}", builder_task_id=f"ta-builder-{build.id}"))
            build = build.base
        return api_pb2.ImageBuildChainGetResponse(build_steps=steps[::-1])

    def _builder_log(self, app_id: str) -> str | None:
        build = self.builds.get(app_id.removeprefix("ap-builder-")) if app_id.startswith("ap-builder-") else None
        return "".join(line + "\n" for line in build.log) if build is not None else None

    def AppCountLogs(self, request, ctx):
        log = self._builder_log(request.app_id)
        if log is None:
            raise GRPCError(Status.UNIMPLEMENTED, "the fake keeps logs of image builds only")
        return api_pb2.AppCountLogsResponse(app_id=request.app_id, buckets=[
            api_pb2.AppCountLogsResponse.LogBucket(bucket_start_at=request.since, stdout_logs=1)] if log else [])

    def AppFetchLogs(self, request, ctx):
        log = self._builder_log(request.app_id)
        if log is None:
            raise GRPCError(Status.UNIMPLEMENTED, "the fake keeps logs of image builds only")
        item = api_pb2.TaskLogs(data=log, timestamp=request.since.seconds + 1.0,
                                file_descriptor=api_pb2.FILE_DESCRIPTOR_STDOUT)
        return api_pb2.AppFetchLogsResponse(batches=[api_pb2.TaskLogsBatch(
            task_id=request.app_id.replace("ap-builder-", "ta-builder-"), items=[item])] if log else [])

    # ------------------------------------------------------------------ the build
    async def _build(self, build: Build, image: api_pb2.Image, fault: str) -> None:
        try:
            build.ok = await self._run_layer(build, image, fault)
        except Exception as exc:  # noqa: BLE001 - a bug here is a failed build, with its reason in the log
            build.log.append(f"fake builder error: {exc!r}")
            build.ok = False
        build.finished = time.time()
        if not build.ok:
            self.failed.append(build.id)
        build.done.set()
        self.state.save()

    async def _run_layer(self, build: Build, image: api_pb2.Image, fault: str) -> bool:
        log = build.log
        if build.base is not None:
            await build.base.done.wait()
            if not build.base.ok:
                log.append(f"base image {build.base.id} failed to build")
                return False
            build.env = dict(build.base.env)
        try:
            instructions = parse_dockerfile(list(image.dockerfile_commands))
        except ParseError as exc:
            log.append(str(exc))
            return False
        if not instructions or instructions[0][1] != "FROM":
            log.append("Dockerfile parse error: the first instruction must be FROM")
            return False
        scratch = self.state.root / "builds" / build.id
        scratch.mkdir(parents=True, exist_ok=True)
        shims = scratch / ".fake-bin"
        shutil.copytree(_SHIMS, shims, dirs_exist_ok=True)
        (shims / "python").write_text(f"#!/bin/sh\nexec {sys.executable} \"{shims}/pythonshim.py\" \"$@\"\n")
        for name in os.listdir(shims):
            os.chmod(shims / name, 0o755)
        if fault == "image":
            broken = scratch / ".fake-broken"
            (broken / "torch").mkdir(parents=True, exist_ok=True)
            (broken / "torch" / "__init__.py").write_text(
                "raise ImportError('libcudnn.so.9: cannot open shared object file: No such file or directory')\n")
            build.env["PYTHONPATH"] = str(broken)
        mapped: dict[str, str] = {}   # absolute paths COPY placed -> where they are in the scratch directory
        context = {f.filename: f.data for f in image.context_files}
        for step, (line, word, arguments) in enumerate(instructions, start=1):
            log.append(f"Step {step}/{len(instructions)} : {word} {arguments}")
            if word == "FROM":
                ok = self._from(arguments, build, log)
            elif word == "COPY" or word == "ADD":
                ok = self._copy(arguments, context, scratch, mapped, log)
            elif word == "ENV":
                key, _, value = arguments.replace("=", " ", 1).partition(" ")
                build.env[key] = value.strip().strip('"')
                ok = True
            elif word == "RUN":
                ok = await self._run(arguments, build, scratch, shims, mapped, log)
            else:
                ok = True
            if not ok:
                log.append(f"Build failed at step {step} (Dockerfile line {line}): {word} {arguments}")
                return False
        log.append(f"Built image {build.id}")
        return True

    @staticmethod
    def _from(arguments: str, build: Build, log: list[str]) -> bool:
        reference = arguments.split()[0]
        if reference == "base":
            if build.base is None:
                log.append("FROM base, but the request names no base image")
                return False
            return True
        match = re.fullmatch(r"python:(\d+)\.(\d+)[^\s]*", reference)
        if match and (int(match[1]), int(match[2])) != sys.version_info[:2]:
            log.append(f"fake builder: {reference} is Python {match[1]}.{match[2]}; the stand-in's containers run "
                       f"Python {sys.version_info.major}.{sys.version_info.minor} only")
            return False
        return True

    @staticmethod
    def _copy(arguments: str, context: dict[str, bytes], scratch: Path, mapped: dict[str, str],
              log: list[str]) -> bool:
        parts = [p for p in arguments.split() if not p.startswith("--")]
        source, destination = parts[0], parts[-1]
        target = scratch / destination.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if "--from=ghcr.io/astral-sh/uv" in arguments:
            shutil.copy(scratch / ".fake-bin" / "uv", target)
            os.chmod(target, 0o755)
        elif source in context:
            target.write_bytes(context[source])
        else:
            log.append(f"COPY failed: {source} is not in the build context")
            return False
        mapped[destination] = str(target)
        return True

    async def _run(self, command: str, build: Build, scratch: Path, shims: Path, mapped: dict[str, str],
                   log: list[str]) -> bool:
        for destination, local in sorted(mapped.items(), key=lambda item: -len(item[0])):
            command = command.replace(destination, local)
        env = {"PATH": f"{shims}:/usr/bin:/bin", "HOME": str(scratch), "LANG": "C.UTF-8",
               "FAKE_MODAL_PYTHON": sys.executable, "FAKE_MODAL_SHIMS": str(shims), **build.env}
        process = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", command, cwd=scratch, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout=_RUN_TIMEOUT)
        except asyncio.TimeoutError:
            os.killpg(process.pid, 9)
            await process.wait()
            log.append(f"RUN timed out after {_RUN_TIMEOUT} s")
            return False
        log.extend(output.decode(errors="replace").splitlines())
        if process.returncode != 0:
            log.append(f"The command '/bin/sh -c {command}' returned a non-zero code: {process.returncode}")
            return False
        return True
