"""One side of the replay: ``python -m tests.replay.side plain|remote OUTDIR NOTEBOOK...``.

Imports torch, numpy, IPython and matplotlib once, then forks one child per notebook, so each
notebook gets a fresh kernel process (a fresh ``InteractiveShell`` singleton, fresh process-wide
state) without paying the imports again. The child plays the notebook's cells in order in a
real ``InteractiveShell`` with ``modal_magic`` loaded and the inline matplotlib backend (as a
Jupyter kernel has), and writes ``OUTDIR/NOTEBOOK.MODE.json``: per cell its stdout, stderr,
displays, the exception it raised, and a snapshot of the namespace (``snapshot.py``).

``plain``: every cell runs as written. ``remote``: every cell not tagged ``[local]`` runs under
``%%modal_gpu --backend local --quiet`` (one worker per notebook, started by its first cell).
``control``: as ``plain``, written where ``remote`` would be: a plain-vs-plain replay must score 100%,
which checks that the harness is tolerant of what differs between any two processes.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import random
import signal
import sys
import tempfile
import time
import traceback
from typing import Any

NOTEBOOK_TIMEOUT = 150.0  # seconds for one notebook's cells, both sides
MAGIC = "%%modal_gpu --backend local --quiet"


def _display_record(data: dict[str, Any]) -> dict[str, Any]:
    from .snapshot import mask

    record: dict[str, Any] = {"mime": sorted(data)}
    if "text/plain" in data:
        record["text"] = mask(str(data["text/plain"]))
    png = data.get("image/png")
    if png is not None:
        raw = png if isinstance(png, bytes) else base64.b64decode(png)
        if raw[:8] == b"\x89PNG\r\n\x1a\n":
            record["png"] = f"{int.from_bytes(raw[16:20], 'big')}x{int.from_bytes(raw[20:24], 'big')}"
    if "text/html" in data:
        record["html"] = mask(str(data["text/html"]))[:2000]
    return record


def run_notebook(notebook: Any, mode: str) -> dict[str, Any]:
    import IPython
    from IPython.core.interactiveshell import InteractiveShell

    from .snapshot import mask, snapshot

    shell = InteractiveShell.instance()
    # modal_magic's "NoColor" default is no IPython 9 theme (issue 13; fixed on another branch).
    shell.colors = "nocolor" if IPython.version_info >= (9,) else "NoColor"
    shell.run_line_magic("load_ext", "modal_magic")
    # As in a Jupyter kernel: `%matplotlib inline` works (a kernel's enable_gui(None) does nothing) and
    # figures left open at the end of a cell are shown as PNGs and closed.
    shell.enable_gui = lambda gui=None: None
    shell.enable_matplotlib("inline")

    displays: list[dict[str, Any]] = []
    shell.display_pub.publish = lambda data, metadata=None, *a, **kw: displays.append(_display_record(data))
    tracebacks: list[str] = []
    shell._showtraceback = lambda etype, evalue, stb: tracebacks.append("\n".join(stb))

    # Both kernels start from the same random states (torch's, numpy's and random's are seeded from
    # the OS otherwise: a difference between any two processes, not one the magic makes).
    random.seed(20240601)
    sys.modules["numpy"].random.seed(20240601)
    sys.modules["torch"].manual_seed(20240601)
    hidden = set(shell.user_ns)

    cells = []
    for cell in notebook.cells:
        source = f"{MAGIC}\n{cell.source}" if mode == "remote" and not cell.local else cell.source
        out, err = io.StringIO(), io.StringIO()
        displays.clear()
        tracebacks.clear()
        started = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            result = shell.run_cell(source, store_history=True)
        seconds = time.perf_counter() - started
        error = result.error_before_exec or result.error_in_exec
        try:
            picture = snapshot(shell.user_ns, hidden)
        except Exception:  # noqa: BLE001 - the harness's own failure, shown as such
            picture = {"harness_error": traceback.format_exc()}
        cells.append({
            "id": cell.id, "local": cell.local, "seconds": round(seconds, 4),
            "stdout": mask(out.getvalue()), "stderr": mask(err.getvalue()),
            "displays": list(displays),
            "error": None if error is None else {"type": type(error).__name__, "message": mask(str(error))[:1000]},
            "traceback": mask("\n".join(tracebacks))[-3000:],
            "snapshot": picture,
        })
    with contextlib.suppress(Exception):
        shell.run_line_magic("unload_ext", "modal_magic")  # stops the worker
    return {"notebook": notebook.name, "mode": mode, "cells": cells}


def main(argv: list[str]) -> int:
    mode, outdir, names = argv[0], argv[1], argv[2:]
    assert mode in ("plain", "remote", "control"), mode
    # What every notebook imports, imported once before forking (the children share it).
    import IPython  # noqa: F401
    import matplotlib
    import matplotlib.pyplot
    import numpy  # noqa: F401
    import torch  # noqa: F401

    import modal_magic  # noqa: F401

    from . import corpus

    matplotlib.use("Agg")
    for notebook in corpus.load(names):
        target = os.path.join(outdir, f"{notebook.name}.{'remote' if mode == 'control' else mode}.json")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the notebook's kernel
            code = 0
            try:
                os.setpgid(0, 0)
                # A working directory of its own: notebooks write files next to themselves.
                os.chdir(tempfile.mkdtemp(prefix=f"replay-{notebook.name}-{mode}-"))
                data = run_notebook(notebook, mode)
                with open(target + ".tmp", "w") as f:
                    json.dump(data, f)
                os.replace(target + ".tmp", target)
            except BaseException:  # noqa: BLE001
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        deadline = time.monotonic() + NOTEBOOK_TIMEOUT
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                print(f"replay: {notebook.name} ({mode}) timed out after {NOTEBOOK_TIMEOUT:g} s", file=sys.stderr)
                break
            time.sleep(0.02)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
