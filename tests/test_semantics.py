"""A remote cell does to the notebook what the same cell run locally does.

Each case runs twice in the same real shell — plainly, then under
``%%modal_gpu`` — from the same setup, and the resulting namespaces are
compared: values, which names are one object, and case-specific checks
(identity of sub-objects, aliasing through views and numpy arrays).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import run

_IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}


@dataclass
class Case:
    setup: str
    cells: list[str]
    checks: list[str] = field(default_factory=list)


CASES = {
    "list append, alias sees it": Case("lst = [1]\nalias = lst", ["lst.append(2)"], ["alias is lst"]),
    "dict item, alias sees it": Case("d = {'a': 1}\nalias = d", ["d['b'] = 2\nd.pop('a')"], ["alias is d"]),
    "set add": Case("s = {1}\nalias = s", ["s.add(2)"], ["alias is s"]),
    "object attributes": Case("class O:\n    pass\no = O()\no.x = 1\nalias = o", ["o.x = 5\no.y = 6"],
                              ["alias is o", "type(o) is O"]),
    "tensor in place; view and numpy see it": Case(
        "import torch\nt = torch.zeros(4)\nview = t[1:]\narr = t.numpy()", ["t.add_(1)\nt[0] = 7"],
        ["view.data_ptr() == t.data_ptr() + 4", "bool(arr[0] == 7)"]),
    "numpy in place": Case("import numpy as np\na = np.zeros(3)\nalias = a", ["a += 2"], ["alias is a"]),
    "numpy views made with their array share its memory": Case(
        "import numpy as np", ["a = np.zeros(6)\nevens = a[::2]\nmiddle = a[1:4]"],
        ["(evens.__setitem__(slice(None), 7), middle.__setitem__(0, 5), a.tolist())[2] == [7, 5, 7, 0, 7, 0]",
         "np.shares_memory(a, evens) and np.shares_memory(a, middle)"]),
    "unchanged inputs stay the same objects": Case(
        "import torch\nbig = torch.ones(1000)\nlst = [big]\nkeep = big", ["total = float(big.sum()) + len(lst)"],
        ["keep is big", "lst[0] is big"]),
    "two names, one object": Case("", ["a = []\nb = a\nb.append(1)"], ["a is b"]),
    "new object holding an input": Case("inner = [1]", ["outer = {'k': inner}"], ["outer['k'] is inner"]),
    "del deletes": Case("gone = 1\nstays = 2", ["del gone"]),
    "star import binds the module's names": Case(
        "pi = 3", ["from math import *\nr = sqrt(16.0) + pi"], ["sqrt is __import__('math').sqrt"]),
    "global in a function": Case("counter = 0", ["def inc():\n    global counter\n    counter += 1\ninc()\ninc()"]),
    "function defined remotely reads notebook globals": Case(
        "K = 1", ["def f():\n    return K"], ["(globals().__setitem__('K', 5), f())[1] == 5"]),
    "fails halfway: earlier effects stay": Case(
        "lst = []", ["a = 1\nlst.append(3)\nraise ValueError('stop')\nb = 2"], ["'b' not in globals()"]),
    "training over several cells": Case(
        "import torch\ntorch.manual_seed(0)\nmodel = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), "
        "torch.nn.Linear(8, 1))\nX = torch.randn(32, 4)\nY = X.sum(1, keepdim=True)",
        ["opt = torch.optim.Adam(model.parameters(), lr=0.05)\n"
         "sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)\nmetrics = []",
         "model.train()\nopt.zero_grad()\nloss = ((model(X) - Y) ** 2).mean()\nloss.backward()\nopt.step()\n"
         "sched.step()\nmetrics.append(round(loss.item(), 6))",
         "model.train()\nopt.zero_grad()\nloss = ((model(X) - Y) ** 2).mean()\nloss.backward()\nopt.step()\n"
         "sched.step()\nmetrics.append(round(loss.item(), 6))\nmodel.eval()"],
        ["opt.param_groups[0]['params'][0] is model[0].weight", "sched.optimizer is opt",
         "not model.training", "len(metrics) == 2", "model[0].weight.grad is not None",
         "set(map(id, opt.state)) == set(map(id, model.parameters()))"]),
}


def canon(value, seen=None):
    """A comparable picture of a value (tensors by content, objects by their attributes)."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return "<cycle>"
    if isinstance(value, torch.Tensor):
        if not value.is_leaf:
            return ("tensor", type(value).__name__, value.detach().tolist(), str(value.dtype), "non-leaf")
        return ("tensor", type(value).__name__, value.detach().tolist(), str(value.dtype), value.requires_grad,
                canon(value.grad, seen))
    if isinstance(value, np.ndarray):
        return ("array", value.tolist(), str(value.dtype))
    if isinstance(value, torch.nn.Module):
        return ("module", type(value).__name__, value.training, canon(value.state_dict(), seen))
    if isinstance(value, torch.optim.Optimizer):
        return ("optimizer", canon(value.state_dict(), seen))
    if isinstance(value, (list, tuple)):
        seen = seen | {id(value)}
        return (type(value).__name__, [canon(v, seen) for v in value])
    if isinstance(value, dict):
        seen = seen | {id(value)}
        return ("dict", [(canon(k, seen), canon(v, seen)) for k, v in value.items()])
    if isinstance(value, set):
        return ("set", sorted(map(repr, value)))
    if isinstance(value, type) or callable(value):
        return ("callable", getattr(value, "__qualname__", repr(value)))
    if hasattr(value, "__dict__") and not isinstance(value, type(np)):
        seen = seen | {id(value)}
        return (type(value).__name__, canon({k: v for k, v in vars(value).items()}, seen))
    return ("value", repr(value)) if not isinstance(value, type(np)) else ("module", value.__name__)


