"""torch.compile(model, backend=modal_magic.remote(backend="local")): graphs run in the real local worker."""

from __future__ import annotations

import copy
import os
import signal
import time
import warnings

import pytest
import torch
from torch import nn

import modal_magic
from modal_magic.backends.local import LocalBackend
from modal_magic.compile import RemoteGraphError
from modal_magic.compile.residency import key
from modal_magic.errors import UsageProblem
from modal_magic.notebook.driver import CellOptions, run_cell
from modal_magic.notebook.extension import current


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    torch.manual_seed(0)
    yield
    torch._dynamo.reset()


def _remote(**options):
    return modal_magic.remote(backend="local", **options)


def _remote_count() -> int:
    """How many tensors the worker keeps for compiled graphs (parameters, buffers, saved activations)."""
    namespace: dict = {}
    run_cell("from modal_magic.worker.store import this_process\nheld = len(this_process().compiled.tensors)",
             namespace,
             CellOptions(backend="local", quiet=True), on_event=lambda event: None)
    return namespace["held"]


def _kill_worker() -> int:
    pid = current().backends.get("local").pid
    os.kill(pid, signal.SIGKILL)
    while current().backends.get("local").pid is not None:
        time.sleep(0.05)
    return pid


class _Block(nn.Module):
    """A pre-norm transformer block: attention (with its softmax and reshapes) and an MLP."""

    def __init__(self, width: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attention(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


_MODELS = {
    "mlp": (lambda: nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4)), (8, 16)),
    "cnn": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Flatten(), nn.Linear(8 * 4 * 4, 10)), (2, 3, 8, 8)),
    "transformer block": (_Block, (2, 5, 32)),
}


@pytest.mark.parametrize("name", list(_MODELS))
def test_outputs_equal_eager(name: str) -> None:
    make, shape = _MODELS[name]
    model = make().eval()
    compiled = torch.compile(model, backend=_remote())
    x = torch.randn(shape)
    with torch.no_grad():
        expected, got = model(x), compiled(x)
    assert got.shape == expected.shape and got.dtype == expected.dtype and got.device.type == "cpu"
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_the_remote_side_compiles_with_the_backend_asked_for(grad: bool) -> None:
    model = nn.Sequential(nn.Linear(5, 7), nn.SiLU(), nn.Linear(7, 2))
    twin = copy.deepcopy(model)
    x = torch.randn(3, 5)
    with torch.set_grad_enabled(grad):
        got = torch.compile(model, backend=_remote(compile_with="aot_eager"))(x)
        torch.testing.assert_close(got, twin(x))
    if grad:
        got.sum().backward()
        twin(x).sum().backward()
        torch.testing.assert_close(model[0].weight.grad, twin[0].weight.grad)


def test_float64_outputs_keep_their_dtype() -> None:
    model = nn.Linear(4, 3).double().eval()
    x = torch.randn(2, 4, dtype=torch.float64)
    with torch.no_grad():
        got = torch.compile(model, backend=_remote())(x)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, model(x))


def test_a_graph_break_makes_two_remote_graphs() -> None:
    backend, graphs = _remote(), []

    def counting(module, example_inputs):
        graphs.append(module)
        return backend(module, example_inputs)

    def f(x):
        y = torch.sin(x) * 2
        torch._dynamo.graph_break()
        return torch.cos(y) + 1

    x = torch.randn(5)
    with torch.no_grad():
        got = torch.compile(f, backend=counting)(x)
    assert len(graphs) == 2
    torch.testing.assert_close(got, torch.cos(torch.sin(x) * 2) + 1)


def test_a_dynamic_batch_size_recompiles_once_then_reuses_the_graph() -> None:
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 2)).eval()
    backend = _remote()
    compiled = torch.compile(model, backend=backend)
    sent = []
    with torch.no_grad():
        for batch in (3, 5, 7, 11):
            x = torch.randn(batch, 6)
            torch.testing.assert_close(compiled(x), model(x))
            sent.append(backend.last_call.graph_sent)
    assert sent == [True, True, False, False]  # static, then dynamo's dynamic graph, reused


