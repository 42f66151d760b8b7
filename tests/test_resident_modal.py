"""The remote-resident session on the Modal path, against the strict stand-in for Modal's servers.

The container keeps its worker, and the worker keeps the session's tensors, so
the Modal backend behaves as the local one (``test_resident.py``): references
for unchanged inputs, a graph kept between cells with the leaves' ``.grad``
arriving, and a container replaced mid-session (killed between cells, or
preempted by the stand-in during a cell) costing one more round trip, never a
wrong value.
"""

from __future__ import annotations

import os
import signal

import pytest
import torch

from modal_magic.backends.modal.backend import ModalBackend

from .conftest import run

MIB = 1 << 20
CELL = "%%modal_gpu --backend modal --gpu T4\n"


@pytest.fixture
def sent(monkeypatch) -> list[int]:
    """The input bytes of every request the Modal backend sends this test."""
    calls: list[int] = []
    original = ModalBackend.run

    def spy(self, request, inputs, on_event, **kwargs):
        calls.append(inputs.nbytes)
        return original(self, request, inputs, on_event, **kwargs)

    monkeypatch.setattr(ModalBackend, "run", spy)
    return calls


def remote(shell, body: str) -> None:
    result = run(shell, CELL + body)
    assert result.success, result.error_in_exec or result.error_before_exec


def test_a_session_on_modal_keeps_its_tensors_and_graphs_and_survives_a_new_container(
        fresh, shell, sent, capsys) -> None:
    run(shell, "import torch\ntorch.manual_seed(0)\nmodel = torch.nn.Linear(512, 512)\nX = torch.randn(16, 512)\n"
               "expected = model(X).pow(2).mean()\nexpected.backward()\ngrad = model.weight.grad.clone()\n"
               "model.zero_grad(set_to_none=True)")
    remote(shell, "loss = model(X).pow(2).mean()\nimport os\ncontainer = os.getppid()")
    assert sent[-1] >= MIB
    loss = shell.user_ns["loss"]
    assert not loss.is_leaf and type(loss.grad_fn).__name__ == "MeanBackward0"
    remote(shell, "loss.backward()")  # the cell names neither the model nor its weights
    assert sent[-1] < 4096
    assert torch.allclose(shell.user_ns["model"].weight.grad, shell.user_ns["grad"])

    run(shell, "with torch.no_grad():\n    model.weight.mul_(2)")
    os.kill(shell.user_ns["container"], signal.SIGKILL)  # an idle shutdown, a crash: the next cell gets a new one
    fresh.wait_for(lambda report: report["containers_live"] == 0)
    capsys.readouterr()
    remote(shell, "total = float(model.weight.sum())\nimport os\ncontainer2 = os.getppid()")
    assert shell.user_ns["container2"] != shell.user_ns["container"]
    assert shell.user_ns["total"] == pytest.approx(float(shell.user_ns["model"].weight.detach().sum()), rel=1e-5)
    assert "the remote session was recycled" in capsys.readouterr().out

    fresh.fail("preempt")  # the stand-in replaces the container during the cell; Modal runs it again
    try:
        remote(shell, "total2 = float(model.weight.sum())")
    finally:
        fresh.fail("")
    assert shell.user_ns["total2"] == pytest.approx(shell.user_ns["total"])


def test_a_big_buffer_the_container_was_sent_before_goes_as_its_digest(fresh, shell, sent, monkeypatch) -> None:
    """A new tensor with content sent before (a reloaded dataset, a copy) goes up as its SHA-1, once the
    container still holds that content; a new container asks for the bytes again."""
    monkeypatch.setattr("modal_magic.notebook.session.HASH_MIN", MIB)
    run(shell, "import torch\nbig = torch.randn(1024, 1024)\nimport os")
    remote(shell, "a = float(big.sum())\ncontainer = os.getppid()")
    assert sent[-1] >= 4 * MIB
    run(shell, "copy = big.clone()")
    remote(shell, "b = float(copy.sum())\nsame_memory = copy.data_ptr() == big.data_ptr()")
    assert sent[-1] < 64 << 10
    assert shell.user_ns["b"] == shell.user_ns["a"] and shell.user_ns["same_memory"] is False
    os.kill(shell.user_ns["container"], signal.SIGKILL)
    fresh.wait_for(lambda report: report["containers_live"] == 0)
    run(shell, "copy2 = big.clone()")
    remote(shell, "c = float(copy2.sum())")
    assert shell.user_ns["c"] == shell.user_ns["a"]


def test_modal_resident_asks_the_container_that_runs_the_cells(fresh, shell, capsys) -> None:
    """``%modal_resident`` is the backend's own request (``resident_report``), answered by the last cell's container."""
    run(shell, "import torch\nmodel = torch.nn.Linear(512, 512)")
    remote(shell, "out = float(model(torch.ones(1, 512)).sum())")
    capsys.readouterr()
    run(shell, "%modal_resident")
    shown = capsys.readouterr().out
    assert "resident on the modal backend" in shown
    assert "model: 2 tensor(s), 1.0 MiB on" in shown
