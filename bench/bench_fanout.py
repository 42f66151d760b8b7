"""--map: what fanning a cell out gains, on the local backend and against the stand-in Modal server.

Run: python bench/bench_fanout.py [--containers N] [--tiny N] [--skip-modal]
Prints, from one process, each number beside its baseline:

* local backend, 8 elements of a cell that sleeps 1 s: the fan-out's wall time against the same 8 cells
  one after another (8 s and a little; a 2-core machine has 2 workers, so ideally 4 s);
* local backend, many tiny elements: time per element against one warm tiny cell;
* the stand-in Modal server (``tests/fake_modal/``, Modal's own container entrypoint in subprocesses on
  this machine): elements of a 1 s cell with as many containers as elements, cold (the containers start)
  and warm, against the ideal 1 s; then many tiny elements, per element against one warm tiny Modal cell.

The stand-in runs every container here, each a Python process with a worker process (torch, IPython)
under it: ``--containers`` is bounded by this machine, not by Modal. No network and no GPU are in these
numbers: they measure our code, Modal's client and Modal's container input loop — and, for the tiny
elements, this machine's cores shared by all of them and the stand-in, whose held RPCs poll every 10-20 ms
(its report is written once a second here: written after every RPC, as the tests have it, each write lists
every call so far, and a thousand calls measure mostly that).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_modal.testing import Server  # noqa: E402 - the stand-in the tests use


def timed(fn: Callable[[], object]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=32, help="elements (and containers) of the 1 s Modal map")
    parser.add_argument("--tiny", type=int, default=1000, help="elements of the tiny maps")
    parser.add_argument("--skip-modal", action="store_true")
    args = parser.parse_args()

    server = None
    if not args.skip_modal:
        # The report is written once a second, not after every RPC: each write lists every call so far.
        server = Server(Path(tempfile.mkdtemp(prefix="fake_modal_")), short_waits=False,
                        FAKE_MODAL_MAX_CONTAINERS=str(args.containers), FAKE_MODAL_REPORT_EVERY="1")
        os.environ.update(MODAL_SERVER_URL=server.url, MODAL_TOKEN_ID="ak-bench", MODAL_TOKEN_SECRET="as-bench")
    from IPython.core.interactiveshell import InteractiveShell

    from modal_magic.notebook.extension import current

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "modal_magic")

    def cell(flags: str, body: str) -> Callable[[], object]:
        return lambda: shell.run_cell(f"%%modal_gpu --quiet {flags}\n{body}").success or sys.exit(f"failed: {flags}")

    try:
        cores = os.cpu_count() or 1
        print(f"local backend ({cores} cores: {cores} workers)")
        cell("--backend local --map i=range(8)", "pass")()  # start the pool's workers
        sequential = timed(lambda: [cell("--backend local", "import time; time.sleep(1)")() for _ in range(8)])
        fanned = timed(cell("--backend local --map i=range(8)", "import time; time.sleep(1)"))
        ideal = math.ceil(8 / cores)
        print(f"  8 x sleep(1): --map {fanned:6.2f} s   one after another {sequential:6.2f} s"
              f"   speed-up {sequential / fanned:4.2f}x   (ideal on {cores} cores: {ideal} s, {8 / ideal:.1f}x)")
        one = min(timed(cell("--backend local", "y = 1")) for _ in range(20))
        tiny = timed(cell(f"--backend local --map i=range({args.tiny})", "y = i"))
        print(f"  {args.tiny} tiny elements: {tiny:6.2f} s = {tiny / args.tiny * 1e3:6.2f} ms per element"
              f"   one warm tiny cell {one * 1e3:6.2f} ms   ratio {tiny / args.tiny / one:4.2f}x")

        if server is not None:
            n = args.containers
            print(f"stand-in Modal server, up to {n} containers (each a local process with a worker under it)")
            single_cold = timed(cell("--backend modal --gpu T4", "y = 1"))
            single = min(timed(cell("--backend modal --gpu T4", "y = 1")) for _ in range(5))
            print(f"  one tiny cell: first (app start) {single_cold:6.2f} s, warm {single * 1e3:7.1f} ms")
            sleep = "import time; time.sleep(1)"
            cold = timed(cell(f"--backend modal --gpu T4 --map i=range({n})", sleep))
            started = server.report()["containers"]
            warm = timed(cell(f"--backend modal --gpu T4 --map i=range({n})", sleep))
            print(f"  {n} x sleep(1) on {n} containers: cold {cold:6.2f} s ({started - 1} fan-out containers "
                  f"started), warm {warm:6.2f} s   ideal 1 s, sequential {n} s")
            print(f"    warm overhead over the ideal: {warm - 1:5.2f} s in all, {(warm - 1) / n * 1e3:6.1f} ms "
                  f"per element   speed-up over sequential {n / warm:5.1f}x")
            for flags, calls in (("", "100 calls in flight (the default)"), (f"--max-parallel {n}", f"{n} in flight")):
                tiny = timed(cell(f"--backend modal --gpu T4 {flags} --map i=range({args.tiny})", "y = i"))
                print(f"  {args.tiny} tiny elements on {n} warm containers, {calls}: {tiny:6.2f} s = "
                      f"{tiny / args.tiny * 1e3:6.2f} ms per element   one warm tiny cell {single * 1e3:7.1f} ms"
                      f"   ratio {tiny / args.tiny / single:4.2f}x")
            report = server.report()
            print(f"  containers started in all: {report['containers']}, errors: {len(report['errors'])}")
    finally:
        current().backends.close()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
