"""Fault injection through the real magic and worker: each failure reads as a sentence,
the namespace is left as a failed local cell would leave it, and the next cell works.

Interrupts, and the failures of ``--map``, are in ``test_fault_interrupts.py``."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from modal_magic import wire
from modal_magic.backends.local import LocalBackend
from modal_magic.errors import BackendUnavailable, CellTimeout, WorkerDied
from modal_magic.notebook.extension import current
from modal_magic.protocol import RunRequest

from .conftest import run

NEXT_CELL = "%%modal_gpu\nimport os\nnext_pid = os.getpid()"


def assert_next_cell_works(shell) -> None:
    assert run(shell, NEXT_CELL).success
    assert shell.user_ns["next_pid"] == current().backends.get("local").pid


@pytest.mark.parametrize(
    "body, expected",
    [
        ("import os\nos._exit(7)", "exited with code 7"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
         "was killed by SIGKILL — usually the out-of-memory killer"),
        ("import ctypes\nctypes.string_at(0)", "was killed by SIGSEGV — a crash in native code"),
        ("import os\nos.write(2, b'CUDA error: an illegal memory access was encountered\\n')\nos.abort()",
         "SIGABRT — native code aborted while running the cell — its last words: CUDA error: an illegal memory"),
    ],
)
def test_worker_death_is_told_apart_and_replaced(shell, capsys, body: str, expected: str) -> None:
    run(shell, "state = 'before'")
    result = run(shell, f"%%modal_gpu\nstate = 'after'\n{body}")
    assert isinstance(result.error_in_exec, WorkerDied)
    assert expected in str(result.error_in_exec)
    assert "next cell starts a fresh worker" in str(result.error_in_exec)
    assert "Traceback" not in capsys.readouterr().out      # one sentence, not our internals
    assert shell.user_ns["state"] == "before"
    assert_next_cell_works(shell)


def test_timeout_stops_the_cell_soon_after_the_limit(shell) -> None:
    run(shell, "state = 'before'")
    started = time.monotonic()
    result = run(shell, "%%modal_gpu --timeout 1\nstate = 'after'\nimport time\ntime.sleep(30)")
    elapsed = time.monotonic() - started
    assert isinstance(result.error_in_exec, CellTimeout)
    assert "longer than its timeout of 1 s" in str(result.error_in_exec)
    assert elapsed < 5
    assert shell.user_ns["state"] == "before"
    assert_next_cell_works(shell)


def test_unpicklable_input_is_named_before_anything_runs(shell, capsys) -> None:
    run(shell, "import threading\nlock = threading.Lock()\nstate = 'before'")
    result = run(shell, "%%modal_gpu\nstate = 'after'\nlock")
    assert not result.success
    assert "variable 'lock' cannot be sent: TypeError: cannot pickle '_thread.lock' object" in capsys.readouterr().err
    assert shell.user_ns["state"] == "before"
    assert_next_cell_works(shell)


def test_secret_is_held_back_unless_named(shell, capsys) -> None:
    run(shell, "OPENAI_API_KEY = 'sk-" + "a" * 30 + "'\nstate = 'before'")
    result = run(shell, "%%modal_gpu\nstate = 'after'\nn = len(OPENAI_API_KEY)")
    assert not result.success
    err = capsys.readouterr().err
    assert "held back 'OPENAI_API_KEY'" in err and "--in OPENAI_API_KEY" in err
    assert shell.user_ns["state"] == "before"
    assert run(shell, "%%modal_gpu --in OPENAI_API_KEY\nn = len(OPENAI_API_KEY)").success
    assert shell.user_ns["n"] == 33


@pytest.mark.parametrize("name, value", [("hf_token", "hf_" + "x" * 30), ("db_password", "hunter2"),
                                          ("key_material", "-----BEGIN RSA PRIVATE KEY-----\nMII...")])
def test_other_credentials_are_held_back(shell, name: str, value: str) -> None:
    shell.user_ns[name] = value
    assert not run(shell, f"%%modal_gpu\nx = {name}").success


def test_ml_names_that_mention_tokens_are_not_secrets(shell) -> None:
    shell.user_ns["tokens"] = [101, 2023, 102]
    shell.user_ns["max_tokens"] = 128
    assert run(shell, "%%modal_gpu\nn = len(tokens) + max_tokens").success
    assert shell.user_ns["n"] == 131


def test_environment_is_not_forwarded_unless_asked(shell, monkeypatch) -> None:
    monkeypatch.setenv("MM_TEST_SECRET_ENV", "visible")
    assert run(shell, "%%modal_gpu\nimport os\nseen = os.environ.get('MM_TEST_SECRET_ENV')").success
    assert shell.user_ns["seen"] is None
    assert run(shell, "%%modal_gpu --env MM_TEST_SECRET_ENV\nimport os\n"
                      "seen = os.environ.get('MM_TEST_SECRET_ENV')").success
    assert shell.user_ns["seen"] == "visible"
    assert run(shell, "%%modal_gpu\nimport os\nseen = os.environ.get('MM_TEST_SECRET_ENV')").success
    assert shell.user_ns["seen"] is None                  # only for that cell


def test_inputs_over_the_size_limit_are_reported_by_name(shell, capsys) -> None:
    shell.user_ns["big"] = np.zeros(2**20)               # 8 MiB
    shell.user_ns["small"] = 1
    result = run(shell, "%%modal_gpu --max-input 1MB\ntotal = big.sum() + small")
    assert not result.success
    err = capsys.readouterr().err
    assert "big (8.0 MiB)" in err and "--max-input" in err
    assert "total" not in shell.user_ns
    assert run(shell, "%%modal_gpu --max-input 20MB\ntotal = big.sum() + small").success


def test_a_value_that_fails_to_rebuild_here_is_named_and_the_rest_comes_back(shell, capsys) -> None:
    """As a local cell would have bound every name: one that cannot be rebuilt here is left out with a line,
    and the others (the names bound after it included) arrive; the cell itself succeeded."""
    run(shell, "state = 'before'")
    body = ("def rebuild():\n    import os\n    if os.getpid() != WORKER:\n"
            "        raise RuntimeError('cannot rebuild here')\n"
            "class Fragile:\n    def __reduce__(self):\n        return (rebuild, ())\n"
            "import os, math\nWORKER = os.getpid()\nstate = 'after'\nfragile = Fragile()\n"
            "shared = [1, 2]\nholder = {'shared': shared}\nlast = 'bound after it'")
    result = run(shell, f"%%modal_gpu\n{body}")
    err = capsys.readouterr().err
    assert result.success, result.error_in_exec
    assert ("'fragile' was not brought back: it ran, but variable 'fragile' could not be rebuilt here: "
            "RuntimeError: cannot rebuild here" in err)
    assert "Traceback" not in err
    ns = shell.user_ns
    assert "fragile" not in ns
    assert ns["state"] == "after" and ns["last"] == "bound after it" and ns["math"].pi > 3
    assert ns["holder"]["shared"] is ns["shared"]  # what came back after the failure keeps its identities
    assert_next_cell_works(shell)


def test_a_custom_exception_with_its_own_init_arrives_as_itself(shell) -> None:
    """``BudgetExceeded(spent, limit)`` passes another message to ``Exception.__init__``: pickle's rebuild
    (``cls(*args)``) fails there, and the cell's own error became 'results could not be rebuilt'."""
    run(shell, "class BudgetExceeded(Exception):\n"
               "    def __init__(self, spent, limit):\n"
               "        super().__init__(f'spent {spent} of {limit}')\n"
               "        self.spent, self.limit = spent, limit")
    result = run(shell, "%%modal_gpu\nspent = 7\nraise BudgetExceeded(spent, 5)")
    error = result.error_in_exec
    assert type(error) is shell.user_ns["BudgetExceeded"], repr(error)
    assert (error.spent, error.limit, str(error)) == (7, 5, "spent 7 of 5")
    assert shell.user_ns["spent"] == 7  # bound before the raise, as locally
    assert_next_cell_works(shell)


