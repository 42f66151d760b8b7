"""torch.compile(model, backend=modal_magic.remote(backend="local")): what a call costs, beside its baselines.

Run: python bench/bench_compile.py [--repeat N] [--big-layers N]
Prints, side by side from one process:

* a small MLP, warm: the median call compiled remotely vs the model run eagerly here, vs
  ``torch.compile(backend="eager")`` here, vs a warm ``%%modal_gpu``-style cell (``run_cell('y = x * 2')``,
  the transport every call rides on), vs the cell ``y = model(x)`` (the model sent with every cell);
* bytes sent per call: the first call (graph + parameters + activations), a warm call (activations only),
  and what every call would send without resident parameters (all the graph's inputs, packed);
* a training step of the same MLP (forward and backward both remote): time, bytes each way;
* a ~100M-parameter model (N layers of 4096×4096, 16.8M parameters each; 6 by default = 100.7M): the first
  call (graph and 403 MB of parameters travel) and a warm call, vs the same model run eagerly here.

The remote side is the local worker on this CPU machine, so the graph runs with ``eager`` there
(``compile_with="auto"`` picks inductor only on a GPU): the numbers are the machinery's cost, not a GPU's speed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

import modal_magic
from modal_magic import wire
from modal_magic.notebook.driver import CellOptions, run_cell


class Timing(NamedTuple):
    """Warm runs of one thing, in ms: the median, and the best run (on a shared machine the medians of
    millisecond calls spread with the load; the best run shows the cost of the work itself)."""

    median: float
    best: float

    def __str__(self) -> str:
        return f"{self.median:8.2f} ms (best {self.best:.2f})"


def timed(fn: Callable[[], object], repeat: int) -> Timing:
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return Timing(statistics.median(samples), min(samples))


def mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def small_mlp(repeat: int) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)).eval()
    x = torch.randn(32, 64)
    backend = modal_magic.remote(backend="local")
    remote = torch.compile(model, backend=backend)
    here = torch.compile(model, backend="eager")
    with torch.no_grad():
        remote(x)
        first = backend.last_call
        ms_remote = timed(lambda: remote(x), repeat)
        warm = backend.last_call
        ms_eager = timed(lambda: model(x), repeat)
        ms_here = timed(lambda: here(x), repeat)
    namespace = {"x": x, "model": model, "torch": torch}
    quiet = CellOptions(backend="local", quiet=True, outputs=("y",))
    ms_cell = timed(lambda: run_cell("y = x * 2", namespace, quiet, on_event=lambda event: None), repeat)
    ms_model_cell = timed(lambda: run_cell("with torch.no_grad():\n    y = model(x)", namespace, quiet,
                                           on_event=lambda event: None), repeat)

    params = sum(p.numel() for p in model.parameters())
    print(f"small MLP ({params:,} parameters, batch {tuple(x.shape)}), warm, median of {repeat}:")
    print(f"  remote (local worker)            {ms_remote}")
    overhead = ms_remote.median - ms_eager.median
    print(f"  eager here                       {ms_eager}   -> remote overhead {overhead:.2f} ms")
    print(f"  torch.compile(eager) here        {ms_here}")
    print(f"  warm cell 'y = x * 2' (run_cell) {ms_cell}   -> compiled call / that cell "
          f"{ms_remote.median / ms_cell.median:.2f}x")
    print(f"  warm cell 'y = model(x)'         {ms_model_cell}   (the model sent every time) -> compiled call / "
          f"that cell {ms_remote.median / ms_model_cell.median:.2f}x")
    every = wire.pack({"inputs": [*model.parameters(), x]}).nbytes
    print("bytes sent per call:")
    print(f"  first call (graph + parameters + activations)  {mib(first.sent_bytes):>10}")
    print(f"  warm call (activations only)                   {mib(warm.sent_bytes):>10}   "
          f"received {mib(warm.received_bytes)}")
    print(f"  without resident parameters (every input)      {mib(every):>10}   "
          f"-> {every / warm.sent_bytes:.1f}x a warm call")


def training_step(repeat: int) -> None:
    """One forward + backward of the small MLP: remote (both graphs there, saved activations kept there) vs eager."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    x = torch.randn(32, 64)
    backend = modal_magic.remote(backend="local")
    remote = torch.compile(model, backend=backend)
    sizes: list[tuple[int, int]] = []

    def remote_step() -> None:
        y = remote(x)
        forward = backend.last_call
        y.sum().backward()
        sizes[:] = [(forward.sent_bytes, forward.received_bytes),
                    (backend.last_call.sent_bytes, backend.last_call.received_bytes)]

    def eager_step() -> None:
        model(x).sum().backward()

    ms_remote, ms_eager = timed(remote_step, repeat), timed(eager_step, repeat)
    (fw_sent, fw_received), (bw_sent, bw_received) = sizes
    print("training step (forward + backward, no optimizer step, so no parameter travels), warm:")
    print(f"  remote  {ms_remote}   forward: sent {mib(fw_sent)}, received {mib(fw_received)}; "
          f"backward: sent {mib(bw_sent)}, received {mib(bw_received)} (the gradients)")
    print(f"  eager   {ms_eager}   -> remote overhead {ms_remote.median - ms_eager.median:.2f} ms")


def big_model(layers: int, repeat: int) -> None:
    torch.manual_seed(0)
    blocks = []
    for _ in range(layers):
        blocks += [nn.Linear(4096, 4096), nn.GELU()]
    model = nn.Sequential(*blocks).eval()
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(8, 4096)
    backend = modal_magic.remote(backend="local")
    remote = torch.compile(model, backend=backend)
    with torch.no_grad():
        start = time.perf_counter()
        remote(x)
        first_s = time.perf_counter() - start
        first = backend.last_call
        warm_ms = timed(lambda: remote(x), repeat)
        warm = backend.last_call
        eager_ms = timed(lambda: model(x), repeat)
    print(f"{params / 1e6:.1f}M-parameter model ({layers} x Linear(4096, 4096) + GELU, "
          f"{mib(params * 4)} float32), batch {tuple(x.shape)}:")
    print(f"  first call   {first_s:8.2f} s    sent {mib(first.sent_bytes)}")
    print(f"  warm call    {warm_ms}   sent {mib(warm.sent_bytes)}, received {mib(warm.received_bytes)}")
    print(f"  eager here   {eager_ms}   -> warm remote / eager {warm_ms.median / eager_ms.median:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--big-layers", type=int, default=6)
    args = parser.parse_args()
    small_mlp(args.repeat)
    training_step(args.repeat)
    big_model(args.big_layers, max(3, args.repeat // 10))
    modal_magic.notebook.extension.current().backends.close()


if __name__ == "__main__":
    main()
