"""torch.compile(model, backend=modal_magic.remote(backend="modal")) against the fake Modal server.

The graphs run in the container's warm worker, the very one ``%%modal_gpu`` cells
use (the package is mounted there: ``modal_magic.compile.remote`` imports in it).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import modal_magic

from .conftest import run


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_graphs_run_in_the_warm_container_of_the_magics_cells(fresh, shell) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)).eval()
    backend = modal_magic.remote(backend="modal", gpu="T4")
    compiled = torch.compile(model, backend=backend)
    x = torch.randn(4, 8)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
        assert len(backend.last_call.tensors_sent) == 4
        after_first = fresh.report()
        torch.testing.assert_close(compiled(x), model(x))
    assert backend.last_call.tensors_sent == [] and not backend.last_call.graph_sent
    assert run(shell, "%%modal_gpu --backend modal --gpu T4\nfrom modal_magic.worker.store import this_process\n"
                      "held = len(this_process().compiled.tensors)").success
    assert shell.user_ns["held"] >= 4  # the same worker: the magic's cell sees the parameters there
    report = fresh.report()
    assert report["containers"] == after_first["containers"]
    assert report["rpcs"]["AppCreate"] == after_first["rpcs"]["AppCreate"]


def test_a_new_container_gets_what_it_lacks_and_gives_the_right_values(fresh, shell) -> None:
    model = nn.Linear(6, 3).eval()
    backend = modal_magic.remote(backend="modal", gpu="T4")
    compiled = torch.compile(model, backend=backend)
    x = torch.randn(2, 6)
    with torch.no_grad():
        compiled(x)
        run(shell, "%modal_stop")  # the app and its container go; the next call starts fresh ones
        model.bias.add_(1)
        torch.testing.assert_close(compiled(x), model(x))
    assert backend.last_call.round_trips == 2 and backend.last_call.graph_sent
