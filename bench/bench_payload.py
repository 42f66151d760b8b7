"""Payloads out and back through %%modal_gpu (local backend) vs plain cloudpickle vs fresh memcpys.

Run: python bench/bench_payload.py [--repeat N] [--skip-1g]
Two cells per payload `x`, each sending `x` to the worker and bringing data back:

* in place — `t.mul_(1)` on every tensor of `x` (what training does): `x` comes
  back as an update, copied into the notebook's existing memory;
* new value — `y = copy.deepcopy(x)`: a fresh copy comes back as `y` (a plain
  `y = x` would come back as a reference to the notebook's own `x`, moving no
  data). The worker's deepcopy is part of that time; its cost alone is printed.

Baselines from the same process: plain cloudpickle dumps+loads done twice (out
and back), and two fresh memcpys (`clone()` twice). Extra peak memory is the
high-water mark over the RSS before the cell, per payload byte, for the
notebook process and the worker. Targets (DESIGN §8): ≥ 3× plain cloudpickle
on big tensors (stretch 5×), extra peak ≤ 1.5× payload, ≤ 40 µs per small
tensor each way.
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import time

import cloudpickle
import torch
from IPython.core.interactiveshell import InteractiveShell

from modal_magic.notebook.extension import current


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


IN_PLACE = ("%%modal_gpu --backend local --quiet\nwith torch.no_grad():\n"
            "    for t in (x.parameters() if isinstance(x, torch.nn.Module) else x if isinstance(x, list) else [x]):\n"
            "        t.mul_(1)")
NEW_VALUE = "%%modal_gpu --backend local --quiet\nimport copy\ny = copy.deepcopy(x)"


def measure_cell(shell: InteractiveShell, cell: str, size: int, repeat: int) -> tuple[float, float, float]:
    """(median seconds, extra peak here, extra peak in the worker) for one cell."""
    assert shell.run_cell(cell).success  # warm (torch imported there), and a first result in place
    shell.user_ns.pop("y", None)
    gc.collect()
    worker = current().backends.get("local").pid
    here0, there0 = _reset_peak("self"), _reset_peak(worker)
    assert shell.run_cell(cell).success  # the run whose memory is measured
    here_peak = (_status("self", "VmHWM") - here0) / size
    there_peak = (_status(worker, "VmHWM") - there0) / size
    shell.user_ns.pop("y", None)
    return median_time(lambda: shell.run_cell(cell), repeat), here_peak, there_peak


def run_case(shell: InteractiveShell, name: str, x, repeat: int, n_small: int = 0) -> None:
    size = nbytes(x)
    shell.user_ns["x"] = x
    shell.user_ns["torch"] = torch
    plain = median_time(lambda: cloudpickle.loads(cloudpickle.dumps(cloudpickle.loads(cloudpickle.dumps(x)))), repeat)
    memcpy = median_time(lambda: (_clone(x), _clone(x)), repeat)
    deepcopy = median_time(lambda: copy.deepcopy(x), repeat)
    print(f"{name} — {size / 2**20:.0f} MiB | baselines: cloudpickle x2 {plain:.3f} s, 2 memcpys {memcpy:.3f} s,"
          f" deepcopy alone {deepcopy:.3f} s")
    for label, cell in (("in place (mul_)", IN_PLACE), ("new value (deepcopy)", NEW_VALUE)):
        seconds, here_peak, there_peak = measure_cell(shell, cell, size, repeat)
        line = (f"    {label:22s} magic {seconds:7.3f} s ({2 * size / seconds / 1e9:5.2f} GB/s) -> "
                f"{plain / seconds:5.1f}x cloudpickle | extra peak: notebook {here_peak:4.2f}x, "
                f"worker {there_peak:4.2f}x")
        if n_small:
            line += (f" | {seconds / 2 / n_small * 1e6:5.1f} µs per tensor each way "
                     f"(cloudpickle {plain / 2 / n_small * 1e6:5.1f})")
        print(line)


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
    print("out and back through %%modal_gpu --backend local, one process, this machine; medians of", args.repeat)
    run_case(shell, "tensor 256 MiB", torch.randn(2**26), args.repeat)
    if not args.skip_1g:
        run_case(shell, "tensor 1 GiB", torch.randn(2**28), args.repeat)
    run_case(shell, "10,000 small tensors (256 f32)", [torch.randn(256) for _ in range(10_000)], args.repeat, 10_000)
    model = torch.nn.Sequential(*[torch.nn.Linear(4096, 4096) for _ in range(6)])
    run_case(shell, "model 6x Linear(4096,4096) 100.7M", model, args.repeat)


if __name__ == "__main__":
    main()
