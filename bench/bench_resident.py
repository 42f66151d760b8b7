"""The remote-resident session (issue 15): bytes and seconds per cell, with it and without it (``--fresh``).

Run: python bench/bench_resident.py [--backend local|modal] [--model-mib 1024] [--cells 10] [--train-params 100]
Side by side in one process, the same cells with the session and with ``--fresh``
(every input sent every cell, nothing kept: what every cell did before):

* cells 1..N that each read an unchanged model of ``--model-mib`` MiB (a stack
  of 4096×4096 float32 layers) and run it on one input row: bytes sent up per
  cell (the payload the backend sends, re-sends included) and seconds; target
  ≤ 1 MiB for cells 2..N;
* a training session of N cells over a model of ``--train-params`` million
  parameters (forward, backward, an SGD step per cell): bytes up, bytes down and
  seconds per cell.

``--backend modal`` runs against the stand-in Modal server on loopback (no network,
no GPU: what the session saves in bytes here is what a home uplink would have to
carry; seconds on loopback are not a link's).
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

MIB = 1 << 20


class Counted:
    """Bytes up and down of every request the backend class runs (re-sends included)."""

    def __init__(self, backend_class: type) -> None:
        self.up: list[int] = []
        self.down: list[int] = []
        original = backend_class.run

        def counted(backend, request, inputs, on_event, **kwargs):
            self.up.append(inputs.nbytes)
            meta, buffers = original(backend, request, inputs, on_event, **kwargs)
            self.down.append(sum(memoryview(b).nbytes for b in buffers))
            return meta, buffers

        backend_class.run = counted

    def take(self) -> tuple[int, int]:
        up, down = sum(self.up), sum(self.down)
        self.up.clear()
        self.down.clear()
        return up, down


def run_cells(shell, counted: Counted, flags: str, body: str, cells: int) -> list[tuple[int, int, float]]:
    """(bytes up, bytes down, seconds) for each of ``cells`` runs of ``body``."""
    rows = []
    for _ in range(cells):
        started = time.perf_counter()
        result = shell.run_cell(f"%%modal_gpu {flags} --quiet\n{body}")
        elapsed = time.perf_counter() - started
        if not result.success:
            sys.exit(f"the cell failed: {result.error_in_exec!r}")
        rows.append((*counted.take(), elapsed))
    return rows


def show(title: str, rows: dict[str, list[tuple[int, int, float]]]) -> None:
    print(title)
    for mode, cells in rows.items():
        up2, down2, secs2 = zip(*cells[1:], strict=True)
        print(f"  {mode:<9} cell 1: up {cells[0][0] / MIB:9.2f} MiB down {cells[0][1] / MIB:9.2f} MiB "
              f"{cells[0][2]:7.2f} s | cells 2..{len(cells)} median: up {statistics.median(up2) / MIB:9.4f} MiB "
              f"(max {max(up2) / MIB:.4f}) down {statistics.median(down2) / MIB:9.2f} MiB "
              f"{statistics.median(secs2):7.3f} s")
    (_, now), (_, before) = rows.items()
    up_now, up_before = sum(c[0] for c in now[1:]), sum(c[0] for c in before[1:])
    secs_now, secs_before = sum(c[2] for c in now[1:]), sum(c[2] for c in before[1:])
    print(f"  cells 2..{len(now)}: {up_before / max(up_now, 1):,.0f}x fewer bytes up, "
          f"{secs_before / secs_now:.1f}x faster ({secs_before:.1f} s -> {secs_now:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("local", "modal"), default="local")
    parser.add_argument("--model-mib", type=int, default=1024)
    parser.add_argument("--cells", type=int, default=10)
    parser.add_argument("--train-params", type=float, default=100, help="millions of parameters")
    args = parser.parse_args()

    server = None
    if args.backend == "modal":
        from tests.fake_modal.testing import Server

        server = Server(Path(tempfile.mkdtemp(prefix="fake_modal_")), FAKE_MODAL_MULTIPART_THRESHOLD=str(64 << 20),
                        FAKE_MODAL_MULTIPART_PART_SIZE=str(16 << 20))
        os.environ.update(MODAL_SERVER_URL=server.url, MODAL_TOKEN_ID="ak-bench", MODAL_TOKEN_SECRET="as-bench")
    import torch  # noqa: F401 - the notebook has torch imported before the first cell is timed
    from IPython.core.interactiveshell import InteractiveShell

    from modal_magic.backends.local import LocalBackend
    from modal_magic.backends.modal.backend import ModalBackend
    from modal_magic.notebook.extension import current

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "modal_magic")
    counted = Counted(ModalBackend if args.backend == "modal" else LocalBackend)
    flags = f"--backend {args.backend} --gpu none"
    try:
        layers = max(1, args.model_mib // 64)
        shell.run_cell(f"import torch\ntorch.manual_seed(0)\nmodel = torch.nn.Sequential(*[torch.nn.Linear(4096, 4096, "
                       f"bias=False) for _ in range({layers})])\nrow = torch.randn(1, 4096)")
        read = "with torch.no_grad():\n    y = float(model(row).sum())"
        show(f"{args.backend}: {args.cells} cells reading an unchanged {layers * 64} MiB model",
             {"resident": run_cells(shell, counted, flags, read, args.cells),
              "--fresh": run_cells(shell, counted, flags + " --fresh", read, args.cells)})
        shell.run_cell("del model\nimport gc\n_ = gc.collect()")

        width = int((args.train_params * 1e6 / 4) ** 0.5)  # four square layers
        shell.run_cell(f"torch.manual_seed(0)\nnet = torch.nn.Sequential(*[torch.nn.Linear({width}, {width}) "
                       f"for _ in range(4)])\nX = torch.randn(32, {width})\n"
                       "opt = torch.optim.SGD(net.parameters(), lr=1e-3)")
        step = "opt.zero_grad()\nloss = net(X).pow(2).mean()\nloss.backward()\nopt.step()\nlast = loss.item()"
        params = sum(p.numel() for p in shell.user_ns["net"].parameters())
        show(f"{args.backend}: a {args.cells}-cell training session, {params / 1e6:.0f}M parameters "
             f"({params * 4 / MIB:.0f} MiB)",
             {"resident": run_cells(shell, counted, flags, step, args.cells),
              "--fresh": run_cells(shell, counted, flags + " --fresh", step, args.cells)})
    finally:
        current().backends.close()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
