"""The replay harness itself: it sees the differences it claims to see, and no others.

In-process and fast: two namespaces stand for the two kernels. (The whole-corpus control,
plain against plain in two processes, is ``python -m tests.replay.replay --control``.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from . import corpus
from .replay import CellResult, Report, compare_notebook, compare_output, compare_state, known_lines, read_known
from .snapshot import mask, snapshot


def picture(ns: dict) -> dict:
    return json.loads(json.dumps(snapshot(ns, set())))


def differences(local: dict, remote: dict) -> list[str]:
    return compare_state(picture(local), picture(remote))


def test_equal_namespaces_built_twice_match() -> None:
    def build() -> dict:
        torch.manual_seed(0)
        t = torch.randn(3, requires_grad=True)
        t.sum().backward()
        lst = [1, "a", {"k": t}]
        model = torch.nn.Linear(2, 2)
        return {"t": t, "lst": lst, "alias": lst, "n": np.arange(4.0), "model": model,
                "opt": torch.optim.SGD(model.parameters(), lr=0.1), "s": {"b", "a"}, "f": build}
    assert differences(build(), build()) == []


def test_a_broken_alias_is_seen() -> None:
    shared = [1, 2]
    reasons = differences({"a": shared, "b": shared}, {"a": [1, 2], "b": [1, 2]})
    assert reasons == ["b: the same object as a locally, its own builtins.list remotely"]


def test_memory_sharing_is_seen() -> None:
    t = torch.ones(3)
    reasons = differences({"t": t, "n": t.numpy()}, {"t": torch.ones(3), "n": np.ones(3, dtype=np.float32)})
    assert reasons == ["t: shares memory with n locally, owns its memory remotely"]


def test_autograd_state_is_seen() -> None:
    leaf = torch.ones(2, requires_grad=True)
    out = (leaf * 2).sum()
    out.backward()
    reasons = differences({"leaf": leaf, "out": out}, {"leaf": torch.ones(2, requires_grad=True), "out": out.detach()})
    assert "leaf.grad: set locally, None remotely" in reasons
    assert "out.requires_grad: True locally, False remotely" in reasons
    assert "out.grad_fn: 'SumBackward0' locally, None remotely" in reasons


def test_values_compare_with_a_tolerance() -> None:
    base = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert differences({"x": base}, {"x": base + 1e-12}) == []
    assert differences({"x": base}, {"x": base + 1e-3}) == ["x: values differ (max abs diff 0.001)"]
    assert differences({"x": base}, {"x": base.float()}) == [
        "x.dtype: 'torch.float64' locally, 'torch.float32' remotely"]


def test_a_missing_name_and_a_function_reading_other_globals() -> None:
    ns: dict = {}
    exec("def f():\n    return 1", ns)
    ns["__name__"] = "__main__"
    f = ns["f"]
    f.__module__ = "__main__"
    remote_ns = {"f": type(f)(f.__code__, {}, "f")}
    remote_ns["f"].__module__ = "__main__"
    local = snapshot({"f": f, "g": 1}, set())
    local["names"]["f"]["globals"] = "the notebook's"  # as the side sees it: f's globals are its namespace
    reasons = compare_state(json.loads(json.dumps(local)), picture(remote_ns))
    assert "g: defined locally, missing remotely" in reasons
    assert "f.globals: \"the notebook's\" locally, 'a private dict' remotely" in reasons


def test_outputs_compare_stdout_exceptions_and_displays() -> None:
    cell = {"stdout": "a\nb\n", "displays": [], "error": None}
    assert compare_output(cell, dict(cell)) == []
    assert compare_output(cell, {**cell, "stdout": "a\nc\n"}) == ["stdout line 2: 'b' locally, 'c' remotely"]
    raised = {**cell, "error": {"type": "KeyError", "message": "'b'"}}
    assert compare_output(cell, raised) == ["raised nothing locally, KeyError: 'b' remotely"]
    # A SyntaxError's location is the kernel's file name and the magic's extra line: not compared.
    local = {**cell, "error": {"type": "SyntaxError", "message": "invalid syntax (<ipython-input-3-ab>, line 1)"}}
    remote = {**cell, "error": {"type": "SyntaxError", "message": "invalid syntax (<unknown>, line 2)"}}
    assert compare_output(local, remote) == []


def test_masking_hides_addresses_and_timings_only() -> None:
    assert mask("<Net object at 0x7f3a2b1c>") == "<Net object at 0x?>"
    assert mask("<Figure size 640x480 with 1 Axes>") == "<Figure size 640x480 with 1 Axes>"
    assert mask("CPU times: user 3 ms, sys: 1 ms\nWall time: 4 ms\nx") == "CPU times: (masked)\nWall time: (masked)\nx"


def test_carried_over_cells_are_told_apart(tmp_path: Path) -> None:
    path = tmp_path / "nb.py"
    path.write_text("# %%\na = 1\n# %% [local]\nb = 2\n# %%\nc = 3\n")
    nb = corpus.parse(path)
    assert [c.local for c in nb.cells] == [False, True, False]
    same = {"stdout": "", "displays": [], "error": None, "seconds": 0}

    def side(values: list[dict]) -> list[dict]:
        return [{**same, "snapshot": {"names": v, "shared": {}, "state": {}}} for v in values]

    one, two = {"t": "int", "v": "1"}, {"t": "int", "v": "2"}
    plain = side([{"a": one}, {"a": one}, {"a": one, "c": one}])
    remote = side([{"a": two}, {"a": two}, {"a": two, "c": two}])
    results = compare_notebook(nb, plain, remote)
    assert [r.carried_from for r in results] == [None, "nb:01", None]
    assert results[2].reasons == ["a.v: '1' locally, '2' remotely", "c.v: '1' locally, '2' remotely"]


def test_known_list_format(tmp_path: Path) -> None:
    path = tmp_path / "known.txt"
    path.write_text("# comment\n\nnb:01  a reason\nnb:02  carried over from nb:01\n")
    known = read_known(path)
    assert known == {"nb:01": "a reason", "nb:02": "carried over from nb:01"}
    report = Report([CellResult("nb:01", False, ["x"]), CellResult("nb:02", False, ["x"], carried_from="nb:01"),
                     CellResult("nb:03", False, ["y: values differ"])], 0.0)
    assert known_lines(report, known) == ["nb:01  a reason", "nb:02  carried over from nb:01",
                                          "nb:03  NEW: y: values differ"]
    # Sources changed (nb:01 fixed, nb:02 now carries over from nb:00): the line is regenerated with nb:00's cause.
    report = Report([CellResult("nb:00", False, ["z"]), CellResult("nb:02", False, ["z"], carried_from="nb:00")], 0.0)
    assert known_lines(report, {"nb:00": "NEW: defect 9: z", "nb:02": "carried over from nb:01"}) == [
        "nb:00  NEW: defect 9: z", "nb:02  carried over from nb:00 (NEW)"]
    path.write_text("nb:01  a\nnb:01  b\n")
    with pytest.raises(ValueError, match="twice"):
        read_known(path)
    path.write_text("nb:01\n")
    with pytest.raises(ValueError, match="no reason"):
        read_known(path)
