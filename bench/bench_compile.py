"""torch.compile(model, backend=modal_magic.remote(backend="local")): what a call costs, beside its baselines.

Run: python bench/bench_compile.py [--repeat N] [--big-layers N]
Prints, side by side from one process:

* a small MLP, warm: the median call compiled remotely vs the model run eagerly here, vs
  ``torch.compile(backend="eager")`` here, vs a warm ``%%modal_gpu``-style cell (``run_cell('y = x * 2')``,
  the transport every call rides on), vs the cell ``y = model(x)`` (the model sent with every cell);
* bytes sent per call: the first call (graph + parameters + activations), a warm call (activations only),
  and what every call would send without resident parameters (all the graph's inputs, packed);
* a ~100M-parameter model (N layers of 4096×4096, 16.8M parameters each; 6 by default = 100.7M): the first
  call (graph and 403 MB of parameters travel) and a warm call, vs the same model run eagerly here.

The remote side is the local worker on this CPU machine, so the graph runs with ``eager`` there
(``compile_with="auto"`` picks inductor only on a GPU): the numbers are the machinery's cost, not a GPU's speed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch import nn

import modal_magic
from modal_magic import wire
from modal_magic.driver import CellOptions, run_cell


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


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
        ms_remote = median_ms(lambda: remote(x), repeat)
        warm = backend.last_call
        ms_eager = median_ms(lambda: model(x), repeat)
        ms_here = median_ms(lambda: here(x), repeat)
    namespace = {"x": x, "model": model, "torch": torch}
    quiet = CellOptions(backend="local", quiet=True, outputs=("y",))
    ms_cell = median_ms(lambda: run_cell("y = x * 2", namespace, quiet, on_event=lambda event: None), repeat)
    ms_model_cell = median_ms(lambda: run_cell("with torch.no_grad():\n    y = model(x)", namespace, quiet,
                                               on_event=lambda event: None), repeat)

    params = sum(p.numel() for p in model.parameters())
    print(f"small MLP ({params:,} parameters, batch {tuple(x.shape)}), warm, median of {repeat}:")
    print(f"  remote (local worker)          {ms_remote:8.2f} ms")
    print(f"  eager here                     {ms_eager:8.3f} ms   -> remote overhead {ms_remote - ms_eager:.2f} ms "
          f"({ms_remote / ms_eager:.0f}x)")
    print(f"  torch.compile(eager) here      {ms_here:8.3f} ms")
    print(f"  warm cell 'y = x * 2' (run_cell) {ms_cell:6.2f} ms   -> compiled call / that cell: {ms_remote / ms_cell:.2f}x")
    print(f"  warm cell 'y = model(x)'       {ms_model_cell:8.2f} ms   (sends the model every time) "
          f"-> compiled call / that cell: {ms_remote / ms_model_cell:.2f}x")
    every = wire.pack({"inputs": [*model.parameters(), x]}).nbytes
    print("bytes sent per call:")
    print(f"  first call (graph + parameters + activations)  {mib(first.sent_bytes):>10}")
    print(f"  warm call (activations only)                   {mib(warm.sent_bytes):>10}   received {mib(warm.received_bytes)}")
    print(f"  without resident parameters (every input)      {mib(every):>10}   -> {every / warm.sent_bytes:.1f}x a warm call")


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
        warm_ms = median_ms(lambda: remote(x), repeat)
        warm = backend.last_call
        eager_ms = median_ms(lambda: model(x), repeat)
    print(f"{params / 1e6:.1f}M-parameter model ({layers} x Linear(4096, 4096) + GELU, "
          f"{mib(params * 4)} float32), batch {tuple(x.shape)}:")
    print(f"  first call   {first_s:8.2f} s    sent {mib(first.sent_bytes)}")
    print(f"  warm call    {warm_ms:8.1f} ms   sent {mib(warm.sent_bytes)}, received {mib(warm.received_bytes)}")
    print(f"  eager here   {eager_ms:8.1f} ms   -> warm remote / eager {warm_ms / eager_ms:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--big-layers", type=int, default=6)
    args = parser.parse_args()
    small_mlp(args.repeat)
    big_model(args.big_layers, max(3, args.repeat // 10))
    modal_magic.backends.close_all()


if __name__ == "__main__":
    main()
