"""%%modal_gpu --map through a real InteractiveShell and the local backend's pool of worker processes."""

from __future__ import annotations

import _thread
import os
import sys
import threading

import pytest

from modal_magic.errors import CellTimeout
from modal_magic.notebook.fanout import MapFailed

from .conftest import run

MAP = "%%modal_gpu --backend local --quiet "


def test_results_come_back_in_element_order_as_lists(shell) -> None:
    run(shell, "k = 10")
    # The first elements sleep longest, so they finish last: the lists still follow the elements.
    result = run(shell, MAP + "--map x=range(4)\nimport time\ntime.sleep(0.4 - 0.1 * x)\ny = x * k\nz = str(x)\ny + 1")
    assert result.success, result.error_in_exec
    assert shell.user_ns["y"] == [0, 10, 20, 30]
    assert shell.user_ns["z"] == ["0", "1", "2", "3"]
    assert result.result == [1, 11, 21, 31]
    assert shell.user_ns["k"] == 10 and "x" not in shell.user_ns  # the mapped name is bound there only


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: the pool has one worker")
def test_elements_run_on_several_workers(shell, tmp_path) -> None:
    # Each element waits (30 s at most) until as many elements as there are workers have started: on too few
    # workers the first would wait alone, and the pids would show it. A sleep instead let one warm worker take
    # every element while a busy machine was still starting the second.
    shell.user_ns.update(started=str(tmp_path), workers=min(4, os.cpu_count() or 1))
    cell = ("--map x=range(4)\nimport os, time\nopen(os.path.join(started, str(x)), 'w').close()\n"
            "deadline = time.monotonic() + 30\n"
            "while len(os.listdir(started)) < workers and time.monotonic() < deadline:\n    time.sleep(0.01)\n"
            "pid = os.getpid()")
    assert run(shell, MAP + cell).success
    pids = set(shell.user_ns["pid"])
    assert len(pids) == shell.user_ns["workers"] and os.getpid() not in pids


def test_each_elements_output_has_its_prefix(shell, capsys) -> None:
    assert run(shell, MAP + "--map w=['a', 'b']\nprint('hello', w)\nprint('two\\nlines', end='')\nprint()").success
    lines = capsys.readouterr().out.splitlines()
    for index, word in enumerate("ab"):
        # Elements run at once, so their whole lines may interleave; each element's own lines keep their order.
        own = [line for line in lines if line.startswith(f"[{index}] ")]
        assert own == [f"[{index}] hello {word}", f"[{index}] two", f"[{index}] lines"]
    assert all(line.startswith(("[0] ", "[1] ")) for line in lines if line), lines


def test_elements_printing_at_once_never_break_into_each_others_lines(shell, capsys) -> None:
    """Element 0 leaves a line unfinished while element 1 prints a whole one: before, the output read
    '[0] start[1] other' (found as a flaky failure of the prefix test)."""
    cell = MAP + ("--map w=[0, 1]\nimport time\nif w == 0:\n    print('start', end='', flush=True)\n"
                  "    time.sleep(1.0)\n    print(' end')\nelse:\n    time.sleep(0.3)\n    print('other')")
    assert run(shell, cell).success
    out = capsys.readouterr().out
    assert "[0] start end\n" in out and "[1] other\n" in out


def test_a_failing_element_among_successes(shell) -> None:
    source = MAP + "--map x=range(4)\ny = x * 2\nif x == 2:\n    raise ValueError(f'bad {x}')\nz = x"
    result = run(shell, source)
    error = result.error_in_exec
    assert isinstance(error, MapFailed)
    if sys.version_info >= (3, 11):
        assert isinstance(error, ExceptionGroup)  # noqa: F821
    assert error.indices == (2,)
    assert [type(e) for e in error.exceptions] == [ValueError] and str(error.exceptions[0]) == "bad 2"
    assert "1 of 4 elements failed" in str(error)
    # The others finished and came in, before the error was raised; the failed slot holds None.
    assert shell.user_ns["y"] == [0, 2, None, 6]
    assert shell.user_ns["z"] == [0, 1, None, 3]
    assert any("[2] x=2: ValueError: bad 2 — line 4: raise ValueError(f'bad {x}')" in line for line in error.lines)


def test_fail_fast_cancels_the_rest(shell) -> None:
    source = MAP + "--max-parallel 1 --map-fail-fast --map x=range(5)\nif x == 1:\n    raise KeyError(x)\ny = x"
    error = run(shell, source).error_in_exec
    assert isinstance(error, MapFailed) and error.indices == (1,)
    assert shell.user_ns["y"] == [0, None, None, None, None]  # 2, 3, 4 never ran
    assert "  cancelled (--map-fail-fast): [2], [3], [4]" in error.lines


def test_without_fail_fast_the_rest_finish(shell) -> None:
    error = run(shell, MAP + "--max-parallel 1 --map x=range(4)\nif x == 1:\n    raise KeyError(x)\n"
                "y = x").error_in_exec
    assert isinstance(error, MapFailed) and error.indices == (1,)
    assert shell.user_ns["y"] == [0, None, 2, 3]


