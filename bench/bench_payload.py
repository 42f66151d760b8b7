"""Payloads out and back through %%modal_gpu (local backend) vs plain cloudpickle vs fresh memcpys.

Run: python bench/bench_payload.py [--skip-1g]
Each case sends `x` to the worker and brings it back as `y` (cell: `y = x`), so
the data crosses the process boundary twice. Baselines, from the same process:
plain cloudpickle dumps+loads done twice (out and back), and two fresh memcpys
(`clone()` twice), the floor for any approach that materialises new memory.
Extra peak memory is the high-water mark over the RSS before the cell, divided
by the payload size, for the notebook process and for the worker.
Targets (DESIGN §8): ≥ 3× plain cloudpickle on big tensors (stretch 5×), extra
peak ≤ 1.5× payload, ≤ 40 µs per small tensor each way.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import cloudpickle
import torch
from IPython.core.interactiveshell import InteractiveShell

from modal_magic.backends import get_backend


def _status(pid: int | str, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak(pid: int | str) -> int:
    with open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM to the current RSS
    return _status(pid, "VmRSS")


def nbytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.untyped_storage().nbytes()
    if isinstance(obj, torch.nn.Module):
        return sum(p.untyped_storage().nbytes() for p in obj.parameters())
    return sum(nbytes(o) for o in obj)


def median_time(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run_case(shell: InteractiveShell, name: str, x, repeat: int, n_small: int = 0) -> None:
    size = nbytes(x)
    shell.user_ns["x"] = x
    shell.run_cell("%%modal_gpu --backend local\ny = x")  # warm: the worker has torch imported
    shell.user_ns.pop("y", None)
    gc.collect()
    worker = get_backend("local").pid
    here0, there0 = _reset_peak("self"), _reset_peak(worker)
    assert shell.run_cell("%%modal_gpu --backend local\ny = x").success  # the run whose memory is measured
    here_peak = (_status("self", "VmHWM") - here0) / size
    there_peak = (_status(worker, "VmHWM") - there0) / size
    shell.user_ns.pop("y", None)
    magic = median_time(lambda: shell.run_cell("%%modal_gpu --backend local\ny = x"), repeat)
    shell.user_ns.pop("y", None)
    plain = median_time(lambda: cloudpickle.loads(cloudpickle.dumps(cloudpickle.loads(cloudpickle.dumps(x)))), repeat)
    memcpy = median_time(lambda: (_clone(x), _clone(x)), repeat)

    print(f"{name:34s} {size / 2**20:8.0f} MiB | magic {magic:7.3f} s ({2 * size / magic / 1e9:5.2f} GB/s)"
          f" | cloudpickle x2 {plain:7.3f} s -> {plain / magic:5.1f}x faster"
          f" | 2 memcpys {memcpy:6.3f} s | extra peak: notebook {here_peak:4.2f}x, worker {there_peak:4.2f}x")
    if n_small:
        print(f"{'':34s} per tensor each way: magic {magic / 2 / n_small * 1e6:6.1f} µs,"
              f" cloudpickle {plain / 2 / n_small * 1e6:6.1f} µs (target <= 40 µs)")


def _clone(x):
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, torch.nn.Module):
        return [p.detach().clone() for p in x.parameters()]
    return [t.clone() for t in x]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3, help="runs per approach; the median is printed")
    parser.add_argument("--skip-1g", action="store_true", help="leave out the 1 GiB case (needs ~8 GiB free)")
    args = parser.parse_args()
    torch.manual_seed(0)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "modal_magic")
    print("out and back through %%modal_gpu --backend local (cell: y = x), one process, this machine")
    run_case(shell, "tensor 256 MiB", torch.randn(2**26), args.repeat)
    if not args.skip_1g:
        run_case(shell, "tensor 1 GiB", torch.randn(2**28), args.repeat)
    run_case(shell, "10,000 small tensors (256 f32)", [torch.randn(256) for _ in range(10_000)], args.repeat, 10_000)
    model = torch.nn.Sequential(*[torch.nn.Linear(4096, 4096) for _ in range(6)])
    run_case(shell, "model 6x Linear(4096,4096) 100.7M", model, args.repeat)


if __name__ == "__main__":
    main()
