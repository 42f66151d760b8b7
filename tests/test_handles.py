"""Remote handles (issue 25): a value a cell binds that cannot travel stays where the cell ran, and the notebook
holds a handle to it: later remote cells use the real object, a local use says where it is, and nothing the
cell bound is missing."""

from __future__ import annotations

import gc

import pytest

from modal_magic.wire.handles import RemoteHandle, RemoteOnly

from .conftest import run


def remote(shell, body: str, flags: str = "") -> None:
    result = run(shell, f"%%modal_gpu {flags}\n{body}")
    assert result.success, result.error_in_exec or result.error_before_exec


def held_in_worker(shell) -> int:
    remote(shell, "from modal_magic.wire import handles as _h\nheld_now = _h.count()\ndel _h", "--quiet")
    return shell.user_ns.pop("held_now")


def test_a_generator_made_remotely_stays_there_and_later_cells_go_on_with_it(shell, capsys) -> None:
    remote(shell, "def count():\n    yield from range(5)\ngen = count()\nfirst = next(gen)\nalso = gen")
    err = capsys.readouterr().err
    assert "'gen' stays where the cell ran, as a remote handle: it could not come back (TypeError: cannot pickle " \
           "'generator' object)" in err
    ns = shell.user_ns
    assert ns["first"] == 0 and isinstance(ns["gen"], RemoteHandle) and ns["also"] is ns["gen"]
    remote(shell, "second = next(gen)\nthird = next(also)")  # the same generator, going on where it was
    assert (ns["second"], ns["third"]) == (1, 2)


def test_using_a_handle_here_says_where_the_value_is_in_one_sentence(shell, capsys) -> None:
    remote(shell, "import threading\nlock = threading.Lock()")
    capsys.readouterr()
    result = run(shell, "with lock:\n    pass")
    assert isinstance(result.error_in_exec, RemoteOnly)
    shown = capsys.readouterr().out
    assert "RemoteOnly: 'lock' is a _thread.lock that stays in the local worker (pid " in shown
    assert "Use it in %%modal_gpu cells, where it is the real object." in shown
    assert "handles.py" not in shown and "Traceback" not in shown
    assert getattr(shell.user_ns["lock"], "shape", None) is None  # probes (IPython's display, duck typing) pass over
    assert "<remote _thread.lock 'lock', kept in the local worker" in repr(shell.user_ns["lock"])


def test_a_compiled_function_comes_back_as_a_handle_and_runs_remotely(shell) -> None:
    """``torch.compile`` of a function cannot be pickled (its config module): it used to be dropped."""
    run(shell, "import torch")
    remote(shell, "double = torch.compile(lambda t: t * 2, backend='eager')")
    assert isinstance(shell.user_ns["double"], RemoteHandle)
    remote(shell, "y = double(torch.ones(2))")
    assert shell.user_ns["y"].tolist() == [2.0, 2.0]


def test_a_handle_the_notebook_lets_go_is_let_go_remotely(shell) -> None:
    remote(shell, "import threading\nlocks = [threading.Lock()]\nother = threading.Lock()")
    gc.collect()  # handles of earlier tests that are garbage now are let go with the next request
    held = held_in_worker(shell)
    run(shell, "del locks")
    gc.collect()
    assert held_in_worker(shell) == held - 1  # the next request said so; `other` is still held


def test_a_handle_whose_worker_was_replaced_says_it_is_gone(shell, capsys) -> None:
    remote(shell, "import threading\nlock = threading.Lock()")
    shell.run_line_magic("modal_stop", "")
    capsys.readouterr()
    result = run(shell, "%%modal_gpu\nwith lock:\n    pass")
    assert isinstance(result.error_in_exec, RemoteOnly)
    assert "which has been replaced since, so it is gone: run the cell that made it again" in str(result.error_in_exec)


def test_modal_resident_lists_the_handles(shell, capsys) -> None:
    remote(shell, "def count():\n    yield 1\ngen = count()")
    capsys.readouterr()
    shell.run_line_magic("modal_resident", "")
    out = capsys.readouterr().out
    assert "modal_gpu: 1 remote handle(s)" in out and "  gen: generator in the local worker (pid" in out


@pytest.mark.parametrize("flags", ["--fresh", "--map i=range(2)"])
def test_a_cell_without_the_session_still_names_what_it_could_not_bring_back(shell, capsys, flags) -> None:
    """Only a worker that keeps a session holds values: a --fresh cell or a --map copy names them, as before."""
    run(shell, f"%%modal_gpu {flags}\nimport threading\nlock = threading.Lock()")
    assert "lock" not in shell.user_ns or not isinstance(shell.user_ns["lock"], RemoteHandle)
    assert "'lock' was not brought back" in capsys.readouterr().err
