"""The notebook's account of its Modal pools (``backends/modal/ledger.py``), on a clock set by hand."""

from __future__ import annotations

import pytest

from modal_magic.backends.modal.cost import Machine, Prices
from modal_magic.backends.modal.ledger import Ledger

H100 = Prices.load().per_second(Machine("H100"))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_cell_bills_its_seconds_and_then_its_idle_window_at_most() -> None:
    clock = Clock()
    ledger = Ledger(clock)
    call = ledger.begin("h100", "single-cell", Machine("H100"), window=300)
    clock.now += 10
    seconds, cost, pool = ledger.end(call, ["NVIDIA H100 80GB HBM3"])
    assert seconds == 10 and cost == pytest.approx(10 * H100)
    assert pool.gpu_words() == "H100 (NVIDIA H100 80GB HBM3)"
    clock.now += 100                                  # idle, within the window: billed so far
    assert ledger.total() == pytest.approx(110 * H100) and pool.up(clock.now)
    clock.now += 10_000                               # long past it: scaled down after 300 s
    assert ledger.total() == pytest.approx(310 * H100) and not pool.up(clock.now)


def test_the_next_cell_settles_the_idle_before_it_and_a_scaled_down_pool_starts_afresh() -> None:
    clock = Clock()
    ledger = Ledger(clock)
    ledger.end(ledger.begin("h100", "single-cell", Machine("H100"), window=300), None)
    clock.now += 50
    second = ledger.begin("h100", "single-cell", Machine("H100"), window=300)  # 50 s idle, then busy again
    assert ledger.total() == pytest.approx(50 * H100)
    clock.now += 5
    ledger.end(second, None)
    clock.now += 1000
    ledger.begin("h100", "single-cell", Machine("H100"), window=300)            # it had scaled down
    assert ledger.pools["h100"].containers == 1
    assert ledger.total() == pytest.approx((50 + 5 + 300) * H100)


def test_a_map_pool_is_reckoned_a_container_per_call_in_flight_each_idle_for_its_window() -> None:
    clock = Clock()
    ledger = Ledger(clock)
    calls = [ledger.begin("map", "--map", Machine("H100"), window=20) for _ in range(8)]
    clock.now += 3
    for call in calls:
        ledger.end(call, None)
    assert ledger.pools["map"].containers == 8
    assert ledger.per_minute_idle(ledger.pools["map"]) == pytest.approx(8 * 60 * H100)
    clock.now += 600
    assert ledger.total() == pytest.approx((8 * 3 + 8 * 20) * H100)


def test_stopping_the_app_ends_the_idle_billing_there() -> None:
    clock = Clock()
    ledger = Ledger(clock)
    ledger.end(ledger.begin("h100", "single-cell", Machine("H100"), window=300), None)
    clock.now += 30
    ledger.stopped()
    clock.now += 1000
    assert ledger.total() == pytest.approx(30 * H100) and not ledger.pools["h100"].up(clock.now)


def test_a_gpu_without_a_price_is_left_out_and_said_to_be() -> None:
    ledger = Ledger(Clock())
    _, cost, _ = ledger.end(ledger.begin("x", "single-cell", Machine("X9000"), window=300), None)
    assert cost is None and ledger.unpriced and ledger.total() == 0