def test_timeout_is_per_element(shell) -> None:
    error = run(shell, MAP + "--timeout 1 --map s=[0,30,0]\nimport time\ntime.sleep(s)\ndone = s").error_in_exec
    assert isinstance(error, MapFailed) and error.indices == (1,)
    assert isinstance(error.exceptions[0], CellTimeout)
    assert shell.user_ns["done"] == [0, None, 0]


def test_interrupt_stops_every_element_and_changes_nothing(shell) -> None:
    run(shell, "y = 'before'")
    # Interrupt the notebook's thread (as a kernel interrupt does) once the elements are running.
    timer = threading.Timer(3.0, _thread.interrupt_main)
    timer.start()
    try:
        result = run(shell, MAP + "--map x=range(4)\nimport time\ntime.sleep(60)\ny = x")
    finally:
        timer.cancel()
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert shell.user_ns["y"] == "before"
    # The pool's workers unwound and stay warm for the next cell.
    assert run(shell, MAP + "--map x=range(2)\ny = x").success and shell.user_ns["y"] == [0, 1]


def test_map_name_takes_a_generator_from_the_notebook(shell) -> None:
    run(shell, "g = (i * i for i in range(4))")
    assert run(shell, MAP + "--map g\nsquare_plus_one = g + 1").success
    assert shell.user_ns["square_plus_one"] == [1, 2, 5, 10]


def test_an_empty_iterable_is_a_clear_message(shell, capsys) -> None:
    result = run(shell, MAP + "--map x=[]\ny = x")
    assert not result.success and "y" not in shell.user_ns
    assert "--map x=[]: the iterable is empty, so there is nothing to run" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--map w=['a', 'b c']", "--map \"w=['a', 'b c']\"", "--map 'w=[\"a\", \"b c\"]'"])
def test_an_expression_may_hold_spaces_and_quotes(shell, flag) -> None:
    assert run(shell, f"{MAP}{flag} --max-parallel 1\nn = len(w)").success
    assert shell.user_ns["n"] == [1, 3]


@pytest.mark.parametrize("flags, message", [
    ("--map 1x=[1]", "'1x' is not a variable name"),
    ("--map x=", "has no expression after '='"),
    ("--map x=undefined_thing", "evaluating 'undefined_thing' in the notebook raised NameError"),
    ("--map x=5", "cannot iterate over the int it gives"),
    ("--map nowhere", "'nowhere' is not defined in the notebook"),
    ("--max-parallel 2", "--max-parallel and --map-fail-fast go with --map"),
    ("--map x=[1] --max-parallel 0", "--max-parallel must be at least 1"),
    ("--map g=[(i for i in range(2))]", "element [0] cannot be sent: TypeError"),
])
def test_bad_map_flags_say_what_is_expected(shell, capsys, flags, message) -> None:
    result = run(shell, f"{MAP}{flags}\ny = 1")
    assert not result.success and "y" not in shell.user_ns
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_one_element_is_the_plain_result_as_a_one_item_list(shell) -> None:
    run(shell, "import torch\nt = torch.arange(4.0)")
    plain = run(shell, "%%modal_gpu --backend local --quiet\nx = 3\ny = t * x\nlabel = f'x={x}'\ny.sum()")
    expected = shell.user_ns["y"], shell.user_ns["label"], plain.result
    del shell.user_ns["y"], shell.user_ns["label"]
    mapped = run(shell, MAP + "--map x=[3]\ny = t * x\nlabel = f'x={x}'\ny.sum()")
    assert mapped.success
    (y,), (label,), (value,) = shell.user_ns["y"], shell.user_ns["label"], mapped.result
    assert y.equal(expected[0]) and label == expected[1] and value.equal(expected[2])


def test_in_place_changes_are_dropped_and_named(shell, capsys) -> None:
    run(shell, "history = [0]\nsettings = {'lr': 1}\nuntouched = [1, 2]")
    source = MAP + "--map x=range(2)\nhistory.append(x)\nsettings['lr'] = x\ntotal = sum(untouched) + x"
    assert run(shell, source).success
    assert shell.user_ns["history"] == [0] and shell.user_ns["settings"] == {"lr": 1}
    assert shell.user_ns["total"] == [3, 4]
    err = capsys.readouterr().err
    assert "in-place changes to history, settings cannot be merged and were dropped" in err
    assert "untouched" not in err


def test_inputs_are_sent_once_beside_each_element(shell, capsys) -> None:
    import numpy

    shell.user_ns["big"] = numpy.ones(1 << 20)
    run(shell, "%%modal_gpu --backend local --map x=range(3)\ns = float(big.sum()) + x")
    assert shell.user_ns["s"] == [float(1 << 20) + x for x in range(3)]
    assert "sent: big (8.0 MiB)" in capsys.readouterr().out  # packed once: one 8 MiB payload, not three


def test_every_copy_starts_from_the_notebooks_random_state(shell) -> None:
    run(shell, "import random\nrandom.seed(5)\nexpected = random.random()\nrandom.seed(5)")
    assert run(shell, MAP + "--map i=range(3)\nr = random.random()").success
    assert shell.user_ns["r"] == [shell.user_ns["expected"]] * 3
    run(shell, "after = random.random()")  # what the copies drew is theirs: the notebook's state did not move
    assert shell.user_ns["after"] == shell.user_ns["expected"]
