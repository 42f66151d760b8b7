"""Modules with registered parametrizations (``torch.nn.utils.parametrize``) travel as themselves.

``register_parametrization(lin, "weight", Symmetric())`` swaps ``lin``'s class for a class made on the spot
(``ParametrizedLinear``, a subclass of ``Linear`` with a ``weight`` property) whose ``__getstate__`` refuses
pickling ("only supported through state_dict()"). Such a module therefore could not leave the cell that made it.

What makes it parametrized is all in its ``__dict__``: the ``parametrizations`` ``ModuleDict`` holds, per tensor
name, the parametrization modules and the ``original`` Parameter(s). So it goes as its plain class and that
``__dict__`` (pickled as any state, so ``original`` keeps its identity with the optimizer's references to it),
and is rebuilt by torch's own two steps of ``register_parametrization``, without re-running it (which would call
``right_inverse`` on values that are already the originals and make new ``original`` Parameters): the class
injection, then one property per tensor name. The result is a ``ParametrizedLinear`` again,
``is_parametrized`` and with the same parametrizations, as the cell left it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.utils.parametrize as parametrize

__all__ = ["is_parametrized", "reduce_parametrized"]


def is_parametrized(obj: Any) -> bool:
    """Whether ``obj`` is a module with registered parametrizations (cheap: read for every object pickled)."""
    return isinstance(obj, torch.nn.Module) and "parametrizations" in obj.__dict__.get("_modules", ())


def reduce_parametrized(module: torch.nn.Module) -> tuple:
    """``module`` as its class before parametrization and its state, rebuilt by ``_parametrize`` on load."""
    plain = type(module).__bases__[0]
    return plain.__new__, (plain,), dict(module.__dict__), None, None, _parametrize


def _parametrize(module: torch.nn.Module, state: dict[str, Any]) -> None:
    """Set ``module``'s state, then make it parametrized over the ``parametrizations`` that state holds."""
    module.__setstate__(state)
    parametrize._inject_new_class(module)  # private, but what register_parametrization does (torch 1.9 on)
    parametrizations: torch.nn.ModuleDict = state["_modules"]["parametrizations"]
    for name in parametrizations:  # the tensor names
        parametrize._inject_property(module, name)
