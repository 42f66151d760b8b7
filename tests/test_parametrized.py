"""A module with a registered parametrization crosses as itself (issue 25): torch refuses to pickle it ("only
supported through state_dict()"), so it used to stay behind as a remote handle (and before handles, arrive as its
plain class); now it arrives a ``ParametrizedLinear`` with the same parametrizations and ``original`` Parameters."""

from __future__ import annotations

import torch

from .conftest import run

SYMMETRIC = """
import torch
import torch.nn.utils.parametrize as P
class Symmetric(torch.nn.Module):
    def forward(self, X):
        return X.triu() + X.triu(1).transpose(0, 1)
"""


def remote(shell, body: str) -> None:
    result = run(shell, f"%%modal_gpu --backend local --quiet\n{body}")
    assert result.success, result.error_in_exec or result.error_before_exec


def test_a_module_parametrized_remotely_comes_back_parametrized(shell, capsys) -> None:
    run(shell, SYMMETRIC)
    remote(shell, "torch.manual_seed(0)\nlin = torch.nn.Linear(3, 3)\n"
                  "P.register_parametrization(lin, 'weight', Symmetric())\n"
                  "opt = torch.optim.SGD(lin.parameters(), lr=0.1)")
    assert "remote handle" not in capsys.readouterr().err
    lin, opt = shell.user_ns["lin"], shell.user_ns["opt"]
    assert type(lin).__name__ == "ParametrizedLinear" and isinstance(lin, torch.nn.Linear)
    assert torch.nn.utils.parametrize.is_parametrized(lin, "weight")
    assert type(lin.parametrizations.weight[0]).__name__ == "Symmetric"
    assert torch.equal(lin.weight, lin.weight.T) and not torch.equal(lin.parametrizations.weight.original,
                                                                      lin.parametrizations.weight.original.T)
    assert [name for name, _ in lin.named_parameters()] == ["bias", "parametrizations.weight.original"]
    assert opt.param_groups[0]["params"][1] is lin.parametrizations.weight.original  # the same Parameter


def test_a_parametrized_notebook_module_is_trained_remotely_in_place(shell) -> None:
    run(shell, SYMMETRIC + "torch.manual_seed(0)\nlin = torch.nn.Linear(3, 3)\n"
                           "P.register_parametrization(lin, 'weight', Symmetric())\n"
                           "opt = torch.optim.SGD(lin.parameters(), lr=0.1)\n"
                           "original = lin.parametrizations.weight.original\nbefore = original.detach().clone()")
    remote(shell, "for _ in range(3):\n    opt.zero_grad()\n    lin(torch.ones(2, 3)).pow(2).sum().backward()\n"
                  "    opt.step()\nkind = type(lin).__name__")
    ns = shell.user_ns
    assert ns["kind"] == "ParametrizedLinear"  # the worker got it parametrized
    assert ns["lin"].parametrizations.weight.original is ns["original"]  # changed in place, as locally
    assert not torch.equal(ns["original"], ns["before"])
    assert torch.equal(ns["lin"].weight, ns["lin"].weight.T)


def test_a_parametrized_module_a_later_cell_changes_stays_the_notebooks_object(shell, capsys) -> None:
    """Its rebuilt copy has a class of its own: the notebook's module took it for another type and was replaced
    (or, re-parametrized in place, became a ParametrizedParametrizedLinear)."""
    run(shell, SYMMETRIC)
    remote(shell, "lin = torch.nn.Linear(3, 3)\nP.register_parametrization(lin, 'weight', Symmetric())")
    lin = shell.user_ns["lin"]
    remote(shell, "class Halved(torch.nn.Module):\n    def forward(self, b):\n        return b / 2\n"
                  "P.register_parametrization(lin, 'bias', Halved())\nout = lin(torch.ones(1, 3))")
    assert "could not be updated in place" not in capsys.readouterr().err
    assert shell.user_ns["lin"] is lin and type(lin).__name__ == "ParametrizedLinear"
    assert torch.nn.utils.parametrize.is_parametrized(lin, "bias")
    assert torch.equal(lin.bias, lin.parametrizations.bias.original / 2)
    assert torch.allclose(shell.user_ns["out"], torch.ones(1, 3) @ lin.weight.T + lin.bias)
