"""A notebook copy of a tensor whose autograd graph stayed in the remote session.

A non-leaf tensor made by a remote cell (``loss = model(x).sum()``) keeps its
graph there (``resident``); the notebook gets its value. For the copy to look as
a local one would — ``requires_grad`` true, not a leaf, ``grad_fn`` named as the
remote one (``<AddBackward0>`` in its repr) — it is the output of a small
autograd function whose backward says, in one sentence, where the graph is. A
``backward()`` in a later ``%%modal_gpu`` cell finds the real graph.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

__all__ = ["stand_in", "MESSAGE"]

MESSAGE = ("this tensor's autograd graph lives in the remote session (a %%modal_gpu cell made it): "
           "call backward() in a %%modal_gpu cell, where the graph is")


class _RemoteGraph(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, anchor: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return value.detach()  # the same memory, not a view: as a fresh local result

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        raise RuntimeError(MESSAGE)


@functools.cache
def _function_named(grad_fn: str) -> type[_RemoteGraph]:
    """A subclass of ``_RemoteGraph`` whose backward node's type is called ``grad_fn``, as the remote one is."""
    function = type(f"_RemoteGraph_{grad_fn}", (_RemoteGraph,), {})
    node = function._backward_cls  # type: ignore[attr-defined]  # made by torch's FunctionMeta, not in its stubs
    node.__name__ = node.__qualname__ = grad_fn
    node.__module__ = "builtins"  # its repr is <AddBackward0 object at …>, as torch's own nodes'
    return function


def stand_in(value: torch.Tensor, grad_fn: str) -> torch.Tensor:
    """``value`` as a non-leaf tensor whose ``grad_fn`` is named ``grad_fn`` (and raises ``MESSAGE`` when run)."""
    with torch.enable_grad():
        tensor: torch.Tensor = _function_named(grad_fn).apply(torch.zeros((), requires_grad=True), value)
        return tensor
