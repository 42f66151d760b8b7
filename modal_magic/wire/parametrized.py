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

__all__ = ["alike", "give_properties", "is_parametrized", "reduce_parametrized"]


def is_parametrized(obj: Any) -> bool:
    """Whether ``obj`` is a module with registered parametrizations (cheap: read for every object pickled)."""
    return isinstance(obj, torch.nn.Module) and "parametrizations" in obj.__dict__.get("_modules", ())


def reduce_parametrized(module: torch.nn.Module) -> tuple:
    """``module`` as its class before parametrization, parametrized again on load (``_parametrized``) over the
    tensor names it had, then given its state (pickle's own ``__setstate__`` step, on the object it made: a state
    setter would be handed the object by reference, which the notebook's references resolve to its own module)."""
    names = tuple(module.__dict__["_modules"]["parametrizations"].keys())
    return _parametrized, (type(module).__bases__[0], names), dict(module.__dict__)


def _parametrized(plain: type[torch.nn.Module], names: tuple[str, ...]) -> torch.nn.Module:
    """A bare ``plain`` module made parametrized at ``names``, its state still to come: torch's two steps of
    ``register_parametrization`` (private, but what it does since torch 1.9) without re-running it."""
    module = plain.__new__(plain)
    parametrize._inject_new_class(module)
    for name in names:
        parametrize._inject_property(module, name)
    return module


def give_properties(module: torch.nn.Module) -> None:
    """A property on ``module``'s (parametrized) class for each tensor its ``parametrizations`` hold that has none:
    the notebook's module, after taking the state of a cell that parametrized another of its tensors."""
    parametrizations: torch.nn.ModuleDict = module.__dict__["_modules"]["parametrizations"]
    for name in parametrizations:  # the tensor names
        if not isinstance(type(module).__dict__.get(name), property):
            parametrize._inject_property(module, name)


def alike(local: Any, new: Any) -> bool:
    """Whether ``new`` is ``local`` parametrized anew: each rebuild makes its own class over the same plain one, so
    the notebook's module can still take ``new``'s state in place (``updates``)."""
    return is_parametrized(local) and is_parametrized(new) and type(local).__bases__ == type(new).__bases__
