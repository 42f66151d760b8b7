"""What printing costs: a plain cell against ``%%modal_gpu`` on each backend, in one real kernel.

Run: python bench/bench_output.py [--lines 100000] [--modal] [--modal-lines 20000]

Each case is a cell that prints ``--lines`` lines (``print(i)``) or writes as many
``'\\r'`` progress updates (``sys.stdout.write(f'\\r{i}')``), timed from the
execute request until the kernel is idle again, all of its output received:
in a plain cell, under ``--backend local`` (the worker process and its socket),
and with ``--modal`` under ``--backend modal`` against the stand-in Modal server
on loopback (its container a local subprocess; fewer lines by default, as every
frame there is a Modal generator item). The kernel is a real one (ipykernel,
through jupyter_client), as the fault campaign of issue 26 used: there each
output event the notebook side shows is an iopub message, and their count is
printed too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _cases(lines: int) -> dict[str, str]:
    return {
        f"{lines:,} lines": f"for i in range({lines}):\n    print(i)",
        f"{lines:,} '\\r' writes": f"import sys\nfor i in range({lines}):\n    sys.stdout.write(f'\\r{{i}}')\nprint()",
    }


def _timed(client: Any, source: str) -> tuple[float, int]:
    """Seconds from sending ``source`` until the kernel is idle again, and the stream messages it sent."""
    began = time.perf_counter()
    msg_id = client.execute(source)
    streams, failed = 0, None
    while True:
        msg = client.get_iopub_msg(timeout=1800)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        streams += kind == "stream"
        if kind == "error":
            failed = f"{msg['content']['ename']}: {msg['content']['evalue']}"
        if kind == "status" and msg["content"]["execution_state"] == "idle":
            break
    elapsed = time.perf_counter() - began
    if failed:
        sys.exit(f"the cell failed: {failed}\n{source}")
    return elapsed, streams


@contextlib.contextmanager
def _stand_in() -> Iterator[dict[str, str]]:
    """The stand-in Modal server, as the tests and ``bench_modal_client.py`` start it; the kernel's variables."""
    from tests.fake_modal.testing import Server

    server = Server(Path(tempfile.mkdtemp(prefix="fake_modal_")))
    try:
        yield {"MODAL_SERVER_URL": server.url, "MODAL_TOKEN_ID": "ak-bench", "MODAL_TOKEN_SECRET": "as-bench"}
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--modal", action="store_true", help="also the Modal path, against the stand-in")
    parser.add_argument("--modal-lines", type=int, default=20_000)
    args = parser.parse_args()

    from jupyter_client.manager import start_new_kernel

    with contextlib.ExitStack() as stack:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        backends = ["local"]
        if args.modal:
            env.update(stack.enter_context(_stand_in()))
            backends.append("modal")
        manager, client = start_new_kernel(kernel_name="python3", cwd=str(ROOT), env=env)
        stack.callback(manager.shutdown_kernel, now=False)  # after the stand-in's last cell, before it stops
        stack.callback(client.stop_channels)
        _timed(client, "%load_ext modal_magic")
        for backend in backends:
            _timed(client, f"%%modal_gpu --backend {backend} --quiet\nwarm = 1")  # the worker or container started
        print(f"printing in a kernel: a plain cell against %%modal_gpu ({', '.join(backends)});"
              " seconds, the ratio, and the stream messages the kernel sent")
        for backend in backends:
            for name, body in _cases(args.lines if backend == "local" else args.modal_lines).items():
                plain, plain_messages = _timed(client, body)
                remote, messages = _timed(client, f"%%modal_gpu --backend {backend} --quiet\n{body}")
                print(f"  {name:<22} plain {plain:8.2f} s ({plain_messages:6d})   {backend:<5} {remote:8.2f} s"
                      f" ({messages:6d})   ratio {remote / plain:6.1f}x", flush=True)


if __name__ == "__main__":
    main()
