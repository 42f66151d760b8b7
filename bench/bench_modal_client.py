"""What the Modal path costs, against the stand-in Modal server on loopback, beside its baselines in the same run.

Run: python bench/bench_modal_client.py [--repeat N] [--sizes 64,256] [--payload-repeat N]

Modal's servers cannot be reached from where this was built, so the network and
a real GPU container are not in these numbers: they measure our code, Modal's
client (gRPC, pickling, blob hashing, multipart upload) and Modal's own container
entrypoint (a local subprocess running our worker) against ``tests/fake_modal/``.
One table puts four columns side by side, so each figure of ours has its floor:

* **ours**: ``%%modal_gpu --backend modal`` cells;
* **plain Modal**: a ``modal.Function`` defined with the real SDK in the same
  process, on the same stand-in, taking and returning the same tensor with
  ``.remote()`` (Modal's own pickling and blob uploads): what Modal's client
  alone achieves here;
* **local**: ``--backend local`` (our worker process, no Modal at all);
* **the stand-in alone**: its blob store written and read over the HTTP
  endpoints Modal's client uses (BlobCreate's URLs, parts in parallel, no
  client-side hashing), the same through Modal's own ``blob_utils`` (hashes
  and all, no pickling, no container), MD5 and SHA-256 on one core, one gRPC
  round trip (ClientHello) and a ``modal.Queue`` ``len`` + ``put``.

Rows: the first cell (app start, image layers — the stand-in runs each ``RUN``
line —, mount, container start); a warm cell ``y = x * 2`` (plain Modal: the
same as a function of ``x``); a tensor of each size sent, updated in place and
brought back (plain Modal: returned), with the notebook's peak memory above
what it held before (sampled RSS) as a multiple of the payload. Then, RPC by
RPC, what one warm cell and one round trip of the largest size cost: calls per
cell on the notebook's side (timed here, by wrapping Modal's client stub) and on
the containers' side (the stand-in's ``report.json`` counts, less the
notebook's), and the same calls as a timeline (ms from the start of the cell).

The machine may be shared: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_modal.testing import Server  # noqa: E402 - the stand-in the tests use

_PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 2**20
# RPCs that come with time, not with a cell: heartbeats, and on the notebook's side our re-run answerer's
# long poll of the control queue (``backends/modal/backend.py``, ``_answer_reruns``: one QueueGet per 10 s).
_PERIODIC = {"AppHeartbeat", "ContainerHeartbeat", "QueueHeartbeat", "DictHeartbeat"}
_PERIODIC_NOTEBOOK = _PERIODIC | {"QueueGet"}
_RETURNED = "-- returned --"


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def peak_extra(fn: Callable[[], object]) -> tuple[float, int]:
    """(seconds, the most RSS rose above where it started) while ``fn`` runs, sampled every 5 ms."""
    start, peak, done = rss(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss() - start)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - began
    done.set()
    sampler.join()
    return elapsed, max(peak[0], rss() - start)


def median(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cores"


class RpcClock:
    """Every RPC the notebook's Modal client makes, counted and timed by name (a wrap of its stub's calls).

    Counted when it starts (a cell's stream may end after the cell has returned), timed when it ends; a
    streaming RPC's time is until its last message; a retried call counts each attempt.
    """

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.seconds: collections.Counter[str] = collections.Counter()
        self.timeline: list[tuple[float, str]] | None = None  # (when, what), while one call is traced

    def install(self) -> None:
        from modal._grpc_client import UnaryStreamWrapper, UnaryUnaryWrapper

        clock, direct, unary_stream = self, UnaryUnaryWrapper.direct, UnaryStreamWrapper.unary_stream

        async def timed_direct(wrapper: Any, req: Any, **kwargs: Any) -> Any:
            began = clock.start(wrapper.name)
            try:
                return await direct(wrapper, req, **kwargs)
            finally:
                clock.end(wrapper.name, began)

        async def timed_stream(wrapper: Any, request: Any, metadata: Any = None) -> Any:
            began = clock.start(wrapper.name)
            try:
                async for response in unary_stream(wrapper, request, metadata):
                    clock.mark(f"{wrapper.name.rsplit('/', 1)[-1]} item {getattr(response, 'index', '?')}")
                    yield response
            finally:
                clock.end(wrapper.name, began)

        UnaryUnaryWrapper.direct = timed_direct  # type: ignore[method-assign]
        UnaryStreamWrapper.unary_stream = timed_stream  # type: ignore[method-assign]

    def start(self, path: str) -> float:
        self.calls[path.rsplit("/", 1)[-1]] += 1
        self.mark(path.rsplit("/", 1)[-1] + " sent")
        return time.perf_counter()

    def end(self, path: str, began: float) -> None:
        self.seconds[path.rsplit("/", 1)[-1]] += time.perf_counter() - began
        self.mark(path.rsplit("/", 1)[-1] + " answered")

    def mark(self, what: str) -> None:
        if self.timeline is not None:
            self.timeline.append((time.perf_counter(), what))

    def trace(self, fn: Callable[[], object]) -> list[tuple[float, str]]:
        """What the notebook's client sent and got, in ms from the start of one ``fn()`` (and 0.2 s after)."""
        self.timeline = []
        began = time.perf_counter()
        fn()
        self.mark(_RETURNED)
        time.sleep(0.2)
        timeline, self.timeline = self.timeline, None
        return [((when - began) * 1e3, what) for when, what in timeline
                if not what.startswith(tuple(_PERIODIC_NOTEBOOK))]

    def snapshot(self) -> tuple[collections.Counter[str], collections.Counter[str]]:
        return collections.Counter(self.calls), collections.Counter(self.seconds)


class Rpcs:
    """RPCs per call of ``fn``, both sides: the notebook's (counted and timed here) and the stand-in's total."""

    def __init__(self, clock: RpcClock, server: Server, fn: Callable[[], object], count: int) -> None:
        """``count`` 1: also ``timeline``, what the notebook's client sent and got during the call."""
        calls, seconds = clock.snapshot()
        served = collections.Counter(server.report()["rpcs"])
        began = time.perf_counter()
        self.timeline: list[tuple[float, str]] = []
        if count == 1:
            self.timeline = clock.trace(fn)
            self.wall = next(when for when, what in self.timeline if what == _RETURNED) / 1e3
        else:
            for _ in range(count):
                fn()
            self.wall = (time.perf_counter() - began) / count
        time.sleep(0.2)  # the containers' last RPCs of the last call (FunctionPutOutputs) land in the report
        after_calls, after_seconds = clock.snapshot()
        self.notebook = {k: v / count for k, v in (after_calls - calls).items()}
        self.notebook_ms = {k: v / count * 1e3 for k, v in (after_seconds - seconds).items()}
        total = collections.Counter(server.report()["rpcs"]) - served
        self.container = {k: (total[k] - (after_calls - calls)[k]) / count for k in total
                          if total[k] > (after_calls - calls)[k]}

    def per_cell(self, periodic: bool = False) -> tuple[float, float]:
        """(notebook's, containers') RPCs per call, without the periodic ones unless asked."""
        return (sum(v for k, v in self.notebook.items() if periodic or k not in _PERIODIC_NOTEBOOK),
                sum(v for k, v in self.container.items() if periodic or k not in _PERIODIC))


# ---------------------------------------------------------------------- plain Modal
def plain_modal_app() -> tuple[Any, Any, Any]:
    """(app, ``double``, ``image``): a function of one tensor, as a user of Modal would write it (no modal_magic)."""
    import modal

    app = modal.App("bench-plain-modal")
    image = modal.Image.debian_slim(python_version=f"{sys.version_info.major}.{sys.version_info.minor}")

    def double(t: Any) -> Any:
        """Doubles the tensor in place and returns it: the same bytes come back as go out."""
        return t.mul_(2)

    function = app.function(serialized=True, image=image, max_containers=1, scaledown_window=1200)(double)
    return app, function, image


# ---------------------------------------------------------------------- the stand-in alone
def _hashes(data: bytes) -> tuple[str, str]:
    return (base64.b64encode(hashlib.md5(data).digest()).decode(),
            base64.b64encode(hashlib.sha256(data).digest()).decode())


async def _raw_round_trip(stub: Any, data: bytes) -> tuple[float, float]:
    """(seconds to write, seconds to read) ``data`` through the blob store's HTTP endpoints, as Modal's client
    reaches them (BlobCreate's URLs, every part of a multipart upload in flight at once, the S3-style
    completion; BlobGet's URL), with none of the client's hashing or buffering: the stand-in's own rate."""
    import aiohttp
    from modal_proto import api_pb2

    md5, sha256 = _hashes(data)  # what BlobCreate must declare; not timed: the client's cost, not the store's
    view = memoryview(data)
    async with aiohttp.ClientSession() as session:
        began = time.perf_counter()
        created = await stub.BlobCreate(api_pb2.BlobCreateRequest(content_md5=md5, content_sha256_base64=sha256,
                                                                  content_length=len(data)))
        if created.WhichOneof("upload_types_oneof") == "multiparts":
            upload = created.multiparts.items[0]
            size = upload.part_length

            async def part(n: int, url: str) -> str:
                async with session.put(url, data=view[n * size:(n + 1) * size]) as response:
                    response.raise_for_status()
                    return response.headers["ETag"]

            etags = await asyncio.gather(*(part(n, url) for n, url in enumerate(upload.upload_urls)))
            body = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"
                           for n, etag in enumerate(etags, 1))
            async with session.post(upload.completion_url,
                                    data=f"<CompleteMultipartUpload>{body}</CompleteMultipartUpload>") as response:
                response.raise_for_status()
        else:
            async with session.put(created.upload_urls.items[0], data=view) as response:
                response.raise_for_status()
        wrote = time.perf_counter() - began
        began = time.perf_counter()
        url = (await stub.BlobGet(api_pb2.BlobGetRequest(blob_id=created.blob_ids[0]))).download_url
        async with session.get(url) as response:
            back = await response.read()
        read = time.perf_counter() - began
    assert len(back) == len(data)
    return wrote, read


