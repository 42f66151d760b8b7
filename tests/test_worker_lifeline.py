"""A worker never outlives its kernel: killed mid-cell, the kernel leaves no orphan spinning behind it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

KERNEL = textwrap.dedent("""
    import sys
    from modal_magic import CellOptions, run_cell

    # The cell writes its worker's pid where the test can read it, then spins as `while True: pass` does.
    run_cell("import os\\nopen(path, 'w').write(str(os.getpid()))\\nwhile True:\\n    pass",
             {"path": sys.argv[1]}, CellOptions(backend="local"), on_event=lambda event: None)
""")


def _alive(pid: int) -> bool:
    """Running, that is: a zombie nobody has reaped yet has stopped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_a_killed_kernels_busy_worker_ends_itself(tmp_path) -> None:
    marker = tmp_path / "worker.pid"
    kernel = subprocess.Popen([sys.executable, "-c", KERNEL, str(marker)], cwd=Path(__file__).parent.parent)
    try:
        assert _wait_for(lambda: marker.exists() and marker.read_text().isdigit(), 60), "the cell never started"
        worker = int(marker.read_text())
        assert _alive(worker)
        kernel.send_signal(signal.SIGKILL)  # as restart_kernel(now=True) does: nothing of ours runs
        kernel.wait()
        assert _wait_for(lambda: not _alive(worker), 10), f"worker {worker} outlived its kernel"
    finally:
        kernel.kill()
        if marker.exists() and marker.read_text().isdigit() and _alive(int(marker.read_text())):
            os.kill(int(marker.read_text()), signal.SIGKILL)  # never leave the orphan to the next test