def test_parameters_travel_once_and_a_changed_one_again_alone() -> None:
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 4)).eval()
    backend = _remote()
    compiled = torch.compile(model, backend=backend)
    x = torch.randn(2, 256)
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    with torch.no_grad():
        compiled(x)
    first = backend.last_call
    assert sorted(first.tensors_sent) == sorted(key(p) for p in model.parameters())
    assert first.sent_bytes > parameter_bytes

    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
    second = backend.last_call
    assert second.tensors_sent == [] and not second.graph_sent
    assert second.sent_bytes < 4 * x.numel() * x.element_size() + 4096  # the activation and a little framing

    optimizer = torch.optim.SGD([model[0].weight], lr=0.5)  # a step in the notebook changes one tensor
    model(x).sum().backward()
    optimizer.step()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
    third = backend.last_call
    assert third.tensors_sent == [key(model[0].weight)]
    weight_bytes = model[0].weight.numel() * 4
    assert weight_bytes < third.sent_bytes < 1.5 * weight_bytes  # without its .grad


def test_a_foreach_optimizer_step_under_inference_mode_calls() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    backend = _remote()
    compiled = torch.compile(model, backend=backend)
    x = torch.randn(3, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, foreach=True)
    for _ in range(2):
        with torch.inference_mode():
            torch.testing.assert_close(compiled(x), model(x))
        optimizer.zero_grad()
        model(x).square().sum().backward()
        optimizer.step()
    assert len(backend.last_call.tensors_sent) == 4  # every parameter stepped, every one re-sent


def test_the_remote_side_frees_a_parameter_the_notebook_dropped() -> None:
    backend = _remote()
    x = torch.randn(1, 3)
    with torch.no_grad():
        torch.compile(nn.Linear(3, 3), backend=backend)(x)
        before = _remote_count()
        torch._dynamo.reset()  # dynamo's cache holds the model too
        other = torch.compile(nn.Linear(3, 3, bias=False), backend=backend)
        other(x)  # the first model is gone: this call tells the remote side
    assert _remote_count() == before - 2 + 1


def test_a_replaced_parameter_is_sent_as_a_new_one() -> None:
    model = nn.Linear(3, 3).eval()
    backend = _remote()
    compiled = torch.compile(model, backend=backend)
    x = torch.randn(1, 3)
    with torch.no_grad():
        compiled(x)
        model.weight = nn.Parameter(torch.ones(3, 3))
        torch.testing.assert_close(compiled(x), model(x))
    assert backend.last_call.tensors_sent == [key(model.weight)]


def test_buffers_the_graph_updates_come_back() -> None:
    model = nn.BatchNorm1d(4).train()  # training-mode batch norm updates its running statistics in place
    twin = nn.BatchNorm1d(4).train()
    compiled = torch.compile(model, backend=_remote())
    with torch.no_grad():
        for _ in range(3):
            x = torch.randn(8, 4)
            torch.testing.assert_close(compiled(x), twin(x))
    torch.testing.assert_close(model.running_mean, twin.running_mean)
    torch.testing.assert_close(model.running_var, twin.running_var)
    assert model.num_batches_tracked.item() == 3


def test_an_input_the_graph_changes_in_place_changes_here() -> None:
    def f(x):
        x.add_(1)
        return x * 2

    x = torch.zeros(3)
    with torch.no_grad():
        y = torch.compile(f, backend=_remote())(x)
    assert x.tolist() == [1.0, 1.0, 1.0] and y.tolist() == [2.0, 2.0, 2.0]


def test_a_killed_worker_between_calls_still_gives_the_right_values() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    backend = _remote()
    compiled = torch.compile(model, backend=backend)
    x = torch.randn(4, 8)
    with torch.no_grad():
        compiled(x)
        pid = _kill_worker()
        model[0].weight.mul_(2)  # changed too, while the worker was down
        torch.testing.assert_close(compiled(x), model(x))
    call = backend.last_call
    assert call.round_trips == 2 and call.graph_sent
    assert sorted(call.tensors_sent) == sorted(key(p) for p in model.parameters())
    assert current().backends.get("local").pid != pid


def test_training_steps_match_eager_with_dropout_and_an_optimizer_here() -> None:
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    twin = copy.deepcopy(model)
    compiled = torch.compile(model, backend=_remote())
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, twin)]
    for step in range(3):
        x = torch.randn(5, 6)
        for _net, run, optimizer in ((model, compiled, optimizers[0]), (twin, twin, optimizers[1])):
            torch.manual_seed(step)  # the same dropout mask: the worker draws from the notebook's generator
            loss = run(x).square().mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        torch.testing.assert_close(model.state_dict(), twin.state_dict())


