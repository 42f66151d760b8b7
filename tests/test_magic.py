"""%%modal_gpu through a real InteractiveShell and a real local worker process."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from modal_magic.errors import WorkerDied
from modal_magic.notebook.extension import current

from .conftest import run


def worker_pid() -> int | None:
    return current().backends.get("local").pid


def test_values_go_in_and_come_back(shell) -> None:
    run(shell, "x = [1, 2, 3]\nk = 10")
    result = run(shell, "%%modal_gpu\ny = [v * k for v in x]\nz = sum(y)")
    assert result.success
    assert shell.user_ns["y"] == [10, 20, 30]
    assert shell.user_ns["z"] == 60


def test_last_expression_is_out_and_underscore(shell) -> None:
    run(shell, "x = 20")
    result = run(shell, "%%modal_gpu\nx + 1")
    assert result.result == 21
    assert shell.user_ns["_"] == 21
    assert shell.user_ns["Out"][result.execution_count] == 21


def test_trailing_semicolon_hides_the_value(shell) -> None:
    result = run(shell, "%%modal_gpu\n41 + 1;")
    assert result.result is None


def test_notebook_function_and_class_are_used_remotely(shell) -> None:
    run(shell, "K = 3\ndef triple(v):\n    return v * K\nclass Box:\n    def __init__(self, v):\n        self.v = v")
    result = run(shell, "%%modal_gpu\nb = Box(triple(5))\nimport os\npid = os.getpid()")
    assert result.success
    box = shell.user_ns["b"]
    assert box.v == 15
    assert isinstance(box, shell.user_ns["Box"])  # the notebook's own class, not a copy
    assert shell.user_ns["pid"] != os.getpid()    # it really ran elsewhere


def test_stdout_stderr_and_shell_commands_run_remotely(shell, capsys) -> None:
    run(shell, "%%modal_gpu\nimport os, sys\nprint('hello from', os.getpid())\nprint('oops', file=sys.stderr)\n"
               "!echo bang-$PPID")
    out, err = capsys.readouterr()
    assert f"hello from {worker_pid()}" in out
    assert f"bang-{worker_pid()}" in out  # `!cmd` was a child of the worker, not of this process
    assert "oops" in err


def test_line_magics_run_remotely(shell, capsys) -> None:
    run(shell, "%%modal_gpu\n%time total = sum(range(1000))")
    assert shell.user_ns["total"] == 499500
    assert "Wall time" in capsys.readouterr().out


def test_exception_keeps_type_message_and_cell_lines(shell, capsys) -> None:
    result = run(shell, "%%modal_gpu\na = 1\nb = [][3]")
    assert isinstance(result.error_in_exec, IndexError)
    assert str(result.error_in_exec) == "list index out of range"
    shown = capsys.readouterr().out
    # line 3 of the cell as the user sees it: "Cell In[n], line 3" (newer IPython), "----> 3 b = [][3]" (8.0)
    assert re.search(r"line 3\b|----> 3 ", shown) and "b = [][3]" in shown
    assert "modal_magic" not in shown and "runner.py" not in shown  # none of our internals
    assert shell.user_ns["a"] == 1                       # assignments before the error arrive


def test_exception_inside_a_notebook_function_shows_its_frame(shell, capsys) -> None:
    run(shell, "def boom(v):\n    raise ValueError(f'bad {v}')")
    result = run(shell, "%%modal_gpu\nboom(7)")
    assert isinstance(result.error_in_exec, ValueError)
    shown = capsys.readouterr().out
    assert "bad 7" in shown and "boom" in shown


def test_undefined_name_is_the_local_name_error(shell) -> None:
    result = run(shell, "%%modal_gpu\nnot_defined_anywhere + 1")
    assert isinstance(result.error_in_exec, NameError)
    assert "name 'not_defined_anywhere' is not defined" in str(result.error_in_exec)


def test_cell_that_references_nothing(shell) -> None:
    result = run(shell, "%%modal_gpu\nanswer = 6 * 7")
    assert result.success and shell.user_ns["answer"] == 42


def test_unreferenced_variables_do_not_leave(shell) -> None:
    run(shell, "secret_thing = 'do not send'\nused = 1")
    result = run(shell, "%%modal_gpu\nseen = sorted(k for k in globals() if not k.startswith('_'))\nused")
    assert "used" in shell.user_ns["seen"]
    assert "secret_thing" not in shell.user_ns["seen"]
    assert result.result == 1


def test_worker_is_reused_across_cells(shell) -> None:
    run(shell, "%%modal_gpu\nimport os\np1 = os.getpid()")
    run(shell, "%%modal_gpu\nimport os\np2 = os.getpid()")
    assert shell.user_ns["p1"] == shell.user_ns["p2"] == worker_pid()


def test_killed_worker_is_replaced(shell) -> None:
    run(shell, "%%modal_gpu\nimport os\nbefore = os.getpid()")
    os.kill(shell.user_ns["before"], signal.SIGKILL)
    time.sleep(0.2)
    result = run(shell, "%%modal_gpu\nimport os\nafter = os.getpid()")
    assert result.success
    assert shell.user_ns["after"] != shell.user_ns["before"]


def test_worker_dying_mid_cell_is_reported_and_namespace_kept(shell) -> None:
    run(shell, "keep = 'mine'")
    result = run(shell, "%%modal_gpu\nkeep = 'changed'\nimport os\nos._exit(3)")
    assert isinstance(result.error_in_exec, WorkerDied)
    assert "exited with code 3" in str(result.error_in_exec)
    assert shell.user_ns["keep"] == "mine"
    assert run(shell, "%%modal_gpu\nok = 1").success


def test_del_deletes_locally(shell) -> None:
    run(shell, "gone = 1\nstays = 2")
    assert run(shell, "%%modal_gpu\ndel gone").success
    assert "gone" not in shell.user_ns and shell.user_ns["stays"] == 2


def test_in_adds_and_out_restricts(shell) -> None:
    run(shell, "hidden_input = 5")
    run(shell, "%%modal_gpu --in hidden_input --out b\na = eval('hidden_input') + 1\nb = a * 2")
    assert shell.user_ns["b"] == 12
    assert "a" not in shell.user_ns


def test_modules_travel_by_reference(shell) -> None:
    run(shell, "import json as j")
    result = run(shell, "%%modal_gpu\ns = j.dumps({'a': 1})\nname = j.__name__")
    assert result.success and shell.user_ns["s"] == '{"a": 1}'


@pytest.mark.parametrize(
    "cell, message",
    [
        ("%%modal_gpu --bogus\nx = 1", "%%modal_gpu has no flag --bogus; %%modal_gpu? lists the flags"),
        ("%%modal_gpu --in 3x\nx = 1", "not a variable name"),
        ("%%modal_gpu --in nope\nx = 1", "--in names nope, which is not defined"),
        ("%%modal_gpu\n\n", "the cell is empty"),
    ],
)
def test_usage_errors_are_one_clear_line(shell, capsys, cell: str, message: str) -> None:
    run(shell, "x = 'untouched'")
    result = run(shell, cell)
    assert not result.success
    shown = capsys.readouterr()
    assert message.lower() in (shown.out + shown.err).lower()
    assert "Traceback" not in shown.out + shown.err
    assert shell.user_ns["x"] == "untouched"


def test_syntax_error_points_at_the_cell_line(shell) -> None:
    result = run(shell, "%%modal_gpu\nx = 1\ny = (")
    assert isinstance(result.error_in_exec, SyntaxError)
    assert result.error_in_exec.lineno == 3


def test_help_is_in_the_docstring(shell) -> None:
    doc = shell.find_cell_magic("modal_gpu").__doc__
    assert "--backend" in doc and "--in" in doc and "--out" in doc and "--quiet" in doc


def test_dynamic_bindings_come_back(shell) -> None:
    result = run(shell, "%%modal_gpu\nexec('made_by_exec = 5')\nglobals()['via_globals'] = 6")
    assert result.success
    assert shell.user_ns["made_by_exec"] == 5 and shell.user_ns["via_globals"] == 6


def test_conditional_delete_that_did_not_happen_keeps_the_name(shell) -> None:
    run(shell, "maybe = 'here'")
    assert run(shell, "%%modal_gpu\nif False:\n    del maybe").success
    assert shell.user_ns["maybe"] == "here"


def test_builtins_stay_home_unless_the_notebook_shadows_them(shell) -> None:
    run(shell, "sum = 5")  # shadows the builtin: the cell must see the notebook's `sum`
    result = run(shell, "%%modal_gpu\ntotal = sum + len([1, 2])\n"
                        "sent = sorted(k for k in globals() if k in ('sum', 'len'))")
    assert result.success and shell.user_ns["total"] == 7
    assert shell.user_ns["sent"] == ["sum"]


def test_where_auto_runs_cells_is_a_notice_on_stdout_not_an_error(shell, capsys) -> None:
    """On stderr, a notebook showed the first cell's notice in a red box, as if it had failed (issue 25)."""
    shell.run_line_magic("unload_ext", "modal_magic")  # a new kernel's extension: it has said nothing yet
    shell.run_line_magic("load_ext", "modal_magic")
    assert run(shell, "%%modal_gpu\nx = 1").success
    shown = capsys.readouterr()
    assert "modal_gpu: running cells on the local backend (this machine) — auto: no Modal credentials" in shown.out
    assert "running cells" not in shown.err
