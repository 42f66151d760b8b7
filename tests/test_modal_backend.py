"""The Modal backend with Modal's real SDK, up to the network (Modal's servers cannot be reached here).

Offline: the image built from the spec, the executor's code path through Modal's own
``.local()``, and a fake token against a closed local port. Live tests (``pytest -m modal``)
run a real GPU cell when credentials exist and skip, saying so, when they do not.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from modal_magic.backends.modal.plan import ImageSpec, modal_credentials


def run_python(script: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """A fresh interpreter: the runner takes over its process's IPython singleton."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_image_is_built_with_the_real_sdk_offline() -> None:
    import modal

    from modal_magic.backends.modal.backend import build_image

    image = build_image(ImageSpec.for_this_kernel(("cloudpickle",)))
    assert isinstance(image, modal.Image)  # layers are lazy: nothing is built or sent until an app runs


def test_executor_runs_a_cell_through_modals_local() -> None:
    out = run_python("""
        import json, torch, modal
        from modal_magic import wire
        from modal_magic.wire import frames
        from modal_magic.backends.modal.container import executor_class
        app = modal.App("modal-magic-test")
        Executor = app.cls(serialized=True, max_containers=1)(executor_class())
        from modal_magic.wire.identity import LocalObjects
        inputs = wire.pack({"x": torch.arange(4.0)}, keep_memo=True)
        request = {"kind": "run", "code": "print('hi from the container')\\ny = x * 2\\ny.sum()",
                   "outputs": None, "placeholders": [], "env": {}, "inputs": inputs.meta()}
        events = []
        for chunk in Executor().run.local(frames.encode(request), list(inputs.buffers)):
            meta, buffers = frames.decode(chunk)
            named = {"stream": meta.get("text"), "call": f"call {meta.get('id')}"}
            events.append(named.get(meta["kind"], meta["kind"]))
            if meta["kind"] == "result":
                result = frames.Pieces(meta)
            elif meta["kind"] == "piece":
                result.add(buffers)
        assert result.complete
        values = wire.unpack(wire.Payload.from_meta(result.meta["payload"], result.buffers),
                             persistent_load=LocalObjects(inputs.memo).persistent_load)
        print(json.dumps({"events": events, "y": values["y"].tolist(), "value": float(values["<value>"])}))
    """)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # (no call id outside a container: modal.current_function_call_id() is None under .local())
    assert result["events"] == ["call None", "stage", "hi from the container\n", "stage", "result", "piece"]
    assert result["y"] == [0.0, 2.0, 4.0, 6.0] and result["value"] == 12.0


CANCEL_SCRIPT = """
    import json, os, signal, sys, threading
    import modal
    from modal.exception import InputCancellation
    from modal_magic import wire
    from modal_magic.wire import frames
    from modal_magic.backends.modal.container import executor_class

    def cancelled(signum, frame):  # what Modal's container entrypoint installs for a sync input
        raise InputCancellation("Input was cancelled by user")

    import modal_magic.backends.modal.container as container
    container.GRACE = 1.0  # (20 s in a real container: inside Modal's 30 s)

    signal.signal(signal.SIGUSR1, cancelled)
    executor = modal.App("modal-magic-test").cls(serialized=True, max_containers=1)(executor_class())()

    def request(code, timeout=None):
        inputs = wire.pack({"x": bytearray(b"abc")})
        return frames.encode({"kind": "run", "code": code, "outputs": None, "placeholders": [], "env": {},
                              "timeout": timeout, "inputs": inputs.meta()}), list(inputs.buffers)

    def pid():
        metas = [frames.decode(chunk)[0] for chunk in executor.run.local(*request("import os\\nprint(os.getpid())"))]
        return [int(meta["text"]) for meta in metas if meta["kind"] == "stream"]

    seen, first = [], pid()
    try:
        for chunk in executor.run.local(*request(sys.argv[1], float(sys.argv[2]) if sys.argv[2:] else None)):
            meta, _ = frames.decode(chunk)
            seen.append(meta.get("stage", meta["kind"]) + ("!" if meta.get("interrupted") else ""))
            if meta.get("stage") == "run" and not sys.argv[2:]:  # Modal's FunctionCallCancel arrives as SIGUSR1
                threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGUSR1)).start()
    except InputCancellation:
        seen.append("cancelled")
    seen.append(sorted(t.name for t in threading.enumerate()))
    seen.append("same worker" if pid() == first else "new worker")
    cell = "import numpy as np\\nx[0] = 65\\na = np.frombuffer(x, np.uint8)\\na[1] = 66\\nprint(bytes(x))"
    for chunk in executor.run.local(*request(cell)):
        meta, _ = frames.decode(chunk)
        seen.append(meta.get("text", meta.get("stage", meta["kind"])))  # inputs arrive writable, as locally
    print(json.dumps(seen))
"""


def _container(*args: str) -> list:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(CANCEL_SCRIPT), *args],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


