"""Cell overhead: `y = x * 2` through %%modal_gpu (local backend) vs plain vs ipyparallel; cold start.

Run: python bench/bench_warm_cell.py [--repeat N]
Prints, side by side from one process: the median wall time of a warm cell
through the magic, the same cell run plainly, the magic's cell again with 20,000 small
tensors kept in the remote session, and ipyparallel's push + execute
+ pull with one local engine (targets, DESIGN §8: ≤ 10 ms overhead; ipyparallel
the peer to beat); then the first cell with a cold worker that receives a
tensor, vs `python -c "import torch, IPython"` (target ≤ 1.3×).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np
from IPython.core.interactiveshell import InteractiveShell


def median_ms(fn, repeat: int) -> float:
    fn()  # warm
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def bench_magic(repeat: int) -> tuple[float, float]:
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "modal_magic")
    shell.user_ns["x"] = np.arange(100.0)

    def via_magic() -> None:
        result = shell.run_cell("%%modal_gpu --backend local --quiet\ny = x * 2")
        assert result.success and shell.user_ns["y"][1] == 2.0

    def plain() -> None:
        assert shell.run_cell("y = x * 2").success

    return median_ms(via_magic, repeat), median_ms(plain, repeat)


def bench_with_resident(repeat: int, count: int = 20_000) -> float:
    """The same warm cell once a cell has left ``count`` small tensors in the remote session (kept, and
    mirrored in the notebook): what a cell that does not touch them pays for them, per cell."""
    shell = InteractiveShell.instance()
    made = shell.run_cell(f"%%modal_gpu --backend local --quiet\nimport torch\n"
                          f"many = [torch.zeros(4) for _ in range({count})]")
    assert made.success

    def via_magic() -> None:
        assert shell.run_cell("%%modal_gpu --backend local --quiet\ny = x * 2").success

    try:
        return median_ms(via_magic, repeat)
    finally:
        shell.run_cell("del many")


def bench_cold_start(repeat: int) -> tuple[float, float]:
    """(first cell with a fresh worker, `python -c "import torch, IPython"`), medians in seconds."""
    from modal_magic.notebook.extension import current

    shell = InteractiveShell.instance()
    shell.user_ns["t"] = __import__("torch").ones(3)
    cold = []
    for _ in range(repeat):
        current().backends.get("local").close()
        start = time.perf_counter()
        assert shell.run_cell("%%modal_gpu --backend local --quiet\nu = t * 2").success
        cold.append(time.perf_counter() - start)
    baseline = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, IPython"], check=True)
        baseline.append(time.perf_counter() - start)
    return statistics.median(cold), statistics.median(baseline)


def bench_ipyparallel(repeat: int) -> float | None:
    try:
        import ipyparallel as ipp
    except ImportError:
        return None
    cluster = ipp.Cluster(n=1, log_level=40)
    client = cluster.start_and_connect_sync()
    try:
        engine = client[0]
        engine.block = True
        x = np.arange(100.0)

        def roundtrip() -> None:
            engine.push({"x": x})
            engine.execute("y = x * 2")
            assert engine.pull("y")[1] == 2.0

        return median_ms(roundtrip, repeat)
    finally:
        client.close()
        cluster.stop_cluster_sync()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    magic, plain = bench_magic(args.repeat)
    ipp_ms = bench_ipyparallel(args.repeat)
    print(f"warm cell `y = x * 2`, median of {args.repeat}:")
    print(f"  plain cell (baseline)            {plain:8.2f} ms")
    print(f"  %%modal_gpu --backend local      {magic:8.2f} ms   overhead {magic - plain:6.2f} ms (target <= 10 ms)")
    resident = bench_with_resident(args.repeat)
    print(f"  the same, 20,000 small tensors resident  {resident:8.2f} ms   +{resident - magic:6.2f} ms "
          f"({(resident - magic) / 20:.2f} µs per resident tensor)")
    cold, imports = bench_cold_start(5)
    print(f"first cell, cold worker (median of 5)  {cold:6.2f} s   "
          f"python -c 'import torch, IPython' {imports:5.2f} s   ratio {cold / imports:.2f}x (target <= 1.3x)")
    if ipp_ms is None:
        print("  ipyparallel push+execute+pull    (ipyparallel not installed)")
    else:
        print(f"  ipyparallel push+execute+pull    {ipp_ms:8.2f} ms   magic/ipyparallel = {magic / ipp_ms:.2f}x")


if __name__ == "__main__":
    main()