@pytest.mark.parametrize("cell, message", [
    ("%%modal_gpu --timeout soon\nx = 1", "--timeout takes a number of seconds"),
    ("%%modal_gpu --max-input lots\nx = 1", "--max-input takes a positive size"),
    ("%%modal_gpu --env NOT_SET_ANYWHERE_MM\nx = 1", "not set in this kernel's environment"),
    ("%%modal_gpu --device tpu\nx = 1", "invalid choice: 'tpu'"),
])
def test_malformed_flags_name_the_flag(shell, capsys, cell: str, message: str) -> None:
    assert not run(shell, cell).success
    shown = capsys.readouterr()
    assert message in shown.out + shown.err


def test_backend_that_cannot_start_is_unavailable_not_a_crash() -> None:
    backend = LocalBackend(python="/nonexistent/python3")
    with pytest.raises(BackendUnavailable, match="could not start the local worker"):
        backend.run(RunRequest(code="x = 1"), wire.pack({}), lambda event: None)


def test_worker_environment_is_scrubbed(monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nope")
    backend = LocalBackend()
    try:
        env = backend._worker_env()
    finally:
        backend.close()
    assert "AWS_SECRET_ACCESS_KEY" not in env and "PATH" in env
    assert os.getcwd() in env["PYTHONPATH"].split(os.pathsep)


def test_session_default_timeout_is_enforced_and_flags_win(shell) -> None:
    shell.run_line_magic("config", "ModalMagics.timeout = 1.0")
    try:
        started = time.monotonic()
        result = run(shell, "%%modal_gpu\nimport time\ntime.sleep(30)")
        assert isinstance(result.error_in_exec, CellTimeout) and time.monotonic() - started < 5
        assert run(shell, "%%modal_gpu --timeout 10\nimport time\ntime.sleep(1.5)\nslept = True").success
    finally:
        shell.run_line_magic("config", "ModalMagics.timeout = None")
    assert_next_cell_works(shell)


def test_timeout_stops_a_cell_that_prints_all_the_time(shell) -> None:
    """A cell that prints every 50 ms is never quiet: the deadline must hold whatever arrives (review N1)."""
    run(shell, "state = 'before'")
    started = time.monotonic()
    result = run(shell, "%%modal_gpu --timeout 1\nstate = 'after'\nimport time\n"
                        "for i in range(6000):\n    print(i)\n    time.sleep(0.05)")
    elapsed = time.monotonic() - started
    assert isinstance(result.error_in_exec, CellTimeout)
    assert elapsed < 30                                    # the loop alone takes 300 s
    assert shell.user_ns["state"] == "before"
    assert_next_cell_works(shell)


def test_a_thread_printing_while_the_cell_prints_a_large_string_corrupts_nothing(shell, capsys) -> None:
    """Issue 26's crash: a thread of an earlier cell prints in a loop while the next prints 30 MB at once. Both
    writes went to the worker's socket at the same time: a ``UnicodeDecodeError``, then a bare ``MemoryError``
    in every later cell."""
    spammer = ("import sys, threading\n"
               "def spam(sys=sys):\n"
               "    while True:\n"
               "        if sys.stdout is not sys.__stdout__:  # only while a cell runs\n"
               "            print('tick')\n"
               "threading.Thread(target=spam, daemon=True).start()")
    try:
        assert run(shell, f"%%modal_gpu\n{spammer}").success
        result = run(shell, "%%modal_gpu\nimport time\ntime.sleep(0.1)\nprint('y' * 30_000_000)\ntime.sleep(0.1)\n"
                            "big_printed = True")
        assert result.success, result.error_in_exec
        out = capsys.readouterr().out
        assert "y" * 30_000_000 in out and "tick\n" in out
        for _ in range(3):
            assert_next_cell_works(shell)
        assert shell.user_ns["big_printed"] is True
    finally:
        run(shell, "%modal_stop")  # the spamming thread goes with its worker



def test_a_custom_autograd_function_that_cannot_come_back_leaves_the_rest_of_the_cell(shell, capsys) -> None:
    """Issue 25's repro: a ``torch.autograd.Function`` whose backward is ``@once_differentiable``, defined in
    a remote cell, fails to rebuild here (an AttributeError inside torch); its imports and tensors arrive."""
    run(shell, "import torch")
    result = run(shell, "%%modal_gpu\nimport math\nfrom torch.autograd.function import once_differentiable\n"
                        "class Square(torch.autograd.Function):\n"
                        "    @staticmethod\n    def forward(ctx, x):\n"
                        "        ctx.save_for_backward(x)\n        return x * x\n"
                        "    @staticmethod\n    @once_differentiable\n    def backward(ctx, g):\n"
                        "        x, = ctx.saved_tensors\n        return 2 * x * g\n"
                        "x = torch.ones(3, requires_grad=True)\nSquare.apply(x).sum().backward()\ngrad = x.grad")
    assert result.success, result.error_in_exec
    assert "'Square' was not brought back" in capsys.readouterr().err
    assert shell.user_ns["math"].tau > 6 and shell.user_ns["grad"].tolist() == [2.0, 2.0, 2.0]
    assert_next_cell_works(shell)
