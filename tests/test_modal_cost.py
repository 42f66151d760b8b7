"""What a Modal cell cost and what is still up, against the stand-in, which meters what Modal would bill.

The real magic, Modal's real SDK and container entrypoint; the stand-in (``fake_modal/billing.py``) records
each container's seconds alive, busy and idle and stops it after its function's scale-down window, which
this module's server runs twenty times faster (``FAKE_MODAL_SCALEDOWN_SCALE``), so a 300 s window ends in
15 s and a ``--map`` pool's 20 s in 1 s. Its containers name their GPU through an ``nvidia-smi`` of the
stand-in's, as Modal's have the driver's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from modal_magic.backends.modal.cost import Machine, Prices
from modal_magic.backends.modal.plan import IDLE, MAP_IDLE

from .conftest import run
from .fake_modal.testing import Server, serving

SCALE = 0.05


@pytest.fixture(scope="module")
def modal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This module's stand-in, its scale-down windows twenty times shorter (it replaces the plugin's)."""
    from modal_magic.notebook.extension import current

    with serving(tmp_path_factory.mktemp("fake_modal"), before_stop=lambda: current().backends.close(),
                 FAKE_MODAL_SCALEDOWN_SCALE=str(SCALE)) as server:
        yield server


def _new_rows(server: Server, before: set[str]) -> list[dict]:
    return [row for row in server.report()["billing"] if row["id"] not in before]


def _ids(server: Server) -> set[str]:
    return {row["id"] for row in server.report()["billing"]}


def test_a_cells_summary_names_the_gpu_its_container_reported_and_what_it_cost(fresh, shell, capsys) -> None:
    before = _ids(fresh)
    assert run(shell, "%%modal_gpu --backend modal --gpu T4\na = 1").success
    [first] = _new_rows(fresh, before)
    cold = capsys.readouterr().out
    assert "GPU: T4 (Tesla T4)" in cold, cold            # what the container's nvidia-smi named
    assert "peak GPU memory" not in cold                 # no CUDA in use: nothing said, rather than 0
    assert run(shell, "%%modal_gpu --backend modal --gpu T4\nimport time\ntime.sleep(0.5)\nb = 2").success
    warm = capsys.readouterr().out
    cost, seconds = re.search(r"cost: ~\$(\d+\.\d+) for (\d+\.\d) s of its container", warm).groups()
    assert "estimate at Modal's list prices (https://modal.com/pricing, read " in warm
    assert re.search(r"session so far ~\$\d", warm)
    assert f"its container waits {IDLE} s idle, billed, for the next cell (%modal_status)" in warm
    # The figure is the T4's rate (Modal's default reservation beside it) for the seconds shown...
    assert float(cost) == pytest.approx(Prices.load().cost(Machine("T4"), float(seconds)), rel=0.02, abs=1e-4)
    # ... and those seconds are no fewer than the stand-in's container was busy with this cell (its busy time
    # since the first cell), and no more than it has been alive (one container served both cells: the warm one).
    rows = _new_rows(fresh, before)
    assert len(rows) == 1, rows
    [row] = rows
    assert row["gpu"] == ["T4"] and row["alive"] and row["id"] == first["id"]
    busy = row["busy_seconds"] - first["busy_seconds"]
    assert busy - 0.1 <= float(seconds) + 0.05 <= row["seconds"] + 0.1, (busy, seconds, row)


def test_modal_status_lists_the_warm_container_with_its_idle_time(fresh, shell, capsys) -> None:
    assert run(shell, "%%modal_gpu --backend modal --gpu L4 --quiet\na = 1").success
    capsys.readouterr()
    assert run(shell, "%modal_status").success
    status = capsys.readouterr().out
    assert re.search(rf"single-cell pool, L4 \(NVIDIA L4\): 1 container, idle \d+ s, scales down in about \d+ s "
                     rf"\(window {IDLE} s\); ~\$\d+\.\d+/min while idle", status), status
    assert "by this notebook's own bookkeeping" in status and "%modal_stop" in status
    assert fresh.report()["billing"][-1]["scaledown_window"] == IDLE  # what the stand-in was asked for

    assert run(shell, "%modal_stop").success
    capsys.readouterr()
    assert run(shell, "%modal_status").success
    assert "nothing this notebook started on Modal is up" in capsys.readouterr().out