PIECES_SCRIPT = """
    import json, modal, torch
    from modal_magic import wire
    from modal_magic.wire import frames
    from modal_magic.backends.modal.container import executor_class
    from modal_magic.wire.identity import LocalObjects

    executor = modal.App("modal-magic-test").cls(serialized=True, max_containers=1)(executor_class())()
    seen = []
    for token, lose in (("t1", False), ("t2", True)):
        inputs = wire.pack({"x": torch.arange(5000.0, dtype=torch.float64), "y": torch.ones(3)}, keep_memo=True)
        request = {"kind": "run", "code": "x.mul_(2)\\ntotal = float(x.sum() + y.sum())", "outputs": None,
                   "placeholders": [], "env": {}, "inputs": inputs.meta(), "token": token}
        messages = frames.encode_pieces(request, inputs.buffers, piece=4096)
        head = next(messages)
        for index, piece in enumerate(messages):
            if not (lose and index == 2):  # that one went to a container that is gone
                executor.put.local(token, index, piece)
        kinds = []
        for chunk in executor.run.local(head, []):
            meta, buffers = frames.decode(chunk)
            kinds.append(meta["kind"])
            if meta["kind"] == "result":
                result = frames.Pieces(meta)
            elif meta["kind"] == "piece":
                result.add(buffers)
        seen.append(kinds[-1])
        if not lose:
            values = wire.unpack(wire.Payload.from_meta(result.meta["payload"], result.buffers),
                                 persistent_load=LocalObjects(inputs.memo).persistent_load)
            seen.append(values["total"])
    print(json.dumps(seen))
"""


