"""A strict stand-in for Modal's servers, for tests: Modal's own gRPC protocol on loopback.

Modal's servers cannot be reached from here, so this is the one mock in the
suite, and it mocks only the server. Both sides of it are Modal's real SDK:
the notebook's client (``MODAL_SERVER_URL`` points it here) and the container,
which is Modal's own ``modal._container_entrypoint`` run as a subprocess
(``containers.py``). The stand-in's job is to refuse what Modal refuses, so
that a test passing here means something:

- an RPC it does not implement fails with ``UNIMPLEMENTED`` (``server.py``);
- image layers are parsed as Docker parses them and their ``RUN`` lines are
  executed (``images.py``);
- mounts, blobs, functions, GPU types, inputs are checked as Modal checks them
  (``mounts.py``, ``blobs.py``, ``apps.py``, ``calls.py``);
- ``modal.Queue`` / ``modal.Dict`` work from both sides (``queues.py``).

Each module's docstring says where it is *not* as strict as Modal.

Run as ``python -m tests.fake_modal STATE_DIR``: prints the port of the
notebook-facing gRPC server, serves until stdin closes, then kills every
container (process groups) before exiting. After every RPC it writes
``STATE_DIR/report.json``: ``rpcs`` (counts), ``unimplemented`` (RPCs refused
as such), ``errors`` (bugs of the stand-in), ``images`` (each layer asked for),
``image_builds_failed``, ``mounts``, ``gpus`` (per call), ``fallbacks``,
``containers`` (started), ``containers_live``, ``container_exits`` (code, why
killed), ``container_restarts`` (preemptions), ``queued``,
``inputs_waiting_for_gpu``, ``cancelled``, ``calls`` (status, retries, items),
``input_bytes``, ``blob_url`` (the store's own), ``blobs``, ``blob_bytes``, ``multipart_uploads``,
``blobs_refused``, ``apps_stopped`` (why), ``queues``, ``queue_puts``,
``queue_gets``, ``dicts``. A fault is armed by writing its name to
``STATE_DIR/fail``: ``auth`` (every client RPC is refused as
UNAUTHENTICATED), ``image`` (torch does not import in the build environment),
``gpu`` (RESOURCE_EXHAUSTED at FunctionMap: a workspace GPU limit),
``gpu-queue`` (GPU inputs wait, without a container, until cleared),
``preempt`` (the container is killed at the input's first output and the input
re-runs on a fresh one), ``internal`` (the container is killed there and the
call fails), ``network-loss`` (AppHeartbeat fails: the app stops after the
lapse), ``app-stopped`` (every running app is stopped now, as after the lapse).
Knobs: ``FAKE_MODAL_*`` environment variables (``server.Config``). A test can also
kill or freeze the server's process itself (``testing.Server.kill``, ``freeze``,
``thaw``): a dead or frozen Modal server mid-cell.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

__all__ = ["main", "serve"]


async def serve(root: Path) -> None:
    # Imported here, not above: ``tests.fake_modal.testing`` must import without modal installed
    # (the tests that need modal skip themselves).
    from aiohttp import web
    from grpclib.server import Server

    from .apps import Apps
    from .billing import Billing
    from .blobs import Blobs
    from .calls import Calls
    from .containers import Workers
    from .images import Images
    from .mounts import Mounts
    from .queues import Queues
    from .server import Dispatcher, State

    state = State(root)
    blobs = Blobs(state)
    apps = Apps(state)
    mounts = Mounts(state, blobs)
    images = Images(state, mounts)
    calls = Calls(state, apps, blobs)
    queues = Queues(state)
    services: list = [apps, images, mounts, blobs, calls, queues]
    workers = Workers(state, apps, calls, mounts, services)
    services.append(workers)
    calls.workers = workers
    billing = Billing(state, workers)
    state.report_parts = [apps, images, mounts, blobs, calls, queues, workers, billing]

    http = web.Application(client_max_size=2**33)
    http.add_routes(blobs.routes())
    runner = web.AppRunner(http)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    blobs.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/blob"
    state.save()  # the first report.json, before the port is printed

    server = Server([Dispatcher(state, services)])
    await server.start("127.0.0.1", 0)
    background = [asyncio.create_task(apps.watch_heartbeats()), asyncio.create_task(workers.tick()),
                  asyncio.create_task(billing.watch())]
    print(server._server.sockets[0].getsockname()[1], flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the test closes stdin
    finally:
        workers.shutdown()
        for task in background:
            task.cancel()
        for container in workers.containers:
            if container.process is not None:
                await container.process.wait()
        server.close()
        await server.wait_closed()
        await runner.cleanup()
        state.save()


def main(root: Path) -> None:
    asyncio.run(serve(root))
