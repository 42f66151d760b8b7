"""Tensors, models and unpicklable values through the real magic and worker."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from .conftest import run


def test_tensors_come_back_as_cpu_tensors_with_aliasing(shell) -> None:
    shell.user_ns["x"] = torch.arange(12.0)
    result = run(shell, "%%modal_gpu --device cpu\ny = x * 2\nv = y[3:6]\nsame = y")
    assert result.success
    y, v = shell.user_ns["y"], shell.user_ns["v"]
    assert y.device.type == "cpu" and torch.equal(y, torch.arange(12.0) * 2)
    assert v.untyped_storage().data_ptr() == y.untyped_storage().data_ptr()  # still a view of y
    assert shell.user_ns["same"] is y                                         # still one object


def test_model_trained_remotely_keeps_optimizer_links(shell) -> None:
    run(shell, "import torch\ntorch.manual_seed(0)\nmodel = torch.nn.Linear(4, 1)\n"
               "data = torch.randn(64, 4)\ntarget = data.sum(1, keepdim=True)")
    # `model` is changed in place, not rebound: --out brings it back (in-place updates of the
    # notebook's own object are issue 6's work).
    result = run(shell, "%%modal_gpu --out model,opt\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
                        "for _ in range(50):\n    opt.zero_grad()\n"
                        "    loss = ((model(data) - target) ** 2).mean()\n    loss.backward()\n    opt.step()\n"
                        "float(loss)")
    assert result.success and result.result < 0.05
    model, opt = shell.user_ns["model"], shell.user_ns["opt"]
    assert opt.param_groups[0]["params"][0] is model.weight  # the optimizer steps *this* model
    assert torch.allclose(model(torch.ones(1, 4)), torch.tensor([[4.0]]), atol=0.3)  # and it learned
    assert model.weight.grad is not None                    # .grad survived the trip


def test_unpicklable_output_stays_remote_as_a_handle_with_a_line(shell, capsys) -> None:
    result = run(shell, "%%modal_gpu\ngen = (i for i in range(3))\nfine = [1, 2]")
    assert result.success
    assert shell.user_ns["fine"] == [1, 2] and type(shell.user_ns["gen"]).__name__ == "RemoteHandle"
    assert "modal_gpu: 'gen' stays where the cell ran, as a remote handle: it could not come back (TypeError" \
        in capsys.readouterr().err


def test_unpicklable_last_value_is_shown_by_its_repr(shell) -> None:
    result = run(shell, "%%modal_gpu\n(i for i in range(3))")
    assert result.success and repr(result.result).startswith("<generator object")


def test_non_leaf_result_of_a_fresh_cell_arrives_detached_with_a_note(shell, capsys) -> None:
    """Without the resident session (``--fresh``) the graph has nowhere to stay (see test_resident for with)."""
    shell.user_ns["w"] = torch.ones(3, requires_grad=True)
    assert run(shell, "%%modal_gpu --fresh\nz = w * 2").success
    assert not shell.user_ns["z"].requires_grad
    assert "z: a non-leaf tensor" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_device_cuda_on_a_cpu_machine_is_refused_before_running(shell, capsys) -> None:
    run(shell, "before = 'same'")
    result = run(shell, "%%modal_gpu --device cuda\nbefore = 'changed'")
    assert not result.success
    assert "--device cuda, but this machine has no CUDA device" in capsys.readouterr().err
    assert shell.user_ns["before"] == "same"


def test_importing_numpy_or_a_class_with_shape_and_dtype_is_summarised_by_kind(shell, capsys) -> None:
    """`np` has `shape` and `dtype` (functions) and `Tensor` has them (descriptors): neither is an array."""
    result = run(shell, "%%modal_gpu\nimport numpy as np\nfrom torch import Tensor\na = np.zeros((2, 3))")
    assert result.success, result.error_in_exec
    assert shell.user_ns["np"].__name__ == "numpy" and shell.user_ns["Tensor"] is torch.Tensor
    summary = capsys.readouterr().out
    assert "a ndarray[2, 3] float64" in summary and "1 module (np)" in summary and "1 class (Tensor)" in summary


@pytest.mark.parametrize("out", ["", " --out u,a,t,n,half"], ids=["arrays first", "tensors first"])
def test_memory_shared_by_a_tensor_and_an_array_stays_shared(shell, out: str) -> None:
    """`t.numpy()` and `torch.from_numpy(a)` share memory; after the trip a later `add_` still shows in both."""
    cell = ("import numpy as np, torch\na = np.zeros(3, dtype=np.float32)\nu = torch.from_numpy(a)\n"
            "t = torch.zeros(4)\nn = t.numpy()\nhalf = t[2:].numpy()[::-1]")
    assert run(shell, f"%%modal_gpu{out}\n{cell}").success
    assert run(shell, "t.add_(1)\nu.add_(2)").success
    ns = shell.user_ns
    assert ns["n"].tolist() == [1, 1, 1, 1] and ns["half"].tolist() == [1, 1] and ns["a"].tolist() == [2, 2, 2]


def test_view_made_remotely_of_a_notebook_tensor_is_over_the_notebooks_memory(shell) -> None:
    base = shell.user_ns["base"] = torch.arange(12.0)
    assert run(shell, "%%modal_gpu\nv = base.view(3, 4)\ncol = v.t()[1]\nn = base.numpy()[2:]").success
    v, col, n = (shell.user_ns[name] for name in ("v", "col", "n"))
    assert v.data_ptr() == base.data_ptr() and col.storage_offset() == 1 and col.stride() == (4,)
    base.add_(100)  # later in-place changes show through every view, as they would locally
    assert v[1, 0].item() == 104 and col[1].item() == 105 and n[0] == 102


def test_write_through_a_remote_view_of_a_notebook_tensor_reaches_it(shell) -> None:
    base = shell.user_ns["base"] = torch.zeros(8)
    assert run(shell, "%%modal_gpu\nwindow = base[4:8]\nwindow.fill_(1)").success
    assert base.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert shell.user_ns["window"].data_ptr() == base.data_ptr() + 16


def test_view_made_remotely_of_a_notebook_array_is_over_its_memory(shell) -> None:
    a = shell.user_ns["a"] = np.arange(6)
    assert run(shell, "%%modal_gpu\nevens = a[::2]\nm = a.reshape(2, 3)\nevens[:] = 0").success
    evens, m = shell.user_ns["evens"], shell.user_ns["m"]
    assert a.tolist() == [0, 1, 0, 3, 0, 5] and np.shares_memory(evens, a) and np.shares_memory(m, a)
    m[0, 1] = 7
    assert a[1] == 7 and evens.strides == (16,)


def test_random_generators_advanced_remotely_bring_their_state_back(shell) -> None:
    import random

    made = "gen = torch.Generator().manual_seed(1)\nrng = np.random.default_rng(7)\npy = random.Random(5)"
    draw = "p = torch.randperm(6, generator=gen)\nd = rng.integers(0, 10, size=5)\nf = py.random()"
    local: dict = {"torch": torch, "np": np, "random": random}
    exec(made, local)
    exec(draw, local)
    shell.user_ns.update(torch=torch, np=np, random=random)
    run(shell, made)
    gen = shell.user_ns["gen"]
    assert run(shell, "%%modal_gpu\n" + draw).success
    assert shell.user_ns["gen"] is gen  # the notebook's own generator, advanced
    assert torch.equal(torch.randperm(6, generator=gen), torch.randperm(6, generator=local["gen"]))
    assert shell.user_ns["rng"].integers(0, 10, 3).tolist() == local["rng"].integers(0, 10, 3).tolist()
    assert shell.user_ns["py"].random() == local["py"].random()


def test_batchnorm_running_statistics_updated_remotely_come_back(shell) -> None:
    torch.manual_seed(5)
    bn, x = torch.nn.BatchNorm1d(3), torch.randn(16, 3) * 4 + 2
    local = torch.nn.BatchNorm1d(3)
    local(x)
    running_mean = bn.running_mean
    bn.eval()
    shell.user_ns.update(bn=bn, x=x)
    assert run(shell, "%%modal_gpu\nbn.train()\n_ = bn(x)").success
    assert bn.running_mean is running_mean  # updated in place: written from C++, its version never moved
    assert torch.equal(bn.running_mean, local.running_mean) and torch.equal(bn.running_var, local.running_var)
    assert bn.num_batches_tracked.item() == 1


def test_in_place_changes_that_cannot_come_back_are_reported(shell, capsys) -> None:
    import types

    box = shell.user_ns["box"] = types.SimpleNamespace(n=1)
    assert run(shell, "%%modal_gpu\nbox.n = 2\nbox.gen = (i for i in range(3))").success
    assert box.n == 1  # the update could not travel: the notebook's object is as it was, and the user is told
    assert "changed in place in the notebook's objects was not brought back: TypeError" in capsys.readouterr().err