def test_big_inputs_go_ahead_in_pieces_and_a_lost_piece_is_told() -> None:
    out = run_python(PIECES_SCRIPT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["piece", 2 * sum(range(5000)) + 3, "inputs_lost"]


def test_a_cancelled_call_interrupts_the_cell_even_in_a_blocking_call_and_keeps_its_worker() -> None:
    seen = _container("import time\nfinished = False\ntime.sleep(30)\nfinished = True")
    assert seen[:3] == ["call", "run", "cancelled"]
    assert seen[3] == ["MainThread"]  # nothing of the cell is left running in the container
    assert seen[4] == "same worker"   # the cell unwound: what earlier cells left there is still there
    assert seen[5:] == ["call", "run", "b'ABc'\n", "download", "result", "piece"]


def test_a_cell_that_will_not_stop_costs_its_worker_not_the_container() -> None:
    started = time.monotonic()
    seen = _container("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)")
    assert seen[:3] == ["call", "run", "cancelled"]
    assert seen[4] == "new worker" and seen[-1] == "piece"  # the container (this process) lives on
    assert time.monotonic() - started < 40  # the grace, not the cell's 60 s


def test_the_cells_timeout_is_enforced_in_the_container_where_the_cell_was() -> None:
    started = time.monotonic()
    seen = _container("state = 1\nimport time\ntime.sleep(30)", "1.0")
    # stopped, with the line it was on (what it did is packed as an interrupted cell's: the notebook drops it)
    assert seen[:4] == ["call", "run", "download", "result!"]
    assert seen[5] == "same worker" and time.monotonic() - started < 25


def test_preflight_tries_every_server_in_modals_failover_list() -> None:
    from modal.config import DEFAULT_SERVER_URL

    from modal_magic.backends.modal.errors import preflight
    from modal_magic.errors import BackendUnavailable

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        preflight(f"http://127.0.0.1:{_closed_port()}, http://127.0.0.1:{listening.getsockname()[1]}")  # one is enough
    with pytest.raises(BackendUnavailable) as refused:
        preflight(f"http://127.0.0.1:{_closed_port()},http://127.0.0.1:{_closed_port()}")
    assert str(refused.value).count("127.0.0.1:") == 2
    assert "," in DEFAULT_SERVER_URL  # https://api.modal.com,https://api.modal2.com since modal 1.5.2
    try:
        preflight(DEFAULT_SERVER_URL)  # passes where Modal is reachable
    except BackendUnavailable as exc:  # offline: both hosts were tried, each by its own name
        assert "api.modal.com:443 (" in str(exc) and "api.modal2.com:443 (" in str(exc), exc


def test_no_preflight_behind_a_proxy(monkeypatch) -> None:
    from modal_magic.backends.modal.errors import preflight
    from modal_magic.errors import BackendUnavailable

    dead = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{_closed_port()}")
    preflight(dead)  # only the proxy has egress: a direct connection proves nothing
    monkeypatch.setenv("MODAL_DISABLE_API_PROXY", "1")  # Modal goes direct, and so does the check
    with pytest.raises(BackendUnavailable):
        preflight(dead)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is: nothing listens there


def test_fake_token_and_unreachable_server_fail_in_seconds_leaving_the_namespace() -> None:
    started = time.monotonic()
    out = run_python("""
        from modal_magic import run_cell, CellOptions
        from modal_magic.errors import BackendUnavailable
        ns = {"x": 1}
        try:
            run_cell("x = 2", ns, CellOptions(backend="modal"))
        except BackendUnavailable as exc:
            print("ERROR:", exc)
        print("x is", ns["x"])
    """, env={"MODAL_TOKEN_ID": "ak-fake", "MODAL_TOKEN_SECRET": "as-fake",
              "MODAL_SERVER_URL": f"http://127.0.0.1:{_closed_port()}"})
    elapsed = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    assert "ERROR: cannot reach Modal at 127.0.0.1:" in out.stdout and "--backend local" in out.stdout
    assert "x is 1" in out.stdout
    assert elapsed < 20  # (interpreter start and imports included; Modal's own client takes ~1 minute)


live = pytest.mark.skipif(modal_credentials() is None,
                          reason="no Modal credentials (MODAL_TOKEN_ID/MODAL_TOKEN_SECRET or ~/.modal.toml)")


@pytest.mark.modal
@live
def test_live_gpu_cell_returns_cpu_tensors_and_reuses_the_container(shell) -> None:
    from .conftest import run

    assert run(shell, "import torch\nx = torch.ones(256, 256)").success
    assert run(shell, "%%modal_gpu --backend modal --gpu T4\nimport os, torch\non_gpu = torch.cuda.is_available()\n"
                      "y = (x.cuda() @ x.cuda()).relu()\nfirst = os.getpid()").success
    assert shell.user_ns["on_gpu"] and shell.user_ns["y"].device.type == "cpu"
    assert run(shell, "%%modal_gpu --backend modal --gpu T4\nimport os\nsecond = os.getpid()").success
    assert shell.user_ns["first"] == shell.user_ns["second"]  # the warm container served both cells


@pytest.mark.modal
@live
def test_live_timeout(shell) -> None:
    from modal_magic.errors import CellTimeout

    from .conftest import run

    result = run(shell, "%%modal_gpu --backend modal --timeout 5\nimport time\ntime.sleep(60)")
    assert isinstance(result.error_in_exec, CellTimeout)


@pytest.mark.modal
@live
def test_live_cuda_tensor_round_trip(shell) -> None:
    from .conftest import run

    assert run(shell, "import torch\nw = torch.randn(512, 512)").success
    result = run(shell, "%%modal_gpu --backend modal --gpu T4\nimport torch\nw_gpu = w.cuda()\n"
                        "w.mul_(2)\nsquare = w_gpu @ w_gpu\nsquare.device.type")
    assert result.success and result.result == "cuda"   # it really ran on a GPU
    square = shell.user_ns["square"]
    assert square.device.type == "cpu"                   # and came back usable on this machine
    torch = shell.user_ns["torch"]
    assert torch.allclose(square, (shell.user_ns["w"] / 2) @ (shell.user_ns["w"] / 2), atol=1e-2)


@pytest.mark.modal
@live
def test_live_interrupt_of_a_printing_cell_keeps_the_container_warm(shell) -> None:
    import signal
    import threading

    from .conftest import run

    assert run(shell, "%%modal_gpu --backend modal\nimport os\nfirst = os.getpid()").success
    threading.Timer(10.0, os.kill, (os.getpid(), signal.SIGINT)).start()  # the kernel's stop button
    result = run(shell, "%%modal_gpu --backend modal\nimport time\nfor i in range(1200):\n"
                        "    print('step', i, flush=True)\n    time.sleep(0.05)")
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    started = time.monotonic()
    assert run(shell, "%%modal_gpu --backend modal\nimport os\nsecond = os.getpid()").success
    assert shell.user_ns["first"] == shell.user_ns["second"]  # the same worker in the same container
    assert time.monotonic() - started < 15                     # warm: no new container (modal-client#4125)


@pytest.mark.modal
@live
def test_live_pip_package_whose_import_name_differs(shell) -> None:
    from .conftest import run

    result = run(shell, "%%modal_gpu --backend modal --gpu none --pip beautifulsoup4==4.12.3\n"
                        "import bs4\nversion = bs4.__version__")
    assert result.success, result.error_in_exec
    assert shell.user_ns["version"] == "4.12.3"


@pytest.mark.modal
@live
def test_live_one_gib_input_and_back(shell, capsys) -> None:
    from .conftest import run

    assert run(shell, "import torch\nbig = torch.ones(256 * 2**20)").success  # 1 GiB
    started = time.monotonic()
    assert run(shell, "%%modal_gpu --backend modal\nbig.mul_(2)\ntotal = float(big.sum())").success
    elapsed = time.monotonic() - started
    assert shell.user_ns["total"] == 2.0 * 256 * 2**20 and float(shell.user_ns["big"][0]) == 2.0
    with capsys.disabled():
        print(f"\n1 GiB out and back through Modal: {elapsed:.1f} s")