def picture(shell, checks: list[str]) -> dict:
    ns = {k: v for k, v in shell.user_ns.items() if not k.startswith("_") and k not in _IPYTHON_NAMES}
    groups = {}
    for name, value in ns.items():
        groups.setdefault(id(value), []).append(name)
    return {
        "values": {name: canon(value) for name, value in ns.items()},
        "same_object": sorted(sorted(g) for g in groups.values() if len(g) > 1),
        "checks": [bool(eval(check, shell.user_ns)) for check in checks],
    }


def run_case(shell, case: Case, remote: bool) -> tuple[dict, list[str]]:
    shell.reset(new_session=False)
    assert run(shell, case.setup).success
    errors = []
    for body in case.cells:
        result = run(shell, ("%%modal_gpu\n" if remote else "") + body)
        errors.append(type(result.error_in_exec).__name__ if result.error_in_exec else "")
    return picture(shell, case.checks), errors


@pytest.mark.parametrize("name", list(CASES))
def test_remote_cell_matches_local_cell(shell, name: str) -> None:
    case = CASES[name]
    local, local_errors = run_case(shell, case, remote=False)
    remote, remote_errors = run_case(shell, case, remote=True)
    assert remote_errors == local_errors
    assert remote["values"] == local["values"]
    assert remote["same_object"] == local["same_object"]
    assert remote["checks"] == local["checks"] and all(local["checks"])


# ---------------------------------------------------------------- generated cells
names = st.sampled_from(["a", "b", "c"])
statements = st.one_of(
    st.builds(lambda n, v: f"{n} = {v!r}", names, st.integers(-5, 5)),
    st.builds(lambda n, m: f"{n} = {m}", names, names),                     # aliasing
    st.builds(lambda n: f"{n} = [1, 2]", names),
    st.builds(lambda n: f"{n} = {{'k': 1}}", names),
    st.builds(lambda n: f"{n} = torch.arange(3.0)", names),
    st.builds(lambda n: f"if isinstance({n}, list): {n}.append(9)", names),  # list mutation
    st.builds(lambda n: f"if isinstance({n}, dict): {n}['z'] = 0", names),   # dict mutation
    st.builds(lambda n: f"if isinstance({n}, torch.Tensor): {n}.mul_(2)", names),
    st.builds(lambda n: f"if '{n}' in globals(): del {n}", names),
    st.builds(lambda n: f"def {n}(v=1):\n    return v + 1", names),
)
SETUP = "import torch\na = [0]\nb = a\nc = torch.ones(2)"


@settings(max_examples=int(os.environ.get("MM_EXAMPLES", "25")), deadline=None,
          derandomize="MM_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(statements, min_size=1, max_size=5))
def test_generated_cells_agree(shell, body: list[str]) -> None:
    case = Case(SETUP, ["\n".join(body)], [])
    local, local_errors = run_case(shell, case, remote=False)
    remote, remote_errors = run_case(shell, case, remote=True)
    assert remote_errors == local_errors
    assert remote["values"] == local["values"]
    assert remote["same_object"] == local["same_object"]


def test_rebound_input_still_brings_its_mutation_back(shell) -> None:
    """Found by the generated cells: the mutated list has no remote name left, but `b` holds it here."""
    case = Case("a = [0]\nb = a", ["a.append(9)\na = [1, 2]"], ["b == [0, 9]"])
    local, _ = run_case(shell, case, remote=False)
    remote, _ = run_case(shell, case, remote=True)
    assert remote == local and all(local["checks"])


def test_notebook_function_reads_the_cells_rebinding_of_its_global(shell) -> None:
    """A notebook function called remotely reads the cell's namespace, not copies made when it was sent."""
    case = Case("OFFSET = 10\ndef shifted(v):\n    return v + OFFSET", ["OFFSET = 100\ny = shifted(1)"], ["y == 101"])
    local, _ = run_case(shell, case, remote=False)
    remote, _ = run_case(shell, case, remote=True)
    assert remote == local and all(local["checks"])


def test_a_librarys_closure_made_remotely_comes_back_over_the_librarys_globals(shell) -> None:
    """``@contextmanager``'s helper around a notebook function is a closure, so it travels by value; it comes
    back over contextlib's own globals, as a local one has them, not over a private copy of them."""
    import contextlib

    shell.run_cell("def opened():\n    yield 'resource'")
    assert run(shell, "%%modal_gpu\nimport contextlib\nmanaged = contextlib.contextmanager(opened)").success
    assert shell.user_ns["managed"].__globals__ is vars(contextlib)
    assert shell.run_cell("with managed() as r:\n    got = r").success and shell.user_ns["got"] == "resource"


def test_decorated_function_keeps_its_attributes_and_globals(shell) -> None:
    """Attributes set remotely on a notebook function come back; a function brought back only through
    another (``__wrapped__``), and an ``lru_cache`` one defined remotely, read the notebook's globals."""
    setup = ("import functools\ndef counted(fn):\n    @functools.wraps(fn)\n    def wrapper(*a):\n"
             "        wrapper.calls += 1\n        return fn(*a)\n    wrapper.calls = 0\n    return wrapper")
    cells = ["K = 3\n@counted\ndef times(x):\n    return K * x\ntimes(1)",
             "times(2)\n@functools.lru_cache(maxsize=None)\ndef fib(n):\n"
             "    return n if n < 2 else fib(n - 1) + fib(n - 2)"]
    checks = ["times.calls == 2", "(K := 5) and times.__wrapped__(1) == 5", "fib(20) == 6765"]
    local, _ = run_case(shell, Case(setup, cells, checks), remote=False)
    remote, _ = run_case(shell, Case(setup, cells, checks), remote=True)
    assert remote == local and all(local["checks"])
