"""Process-wide state behaves as if the remote cell ran in the notebook's own process (issue 13)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from modal_magic.notebook.extension import current

from .conftest import run


@pytest.fixture
def fresh_worker() -> Iterator[None]:
    """A worker started inside the test (with its environment), and not left to later tests."""
    current().backends.get("local").close()
    yield
    current().backends.get("local").close()


def test_worker_hashes_strings_as_a_kernel_with_a_pinned_seed(shell, monkeypatch, fresh_worker) -> None:
    monkeypatch.setenv("PYTHONHASHSEED", "123")
    pinned = subprocess.run([sys.executable, "-c", "print(hash('modal'), list({'a', 'b', 'c', 'd'}))"],
                            capture_output=True, text=True, check=True).stdout
    assert run(shell, "%%modal_gpu\nseen = f\"{hash('modal')} {list({'a', 'b', 'c', 'd'})}\\n\"").success
    assert shell.user_ns["seen"] == pinned


@pytest.fixture
def torch_defaults_restored() -> Iterator[None]:
    """The test changes the test process's own defaults; later tests need them back."""
    import torch

    dtype, grad = torch.get_default_dtype(), torch.is_grad_enabled()
    yield
    torch.set_default_dtype(dtype)
    torch.set_grad_enabled(grad)


_SEEDED = ("import random\nimport numpy as np\nimport torch\ntorch.manual_seed(0)\nnp.random.seed(0)\nrandom.seed(0)\n"
           "torch.set_default_dtype(torch.float32)\ntorch.set_grad_enabled(True)")
_CELLS = [
    "a = (torch.rand(2), np.random.rand(2), random.random())",       # draws continue the notebook's streams
    "b = (torch.rand(2), np.random.rand(2), random.random())",       # ...and the notebook continues the cell's
    "g = torch.manual_seed(1)\nnp.random.seed(1)\nrandom.seed(1)",   # seeds are seen by the next cell
    "c = (torch.rand(2), np.random.rand(2), random.random())",
    "torch.set_default_dtype(torch.float64)\ntorch.set_grad_enabled(False)",
    "d = (torch.ones(1).dtype, torch.is_grad_enabled())",
    "torch.set_default_dtype(torch.float32)\ntorch.set_grad_enabled(True)",
    "e = (torch.ones(1).dtype, torch.is_grad_enabled(), torch.rand(1))",
]


def _run_cells(shell, remote: set[int]) -> dict:
    shell.reset(new_session=False)
    assert run(shell, _SEEDED).success
    for i, cell in enumerate(_CELLS):
        result = run(shell, ("%%modal_gpu\n" if i in remote else "") + cell)
        assert result.success, (cell, result.error_in_exec)
    ns = shell.user_ns
    return {"values": repr([ns[name] for name in "abcde"]),
            "g is the default generator": ns["g"] is ns["torch"].default_generator}


@pytest.mark.parametrize("remote", [{0, 2, 4, 6}, {1, 3, 5, 7}], ids=["even cells remote", "odd cells remote"])
def test_random_states_and_torch_defaults_are_one_process(shell, torch_defaults_restored, remote) -> None:
    local = _run_cells(shell, remote=set())
    assert _run_cells(shell, remote) == local
    assert local["g is the default generator"]