def test_an_idle_setting_applies_to_the_next_container_started(fresh, shell, capsys) -> None:
    before = _ids(fresh)
    assert run(shell, "%%modal_gpu --backend modal --gpu T4 --quiet\na = 1").success
    assert run(shell, "%modal_config idle=120").success
    assert "idle = 120.0" in capsys.readouterr().out
    assert run(shell, "%%modal_gpu --backend modal --gpu T4 --quiet\na = 2").success  # the warm one keeps its own
    assert [row["scaledown_window"] for row in _new_rows(fresh, before)] == [IDLE]
    assert run(shell, "%modal_stop").success
    assert run(shell, "%%modal_gpu --backend modal --gpu T4 --quiet\na = 3").success
    assert [row["scaledown_window"] for row in _new_rows(fresh, before)] == [IDLE, 120]
    assert run(shell, f"%modal_config idle={IDLE}").success


def test_a_bad_idle_setting_is_refused_with_modals_range(shell, capsys) -> None:
    result = run(shell, "%modal_config idle=7200")
    assert not result.success and "2 to 3600" in str(result.error_in_exec)


def test_a_map_pool_scales_down_within_its_window_of_its_last_element(fresh, shell, capsys) -> None:
    before = _ids(fresh)
    assert run(shell, "%%modal_gpu --backend modal --gpu T4 --map x=range(8)\ny = x * 2").success
    assert shell.user_ns["y"] == [0, 2, 4, 6, 8, 10, 12, 14]
    summary = capsys.readouterr().out
    assert re.search(r"cost: ~\$\d+\.\d+ for 8 calls, \d+\.\d container-seconds", summary), summary
    assert f"its containers stop after {MAP_IDLE} s idle" in summary
    pool = _new_rows(fresh, before)
    assert pool and {row["scaledown_window"] for row in pool} == {MAP_IDLE}
    # Every container of the pool is stopped within its window (1 s here), not the class's 300 s (15 s).
    report = fresh.wait_for(lambda r: not any(row["alive"] for row in r["billing"] if row["id"] not in before),
                            timeout=IDLE * SCALE * 0.6)
    assert {row["stopped"] for row in report["billing"] if row["id"] not in before} == {
        f"scaled down after {MAP_IDLE} s idle"}


def test_modal_resident_starts_no_container(fresh, shell, capsys) -> None:
    assert run(shell, "%modal_config idle=2").success
    try:
        assert run(shell, "import torch\nt = torch.ones(3)").success
        assert run(shell, "%%modal_gpu --backend modal --gpu T4 --quiet\nu = t * 2").success
        time.sleep(2.0)  # past its window, by the notebook's own clock: the container has scaled down
        containers = fresh.report()["containers"]
        capsys.readouterr()
        assert run(shell, "%modal_resident").success
        assert "the modal backend was not asked: nothing of it that keeps values is known to be up" in \
            capsys.readouterr().out
        assert fresh.report()["containers"] == containers  # nothing started to answer
    finally:
        run(shell, f"%modal_config idle={IDLE}")


def test_with_a_fallback_list_the_summary_names_the_gpu_the_container_got(fresh, shell, capsys) -> None:
    assert run(shell, "%%modal_gpu --backend modal --gpu h100,a100-80gb:2\nv = 1").success
    assert "GPU: H100 (NVIDIA H100 80GB HBM3)" in capsys.readouterr().out  # the stand-in gives the first choice


def test_a_price_file_of_the_users_prices_the_next_cell(fresh, shell, capsys, tmp_path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text('{"gpu_per_second": {"T4": 1.0}}')
    assert run(shell, "%%modal_gpu --backend modal --gpu T4 --quiet\na = 1").success
    assert run(shell, f"%modal_config prices={prices}").success
    try:
        capsys.readouterr()
        assert run(shell, "%%modal_gpu --backend modal --gpu T4\nimport time\ntime.sleep(0.3)\na = 2").success
        cost, seconds = re.search(r"cost: ~\$(\d+\.\d+) for (\d+\.\d) s", capsys.readouterr().out).groups()
        assert float(cost) == pytest.approx(float(seconds), abs=0.06)  # $1 a second, as the file says
    finally:
        run(shell, "%modal_config prices=")
    bad = tmp_path / "bad.json"
    bad.write_text('{"gpu_per_second": {"T4": "free"}}')
    result = run(shell, f"%modal_config prices={bad}")
    assert not result.success and "must be a number of dollars per second" in str(result.error_in_exec)
