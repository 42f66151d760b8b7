"""What the Modal path costs on the notebook's side, against the stand-in Modal server on loopback.

Run: python bench/bench_modal_client.py [--repeat N] [--sizes 256,1024]
Modal's servers cannot be reached from where this was built, so the network and
a real GPU container are not in these numbers: they measure our code, Modal's
client (gRPC, pickling, blob hashing, multipart upload) and Modal's own container
entrypoint (a local subprocess running our worker) against ``tests/fake_modal/``,
side by side with the local backend in the same process:

* the first cell: app start, image layers (the stand-in runs each ``RUN`` line),
  mount, container start (Modal's entrypoint importing torch and IPython);
* a warm cell ``y = x * 2``;
* a tensor of each size sent, updated in place and brought back (``big.mul_(2)``),
  with the notebook's peak memory above what it held before (sampled RSS), as a
  multiple of the payload.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_modal.testing import Server  # noqa: E402 - the stand-in the tests use

_PAGE = os.sysconf("SC_PAGE_SIZE")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--sizes", default="256,1024", help="payload sizes in MiB, comma-separated")
    args = parser.parse_args()

    # The stand-in's own defaults for blobs (multipart over 64 MiB, 16 MiB parts), not the tests' tiny parts.
    server = Server(Path(tempfile.mkdtemp(prefix="fake_modal_")), FAKE_MODAL_MULTIPART_THRESHOLD=str(64 << 20),
                    FAKE_MODAL_MULTIPART_PART_SIZE=str(16 << 20))
    os.environ.update(MODAL_SERVER_URL=server.url, MODAL_TOKEN_ID="ak-bench", MODAL_TOKEN_SECRET="as-bench")
    import torch
    from IPython.core.interactiveshell import InteractiveShell

    from modal_magic.notebook.extension import current

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "modal_magic")
    shell.user_ns.update(x=torch.arange(100.0))

    def cell(backend: str, body: str) -> Callable[[], object]:
        return lambda: shell.run_cell(f"%%modal_gpu --backend {backend} --quiet\n{body}").success or sys.exit(body)

    try:
        print("Modal path against the stand-in server on loopback (no network, no GPU in these numbers)")
        first, _ = peak_extra(cell("modal", "y = x * 2"))
        local_first, _ = peak_extra(cell("local", "y = x * 2"))
        print(f"  first cell (app, image, mount, container start): modal {first:7.2f} s"
              f"   local backend (worker start) {local_first:7.2f} s")
        remote, local = median(cell("modal", "y = x * 2"), args.repeat), median(cell("local", "y = x * 2"), args.repeat)
        print(f"  warm cell y = x * 2: modal {remote * 1e3:8.1f} ms   local backend {local * 1e3:8.1f} ms"
              f"   ratio {remote / local:5.1f}x")
        for mib in (int(size) for size in args.sizes.split(",")):
            shell.user_ns["big"] = torch.ones(mib * 2**18)  # float32: mib MiB
            for backend in ("modal", "local"):
                elapsed, extra = peak_extra(cell(backend, "big.mul_(2);"))
                print(f"  {mib:5d} MiB out and back, in place, {backend:<5}: {elapsed:7.2f} s"
                      f"   {mib / elapsed:7.1f} MiB/s   notebook peak +{extra / 2**20:7.0f} MiB"
                      f" = {extra / (mib * 2**20):4.2f}x the payload")
            del shell.user_ns["big"]
        report = server.report()
        print(f"  containers started: {report['containers']}, multipart uploads: {report['multipart_uploads']}")
    finally:
        current().backends.close()
        server.stop()


if __name__ == "__main__":
    main()
