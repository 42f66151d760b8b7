"""The price table and the estimates made from it (``backends/modal/cost.py``): no Modal, no stand-in."""

from __future__ import annotations

import json

import pytest

from modal_magic.backends.modal.cost import Machine, Prices, device_type, dollars
from modal_magic.errors import UsageProblem


def test_the_package_table_prices_every_gpu_type_modal_sells_and_says_where_it_came_from():
    prices = Prices.load()
    assert prices.source == "https://modal.com/pricing" and prices.read
    for gpu in ("H200", "H100", "A100-80GB", "A100-40GB", "L40S", "A10G", "L4", "T4", "B200", "A100", "H100!"):
        assert prices.type_of(gpu) is not None, gpu
    assert prices.per_second(Machine("H100")) > prices.per_second(Machine("L4")) > prices.per_second(Machine())


def test_an_estimate_is_gpus_plus_cores_plus_memory_for_the_seconds():
    prices = Prices.load()
    machine = Machine("A100-80GB", count=2, cpu=4.0, memory_mib=16 * 1024)
    expected = 2 * prices.gpu_per_second["A100-80GB"] + 4 * prices.cpu_per_core_second \
        + 16 * prices.memory_per_gib_second
    assert prices.cost(machine, 10.0) == pytest.approx(10 * expected)
    # No --cpu/--memory: Modal's default reservation.
    bare = Machine("T4")
    assert prices.per_second(bare) == pytest.approx(prices.gpu_per_second["T4"] + prices.default_cpu_cores
                                                    * prices.cpu_per_core_second + prices.default_memory_mib
                                                    / 1024 * prices.memory_per_gib_second)


def test_a_gpu_type_without_a_price_gives_no_figure_rather_than_a_wrong_one():
    prices = Prices.load()
    assert prices.cost(Machine("X9000"), 5.0) is None
    assert "no price" in dollars(None)


def test_a_user_file_overrides_only_what_it_names(tmp_path):
    mine = tmp_path / "prices.json"
    mine.write_text(json.dumps({"gpu_per_second": {"H100": 0.002}, "read": "2027-01-01"}))
    prices = Prices.load(str(mine))
    assert prices.gpu_per_second["H100"] == 0.002 and prices.read == "2027-01-01"
    assert prices.gpu_per_second["L4"] == Prices.load().gpu_per_second["L4"]


@pytest.mark.parametrize("text, says", [
    (None, "cannot read it"), ("{not json", "not JSON"), ('{"h100": 1}', "unknown entries 'h100'"),
    ('{"gpu_per_second": {"H100": "cheap"}}', "must be a number"), ("[1]", "not a JSON object")])
def test_a_bad_price_file_is_one_sentence_naming_what_is_wrong(tmp_path, text, says):
    path = tmp_path / "prices.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(UsageProblem, match=says):
        Prices.load(str(path))


@pytest.mark.parametrize("name, gpu", [
    ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA H200", "H200"), ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
    ("NVIDIA A100-SXM4-40GB", "A100-40GB"), ("NVIDIA L40S", "L40S"), ("NVIDIA A10G", "A10"), ("NVIDIA L4", "L4"),
    ("Tesla T4", "T4"), ("NVIDIA B200", "B200"), ("NVIDIA GeForce RTX 4090", None)])
def test_a_reported_device_name_is_priced_as_modals_type(name, gpu):
    assert device_type(name) == gpu


def test_dollars_keep_small_amounts_readable():
    assert dollars(0.00012345) == "$0.0001"
    assert dollars(0.0421) == "$0.042"
    assert dollars(12.5) == "$12.50"