def test_saved_activations_stay_remote_and_are_freed_after_backward() -> None:
    model = nn.Sequential(nn.Linear(64, 1024), nn.Tanh(), nn.Linear(1024, 1))
    backend = _remote()
    compiled = torch.compile(model, backend=backend)
    x = torch.randn(128, 64)
    hidden_bytes = 128 * 1024 * 4  # what a forward saves for the backward (tanh's output, at least)
    y = compiled(x)
    forward = backend.last_call
    y.sum().backward()
    backward = backend.last_call
    assert forward.received_bytes < hidden_bytes / 4 and backward.sent_bytes < hidden_bytes / 4
    assert backward.received_bytes >= sum(p.numel() * 4 for p in model.parameters())  # the gradients came back
    del y
    held = _remote_count()
    with torch.no_grad():
        compiled(x)  # tells the remote side what autograd let go of
    assert _remote_count() < held


def test_a_worker_replaced_between_forward_and_backward_is_an_error_saying_so() -> None:
    model = nn.Linear(4, 2)
    y = torch.compile(model, backend=_remote())(torch.randn(3, 4))
    _kill_worker()
    with pytest.raises(RemoteGraphError, match="the activations it saved for this backward went with it; "
                                               "run the forward again"):
        y.sum().backward()


def test_a_remote_failure_says_what_failed() -> None:
    def f(a):
        return torch.linalg.cholesky(a) * 2

    with pytest.raises(RemoteGraphError) as caught:
        torch.compile(f, backend=_remote())(-torch.eye(3))
    message = str(caught.value)
    assert message.startswith("running graph 0/0 (2 ops) (compiled there with eager) failed: ")
    assert "cholesky" in message and message.endswith("(on the local worker)")


@pytest.fixture
def broken_local_backend():
    """The session's local backend, replaced by one whose worker cannot start."""
    live = current().backends._live
    saved = live.pop("local", None)
    live["local"] = LocalBackend(python="/nonexistent/python")
    yield
    live.pop("local").close()
    if saved is not None:
        live["local"] = saved


def test_an_unreachable_backend_is_an_error_not_a_silent_local_run(broken_local_backend) -> None:
    with pytest.raises(RemoteGraphError, match=r"graph 0/0 \(1 op\) could not run on the local worker: "
                                               "could not start the local worker"):
        torch.compile(torch.sin, backend=_remote())(torch.randn(3))


def test_fallback_local_runs_here_and_warns_once(broken_local_backend) -> None:
    model = nn.Linear(4, 2).eval()
    compiled = torch.compile(model, backend=_remote(fallback="local"))
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        for _ in range(3):
            x = torch.randn(2, 4)
            torch.testing.assert_close(compiled(x), model(x))
    fallbacks = [w for w in caught if "fallback='local'" in str(w.message)]
    assert len(fallbacks) == 1 and "could not start the local worker" in str(fallbacks[0].message)


@pytest.mark.parametrize("options, message", [
    ({"backend": "gpu"}, "unknown backend 'gpu'"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"fallback": "yes"}, "fallback takes 'local' or None"),
    ({"compile_with": "inductr"}, "compile_with takes the name of a torch.compile backend"),
    ({"timeout": 0}, "timeout must be a positive number"),
])
def test_bad_options_are_one_sentence(options: dict, message: str) -> None:
    with pytest.raises(UsageProblem, match=message):
        modal_magic.remote(**options)


def test_the_registered_name_uses_the_session_defaults(shell) -> None:
    shell.run_line_magic("modal_config", "backend=local")
    try:
        model = nn.Linear(4, 4).eval()
        x = torch.randn(2, 4)
        with torch.no_grad():
            torch.testing.assert_close(torch.compile(model, backend="modal")(x), model(x))
    finally:
        shell.run_line_magic("modal_config", "backend=auto")
    assert current().backends.get("local").pid is not None


class _Scaled(nn.Module):
    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.scale = scale  # a plain attribute: a constant the traced graph reads with get_attr

    def forward(self, x):  # unannotated: fx cannot pickle a graph whose types are strings (PEP 563)
        return x * self.scale


@pytest.mark.parametrize("other, same", [
    (torch.tensor([[1.0, 2.0, 3.0, 4.0]]), True),
    (torch.tensor([[1.0, 2.0, 3.0, 5.0]]), False),   # another value
    (torch.tensor([[1.0, 2.0], [3.0, 4.0]]), False),  # the same bytes in another shape
])
def test_a_graph_is_known_by_its_code_and_constants(other: torch.Tensor, same: bool) -> None:
    from modal_magic.compile.graph import GraphPlan

    def plan(scale: torch.Tensor) -> GraphPlan:
        return GraphPlan.of(torch.fx.symbolic_trace(_Scaled(scale)), frozenset(), "")

    assert (plan(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).key == plan(other).key) is same
