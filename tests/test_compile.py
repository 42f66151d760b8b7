"""torch.compile(model, backend=modal_magic.remote(backend="local")): graphs run in the real local worker."""

from __future__ import annotations

import os
import signal
import time
import warnings

import pytest
import torch
from torch import nn

import modal_magic
from modal_magic.backends import LocalBackend, _live, get_backend
from modal_magic.compile import RemoteGraphError
from modal_magic.compile.residency import key
from modal_magic.errors import UsageProblem


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    torch.manual_seed(0)
    yield
    torch._dynamo.reset()


def _remote(**options):
    return modal_magic.remote(backend="local", **options)


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
    from modal_magic.driver import CellOptions, run_cell

    def remote_count() -> int:
        namespace: dict = {}
        run_cell("from modal_magic.compile import remote\nheld = len(remote._tensors)", namespace,
                 CellOptions(backend="local", quiet=True), on_event=lambda event: None)
        return namespace["held"]

    backend = _remote()
    x = torch.randn(1, 3)
    with torch.no_grad():
        torch.compile(nn.Linear(3, 3), backend=backend)(x)
        before = remote_count()
        torch._dynamo.reset()  # dynamo's cache holds the model too
        other = torch.compile(nn.Linear(3, 3, bias=False), backend=backend)
        other(x)  # the first model is gone: this call tells the remote side
    assert remote_count() == before - 2 + 1


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
        pid = get_backend("local").pid
        os.kill(pid, signal.SIGKILL)
        while get_backend("local").pid is not None:
            time.sleep(0.05)
        model[0].weight.mul_(2)  # changed too, while the worker was down
        torch.testing.assert_close(compiled(x), model(x))
    call = backend.last_call
    assert call.round_trips == 2 and call.graph_sent
    assert sorted(call.tensors_sent) == sorted(key(p) for p in model.parameters())
    assert get_backend("local").pid != pid


def test_backward_through_the_compiled_model_says_it_is_not_supported() -> None:
    model = nn.Linear(4, 2)
    out = torch.compile(model, backend=_remote())(torch.randn(3, 4))
    assert out.requires_grad
    with pytest.raises(RuntimeError, match="backward through a graph compiled with modal_magic.remote is not supported"):
        out.sum().backward()


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
    saved = _live.pop("local", None)
    _live["local"] = LocalBackend(python="/nonexistent/python")
    yield
    _live.pop("local").close()
    if saved is not None:
        _live["local"] = saved


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
    assert get_backend("local").pid is not None
