"""What the Modal path costs on the notebook's side, against the fake Modal server on loopback.

Run: python bench/bench_modal_client.py [--repeat N]
Modal's servers cannot be reached from where this was built, so the network is not
in these numbers: they measure our code plus Modal's client (gRPC, pickling, blob
hashing and upload) and Modal's container entrypoint (a local subprocess) against
``tests/fake_modal/`` on this machine, side by side with the local backend in the same process:
the app start, a warm cell ``y = x * 2``, and a 256 MiB tensor updated in place.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_modal.testing import Server  # noqa: E402 - the fake server the tests use


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(fn, repeat: int) -> float:
    fn()  # warm
    return statistics.median(timed(fn) for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    server = Server(Path(tempfile.mkdtemp(prefix="fake_modal_")), short_waits=False)  # Modal's blob sizes
    os.environ.update(MODAL_SERVER_URL=server.url, MODAL_TOKEN_ID="ak-bench", MODAL_TOKEN_SECRET="as-bench")
    import torch
    from IPython.core.interactiveshell import InteractiveShell

    from modal_magic.backends import close_all

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "modal_magic")
    shell.user_ns.update(x=torch.arange(100.0), big=torch.ones(64 * 2**20))  # 256 MiB

    def cell(backend: str, body: str):
        return lambda: shell.run_cell(f"%%modal_gpu --backend {backend} --quiet\n{body}").success or sys.exit(body)

    try:
        print("modal path against the fake server on loopback (no network; the first cell includes a local container start)")
        start = timed(cell("modal", "y = x * 2"))
        print(f"  first cell (app start: image, mount, class) : {start * 1e3:8.1f} ms")
        for label, body in (("warm cell y = x * 2", "y = x * 2"), ("256 MiB tensor, big.mul_(1)", "big.mul_(1);")):
            remote, local = median(cell("modal", body), args.repeat), median(cell("local", body), args.repeat)
            print(f"  {label:<30}: modal {remote * 1e3:8.1f} ms   local backend {local * 1e3:8.1f} ms"
                  f"   ratio {remote / local:5.1f}x")
        print(f"  RPCs for the whole run: {server.report()['rpcs']}")
    finally:
        close_all()
        server.stop()


if __name__ == "__main__":
    main()