async def _modal_blob_round_trip(stub: Any, data: bytes) -> tuple[float, float]:
    """The same through Modal's own ``blob_upload``/``blob_download`` (its MD5 and SHA-256 of the payload, its
    segment readers, its checks): what a ``.remote()`` of a big argument pays for the blob alone."""
    from modal._utils.blob_utils import blob_download, blob_upload

    began = time.perf_counter()
    blob_id = await blob_upload(data, stub)
    wrote = time.perf_counter() - began
    began = time.perf_counter()
    back = await blob_download(blob_id, stub)
    read = time.perf_counter() - began
    assert len(back) == len(data)
    return wrote, read


def hash_rates(data: bytes) -> tuple[float, float]:
    """(MD5, SHA-256) seconds over ``data`` on one core: Modal's client computes both before every blob upload
    (``get_upload_hashes``), and the stand-in checks a multipart upload with four MD5 passes (each part as it
    comes, the completion's ETags twice, the whole) and one SHA-256."""
    began = time.perf_counter()
    hashlib.md5(data).digest()
    md5 = time.perf_counter() - began
    began = time.perf_counter()
    hashlib.sha256(data).digest()
    return md5, time.perf_counter() - began


async def _hello(stub: Any, count: int) -> float:
    """Median seconds of one ClientHello: a gRPC round trip to the stand-in and its report write."""
    from google.protobuf import empty_pb2

    times = []
    for _ in range(count):
        began = time.perf_counter()
        await stub.ClientHello(empty_pb2.Empty())
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def queue_len_put(count: int) -> float:
    """Median seconds of a ``modal.Queue`` ``len`` then ``put`` on one partition, from this process: what our
    container does before each cell's first frame (``backends/modal/container.py``, ``_catch_up``)."""
    import modal

    times = []
    with modal.Queue.ephemeral() as control:
        for n in range(count):
            began = time.perf_counter()
            control.len(partition=f"bench{n}.runs")
            control.put("container", partition=f"bench{n}.runs")
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def on_modal_loop(coroutine_function: Callable[..., Any], *args: Any) -> Any:
    """Run ``coroutine_function(stub, *args)`` on the event loop of Modal's client (its stub lives there)."""
    from modal._utils.async_utils import synchronizer
    from modal.client import _Client

    async def call() -> Any:
        client = await _Client.from_env()
        return await coroutine_function(client._stub, *args)

    return synchronizer.create_blocking(call)()


