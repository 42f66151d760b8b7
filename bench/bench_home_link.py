"""The Modal path over an emulated home link (issue 15): the resident session vs ``--fresh``.

Run: python bench/bench_home_link.py [--input-mib 256] [--train-params 25] [--cells 5] [--warm 10]
The notebook (this process) reaches the stand-in Modal server (``tests/fake_modal``)
and its blob store only through ``bench/link.py``: 100 Mbit/s up, 300 Mbit/s down,
20 ms each way (40 ms round trip). The containers the stand-in starts talk to it
directly, unthrottled (the link is the user's uplink, not Modal's network): the
stand-in hands the notebook's client blob URLs through the link
(``FAKE_MODAL_CLIENT_BLOB_URL``) and the containers the direct ones. Side by side
in one process, with the session and with ``--fresh`` (every input sent every cell:
what every cell did before the session):

* the link itself: a round trip, 32 MiB up and 32 MiB down (expected: 40 ms,
  2.68 s, 0.89 s);
* a warm trivial cell ``y = 1``, in seconds and in round trips;
* a cell that reads an unchanged ``--input-mib`` MiB tensor: the first cell (it
  goes up once, either way), then the second with the session and with ``--fresh``.
  256 MiB, not the issue's 1 GiB: every ``--fresh`` cell of 1 GiB takes ~90 s up at
  100 Mbit/s, the session's second cell the same as with 256 MiB;
* a ``--cells``-cell training session of a ``--train-params`` M-parameter model
  (forward, backward, an SGD step per cell).

Bytes "payload" are what the backend sends and gets (``bench_resident.Counted``),
bytes "link" all that crossed the link (gRPC, HTTP, heartbeats included).
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

from bench.bench_resident import Counted  # noqa: E402
from bench.link import Link  # noqa: E402
from tests.fake_modal.testing import Server  # noqa: E402

MIB = 1 << 20


class Cells:
    """Runs cells through the magic, each with its seconds and bytes (payload and link, up and down)."""

    def __init__(self, shell, counted: Counted, link: Link) -> None:
        self.shell, self.counted, self.link = shell, counted, link

    def run(self, flags: str, body: str) -> dict[str, float]:
        before = self.link.bytes()
        started = time.perf_counter()
        result = self.shell.run_cell(f"%%modal_gpu --backend modal --gpu none --quiet {flags}\n{body}")
        elapsed = time.perf_counter() - started
        if not result.success:
            sys.exit(f"the cell failed: {result.error_in_exec!r}")
        after = self.link.bytes()
        up, down = self.counted.take()
        return {"s": elapsed, "up": up, "down": down, "link_up": after[0] - before[0],
                "link_down": after[1] - before[1]}


def line(label: str, row: dict[str, float]) -> str:
    return (f"  {label:<28} {row['s']:8.2f} s   payload up {row['up'] / MIB:9.3f} MiB down {row['down'] / MIB:8.3f} MiB"
            f"   link up {row['link_up'] / MIB:9.3f} MiB down {row['link_down'] / MIB:8.3f} MiB")


def total(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(row[key] for row in rows) for key in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-mib", type=int, default=256)
    parser.add_argument("--train-params", type=float, default=25, help="millions of parameters")
    parser.add_argument("--cells", type=int, default=5, help="cells of the training session")
    parser.add_argument("--warm", type=int, default=10, help="warm trivial cells timed, each way")
    args = parser.parse_args()

    sanity = Link.sanity(32)
    print("the link (bench/link.py: 100 Mbit/s up, 300 Mbit/s down, 20 ms each way), alone:")
    print(f"  round trip {sanity['round_trip'] * 1e3:6.1f} ms (40)   32 MiB up {sanity['up']:5.2f} s (2.68)"
          f"   32 MiB down {sanity['down']:5.2f} s (0.89)")
    rtt = 0.040

    link = Link(2)
    grpc_port, blob_port = link.ports
    server = Server(Path(tempfile.mkdtemp(prefix="fake_modal_")), FAKE_MODAL_MULTIPART_THRESHOLD=str(64 << 20),
                    FAKE_MODAL_MULTIPART_PART_SIZE=str(16 << 20),
                    FAKE_MODAL_CLIENT_BLOB_URL=f"http://127.0.0.1:{blob_port}/blob")
    direct_blobs = server.report()["blob_url"].split("//", 1)[1].split("/", 1)[0]
    link.route(f"127.0.0.1:{server.port}", direct_blobs)
    os.environ.update(MODAL_SERVER_URL=f"http://127.0.0.1:{grpc_port}", MODAL_TOKEN_ID="ak-bench",
                      MODAL_TOKEN_SECRET="as-bench")
    import torch  # noqa: F401 - the notebook has torch imported before the first cell is timed
    from IPython.core.interactiveshell import InteractiveShell

    from modal_magic.backends.modal.backend import ModalBackend
    from modal_magic.notebook.extension import current

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "modal_magic")
    cells = Cells(shell, Counted(ModalBackend), link)
    try:
        print("\nthe notebook over that link to the stand-in Modal server (containers on loopback, no GPU):")
        print(line("first cell (app, container)", cells.run("", "y = 1")))

        print(f"\na warm trivial cell y = 1, median of {args.warm} (round trip {rtt * 1e3:.0f} ms):")
        for mode, flags in (("resident", ""), ("--fresh", "--fresh")):
            before = server.report()["rpcs"]
            rows = [cells.run(flags, "y = 1") for _ in range(args.warm)]
            after = server.report()["rpcs"]
            median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
            print(line(mode, median) + f"   = {median['s'] / rtt:5.1f} round trips")
            # Every RPC the stand-in answered meanwhile, containers' included (those do not cross the link).
            per_cell = {name: (after[name] - before.get(name, 0)) / args.warm for name in after
                        if after[name] != before.get(name, 0)}
            print("    RPCs per cell, notebook's and containers': "
                  + ", ".join(f"{name} {count:g}" for name, count in sorted(per_cell.items())))

        shell.run_cell(f"import torch\nbig = torch.ones({args.input_mib} * 2**18)")
        read = "s = float(big.sum())"
        print(f"\na cell reading an unchanged {args.input_mib} MiB tensor "
              f"(at 100 Mbit/s it alone is {args.input_mib * MIB * 8 / 100e6:.1f} s up):")
        print(line("cell 1 (sends it)", cells.run("", read)))
        print(line("cell 2, resident", cells.run("", read)))
        print(line("cell 2, --fresh (re-sent)", cells.run("--fresh", read)))
        shell.run_cell("del big\nimport gc\n_ = gc.collect()")

        width = int((args.train_params * 1e6 / 4) ** 0.5)  # four square layers
        shell.run_cell(f"torch.manual_seed(0)\nnet = torch.nn.Sequential(*[torch.nn.Linear({width}, {width}) "
                       f"for _ in range(4)])\nX = torch.randn(32, {width})\n"
                       "opt = torch.optim.SGD(net.parameters(), lr=1e-3)")
        params = sum(p.numel() for p in shell.user_ns["net"].parameters())
        step = "opt.zero_grad()\nloss = net(X).pow(2).mean()\nloss.backward()\nopt.step()\nlast = loss.item()"
        print(f"\na {args.cells}-cell training session, {params / 1e6:.1f}M parameters ({params * 4 / MIB:.0f} MiB), "
              "forward + backward + SGD step per cell:")
        for mode, flags in (("resident", ""), ("--fresh", "--fresh")):
            rows = [cells.run(flags, step) for _ in range(args.cells)]
            print(line(f"{mode} cell 1", rows[0]))
            print(line(f"{mode} cells 2..{args.cells} (median)",
                       {key: statistics.median(row[key] for row in rows[1:]) for key in rows[0]}))
            print(line(f"{mode} all {args.cells} cells", total(rows)))
    finally:
        current().backends.close()
        server.stop()
        link.stop()


if __name__ == "__main__":
    main()
