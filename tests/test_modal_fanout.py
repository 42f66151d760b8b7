"""--map against the strict stand-in for Modal: the real magic, Modal's real SDK and container entrypoint.

The elements are concurrent ``remote_gen`` calls to the fan-out's own ``with_options`` variant (its own
containers, as many as Modal gives); the stand-in starts a container for each waiting input up to the
variant's ``max_containers`` and its own ``FAKE_MODAL_MAX_CONTAINERS`` (4 here, on a small machine).
"""

from __future__ import annotations

import _thread
import threading
import time

from modal_magic.notebook.fanout import MapFailed

from .conftest import run


def test_elements_run_on_several_containers_and_come_back_in_order(modal_server, shell) -> None:
    run(shell, "import torch\nbase = torch.arange(3.0)")
    source = ("%%modal_gpu --backend modal --gpu T4 --quiet --map x=range(4)\n"
              "import os, time\ntime.sleep(1.5)\ncontainer = os.getppid()\n"
              "if x == 2:\n    raise ValueError('two')\ny = base * x")
    error = run(shell, source).error_in_exec
    assert isinstance(error, MapFailed) and error.indices == (2,), error
    assert [None if y is None else y.tolist() for y in shell.user_ns["y"]] == [
        [0.0, 0.0, 0.0], [0.0, 1.0, 2.0], None, [0.0, 3.0, 6.0]]
    # The container's worker is a child of Modal's container process: several parents, several containers.
    assert len({c for c in shell.user_ns["container"] if c is not None}) > 1
    report = modal_server.report()
    assert report["errors"] == [] and report["unimplemented"] == {}

    # A plain cell afterwards has its own single warm container, untouched by the fan-out's pool.
    containers = report["containers"]
    assert run(shell, "%%modal_gpu --backend modal --gpu T4 --quiet\na = 1").success
    assert run(shell, "%%modal_gpu --backend modal --gpu T4 --quiet\na = 2").success
    assert modal_server.report()["containers"] == containers + 1


def test_interrupt_stops_every_element_in_band_and_keeps_the_containers(modal_server, shell) -> None:
    run(shell, "done = 'before'")
    before = modal_server.report()
    sent = before["rpcs"].get("FunctionCallPutDataOut", 0)

    def interrupt_once_all_run() -> None:  # as the kernel's stop button, once each element's cell has started
        modal_server.wait_for(lambda r: r["rpcs"].get("FunctionCallPutDataOut", 0) >= sent + 3 * 2, timeout=60)
        time.sleep(0.5)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_once_all_run, daemon=True).start()
    result = run(shell, "%%modal_gpu --backend modal --gpu T4 --quiet --map x=range(3)\n"
                        "import time\ntime.sleep(120)\ndone = x")
    assert isinstance(result.error_in_exec, KeyboardInterrupt), result.error_in_exec
    assert shell.user_ns["done"] == "before"
    after = modal_server.report()
    assert after["container_exits"] == before["container_exits"]  # stopped in band: no container was killed
    assert after["rpcs"].get("FunctionCallCancel", 0) == before["rpcs"].get("FunctionCallCancel", 0)
    assert run(shell, "%%modal_gpu --backend modal --gpu T4 --quiet --map x=range(3)\ndone = x").success
    assert shell.user_ns["done"] == [0, 1, 2]