# ---------------------------------------------------------------------- the table
class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []

    def add(self, *cells: str) -> None:
        self.rows.append(cells)

    def print(self) -> None:
        widths = [max(len(row[i]) for row in self.rows if len(row) > i) for i in range(max(map(len, self.rows)))]
        for row in self.rows:
            print("  " + "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                                   for i, cell in enumerate(row)).rstrip())


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 else "-"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def _transfer(seconds: float, mib: int) -> str:
    return f"{seconds:.2f} s {mib / seconds:5.0f} MiB/s"


@contextmanager
def standing() -> Iterator[Server]:
    # The stand-in's own defaults for blobs (multipart over 64 MiB, 16 MiB parts), not the tests' tiny parts.
    server = Server(Path(tempfile.mkdtemp(prefix="fake_modal_")), FAKE_MODAL_MULTIPART_THRESHOLD=str(64 << 20),
                    FAKE_MODAL_MULTIPART_PART_SIZE=str(16 << 20))
    os.environ.update(MODAL_SERVER_URL=server.url, MODAL_TOKEN_ID="ak-bench", MODAL_TOKEN_SECRET="as-bench")
    try:
        yield server
    finally:
        from modal_magic.notebook.extension import current

        current().backends.close()
        server.stop()


def print_rpcs(what: str, ours: Rpcs, plain: Rpcs) -> None:
    print(f"\n  {what}: wall {_ms(ours.wall)} ours, {_ms(plain.wall)} plain Modal. Notebook ms: time inside Modal's"
          " client stub (calls overlap, long polls included); * periodic, with time not cells;"
          " + periodic on the notebook's side (our re-run answerer's long poll), per cell in the containers")
    table = Table()
    table.add("RPC", "ours: notebook", "ms", "containers", "plain: notebook", "ms", "containers")
    names = sorted({*ours.notebook, *ours.container, *plain.notebook, *plain.container},
                   key=lambda n: (n in _PERIODIC, -(ours.notebook.get(n, 0) + ours.container.get(n, 0))))
    for name in names:
        table.add(name + ("*" if name in _PERIODIC else "+" if name in _PERIODIC_NOTEBOOK else ""),
                  f"{ours.notebook.get(name, 0):.1f}",
                  f"{ours.notebook_ms.get(name, 0):.1f}", f"{ours.container.get(name, 0):.1f}",
                  f"{plain.notebook.get(name, 0):.1f}", f"{plain.notebook_ms.get(name, 0):.1f}",
                  f"{plain.container.get(name, 0):.1f}")
    (ours_nb, ours_ct), (plain_nb, plain_ct) = ours.per_cell(), plain.per_cell()
    table.add("all but periodic", f"{ours_nb:.1f}", "", f"{ours_ct:.1f}", f"{plain_nb:.1f}", "", f"{plain_ct:.1f}")
    table.print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="warm cells timed per column (median)")
    parser.add_argument("--sizes", default="256,1024", help="payload sizes in MiB, comma-separated")
    parser.add_argument("--payload-repeat", type=int, default=1, help="round trips per payload size (median)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]

    print("Modal path against the stand-in Modal server on loopback (no network, no GPU in these numbers)")
    print(f"  at start: {load()}")
    with standing() as server:
        import torch
        from IPython.core.interactiveshell import InteractiveShell

        clock = RpcClock()
        clock.install()
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "modal_magic")
        x = torch.arange(100.0)
        shell.user_ns.update(x=x)

        def cell(backend: str, body: str) -> Callable[[], object]:
            return lambda: shell.run_cell(f"%%modal_gpu --backend {backend} --quiet\n{body}").success or sys.exit(body)

        table = Table()
        table.add("", "ours (modal_magic)", "plain Modal", "local backend", "ours/plain", "ours/local")

        first, _ = peak_extra(cell("modal", "y = x * 2"))
        local_first, _ = peak_extra(cell("local", "y = x * 2"))
        app, double, _ = plain_modal_app()
        began = time.perf_counter()
        with app.run():
            double.remote(x.clone())
            plain_first = time.perf_counter() - began
            table.add("first cell / call (app, image, container)", f"{first:.2f} s", f"{plain_first:.2f} s",
                      f"{local_first:.2f} s", ratio(first, plain_first), ratio(first, local_first))

            # Each column's cells one after another: a local cell between two Modal cells re-mints the mirrors'
            # keys (each side's own), so the next Modal cell would first be told what it lacks: one more round trip.
            ours = median(cell("modal", "y = x * 2"), args.repeat)
            ours_rpcs = Rpcs(clock, server, cell("modal", "y = x * 2"), args.repeat)
            ours_trace = clock.trace(cell("modal", "y = x * 2"))
            plain = median(lambda: double.remote(x), args.repeat)
            plain_rpcs = Rpcs(clock, server, lambda: double.remote(x), args.repeat)
            plain_trace = clock.trace(lambda: double.remote(x))
            local = median(cell("local", "y = x * 2"), args.repeat)
            table.add("warm trivial cell (y = x * 2)", _ms(ours), _ms(plain), _ms(local), ratio(ours, plain),
                      ratio(ours, local))
            (ours_nb, ours_ct), (plain_nb, plain_ct) = ours_rpcs.per_cell(), plain_rpcs.per_cell()
            table.add("  RPCs per warm cell: notebook + containers", f"{ours_nb:.1f} + {ours_ct:.1f}",
                      f"{plain_nb:.1f} + {plain_ct:.1f}", "0", ratio(ours_nb + ours_ct, plain_nb + plain_ct), "")

            floors: dict[int, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {}
            for mib in sizes:
                def new_big() -> None:
                    """A tensor of ``mib`` MiB never sent before (new content: the session sends a buffer it sent
                    before as its digest), made before the clock starts."""
                    shell.user_ns.pop("big", None)
                    shell.user_ns["big"] = torch.rand(mib * MiB // 4)  # noqa: B023 - called within this pass

                runs: dict[str, list[tuple[float, int]]] = {"modal": [], "plain": [], "local": []}
                cells = {"modal": cell("modal", "big.mul_(2);"), "plain": lambda: double.remote(shell.user_ns["big"]),
                         "local": cell("local", "big.mul_(2);")}
                for _ in range(args.payload_repeat):
                    for column, run in cells.items():
                        new_big()
                        runs[column].append(peak_extra(run))
                seconds = {k: statistics.median(t for t, _ in v) for k, v in runs.items()}
                peaks = {k: statistics.median(p for _, p in v) / (mib * MiB) for k, v in runs.items()}
                table.add(f"{mib} MiB out and back", _transfer(seconds["modal"], mib), _transfer(seconds["plain"], mib),
                          _transfer(seconds["local"], mib), ratio(seconds["modal"], seconds["plain"]),
                          ratio(seconds["modal"], seconds["local"]))
                table.add("  notebook peak above what it held", f"{peaks['modal']:.2f}x payload",
                          f"{peaks['plain']:.2f}x payload", f"{peaks['local']:.2f}x payload",
                          ratio(peaks["modal"], peaks["plain"]), ratio(peaks["modal"], peaks["local"]))
                if mib == sizes[-1]:  # once more, alone, so its RPCs are counted
                    new_big()
                    ours_big = Rpcs(clock, server, cells["modal"], 1)
                    new_big()
                    big_rpcs = ours_big, Rpcs(clock, server, cells["plain"], 1)
                del shell.user_ns["big"]
                data = os.urandom(mib * MiB)
                raw = [on_modal_loop(_raw_round_trip, data) for _ in range(args.payload_repeat)]
                blob = [on_modal_loop(_modal_blob_round_trip, data) for _ in range(args.payload_repeat)]
                floors[mib] = ((statistics.median(w for w, _ in raw), statistics.median(r for _, r in raw)),
                               (statistics.median(w for w, _ in blob), statistics.median(r for _, r in blob)),
                               hash_rates(data))
                del data
            hello, queue = on_modal_loop(_hello, 50), queue_len_put(20)
        table.print()

        print("\n  the stand-in alone, one blob each way (a round trip above goes through the store twice each way:"
              " notebook -> store -> container, and back):")
        floor = Table()
        floor.add("", "write", "read", "write + read")
        for mib, ((raw_w, raw_r), (blob_w, blob_r), (md5, sha256)) in floors.items():
            floor.add(f"{mib} MiB, raw HTTP to the store (no client hashing)", _transfer(raw_w, mib),
                      _transfer(raw_r, mib), f"{raw_w + raw_r:.2f} s")
            floor.add(f"{mib} MiB, Modal's blob_upload / blob_download", _transfer(blob_w, mib),
                      _transfer(blob_r, mib), f"{blob_w + blob_r:.2f} s")
            floor.add(f"{mib} MiB, hashing alone, one core", f"MD5 {mib / md5:.0f} MiB/s",
                      f"SHA-256 {mib / sha256:.0f} MiB/s", f"{md5 + sha256:.2f} s")
        floor.add("one gRPC round trip (ClientHello, median of 50)", _ms(hello), "", "")
        floor.add("modal.Queue len + put (as our container before each cell)", _ms(queue), "", "")
        floor.print()

        print_rpcs(f"one warm cell, RPC by RPC (per cell, mean of {args.repeat})", ours_rpcs, plain_rpcs)
        print_rpcs(f"one {sizes[-1]} MiB round trip, RPC by RPC", *big_rpcs)
        print("\n  as the notebook's Modal client saw it (ms from the start; periodic RPCs left out)")
        big_traces = [rpcs.timeline for rpcs in big_rpcs]
        for what, pair in (("warm cell", (ours_trace, plain_trace)), (f"{sizes[-1]} MiB", big_traces)):
            for name, trace in zip(("ours", "plain Modal"), pair, strict=True):
                print(f"    {what}, {name}: " + ", ".join(f"{when:.1f} {event}" for when, event in trace))

        report = server.report()
        print(f"\n  containers started: {report['containers']}, multipart uploads: {report['multipart_uploads']}")
    print(f"  at end: {load()}")


if __name__ == "__main__":
    main()
