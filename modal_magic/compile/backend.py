"""The dynamo backend: ``torch.compile(model, backend=modal_magic.remote(gpu="A10G"))``, or ``backend="modal"``.

Dynamo hands the backend each graph it captures (several when the code has
graph breaks); the backend returns a function that runs it in the session's
warm worker — a Modal container, or the local worker with ``backend="local"``
— where it is compiled with ``compile_with``. A graph autograd must
differentiate goes through AOTAutograd first (``training.py``): its forward and
backward graphs run there. Nothing is sent at compile time: the first call
takes the graph along.

A remote failure is an error naming what failed. ``fallback="local"`` is the
opt-in to run a failed call's graph here instead, with one warning per backend.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx

from ..errors import UsageProblem
from ..notebook import options as settings
from ..notebook.driver import CellOptions
from ..notebook.extension import current
from .channel import CallStats, Place
from .graph import GraphPlan, static_inputs
from .protocol import AUTO, EAGER, RemoteGraphError
from .training import needs_autograd, training_graphs

__all__ = ["RemoteCompiler", "remote", "session_backend"]



class RemoteCompiler:
    """A dynamo backend whose graphs run remotely; ``last_call`` says what the latest call cost."""

    def __init__(self, options: CellOptions, compile_with: str, fallback: str | None) -> None:
        places = current().compile_places  # one record per place, shared by every compiler using it
        self._place: Place = places.setdefault((options, compile_with), Place(options, compile_with))
        self._fallback = fallback
        self._warned = False

    @property
    def last_call(self) -> CallStats | None:
        return self._place.last_call

    def __call__(self, module: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable[..., Any]:
        if needs_autograd(example_inputs):
            return training_graphs(module, example_inputs, self._runner)
        return self._runner(module, GraphPlan.of(module, static_inputs(module, example_inputs), ""))

    def _runner(self, module: torch.fx.GraphModule, plan: GraphPlan) -> Callable[..., tuple[Any, ...]]:
        """What runs ``plan``'s graph: remotely, or (``fallback="local"``, after a failure) here."""
        def run(*args: Any) -> tuple[Any, ...]:
            try:
                return self._place.call(plan, args)
            except RemoteGraphError as exc:
                if self._fallback is None or any(self._place.stands_in(arg) for arg in args):
                    raise  # a backward whose saved activations are there cannot run here
                self._warn_once(exc)
                return tuple(module(*args))

        return run

    def _warn_once(self, exc: RemoteGraphError) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(f"modal_magic.remote: {exc}; running it here instead (fallback='local'; "
                          "further fallbacks of this backend are not announced)", RuntimeWarning, stacklevel=2)


def remote(*, backend: str | None = None, gpu: str | None = None, device: str | None = None,
           timeout: float | None = None, cpu: float | None = None, memory: int | None = None,
           pip: Sequence[str] = (), compile_with: str = AUTO, fallback: str | None = None) -> RemoteCompiler:
    """A ``torch.compile`` backend running each captured graph in the session's warm remote worker.

    ``backend``, ``gpu``, ``device``, ``timeout``, ``cpu``, ``memory`` and ``pip``
    mean what the magic's flags mean (unset: the session defaults of
    ``%modal_config``); ``compile_with`` is the dynamo backend the remote side
    compiles each graph with (``"auto"``: inductor on a GPU, the graph as it is
    elsewhere); ``fallback="local"`` runs a graph here when the remote call fails,
    warning once, instead of raising.
    """
    if fallback not in (None, "local"):
        raise UsageProblem(f"fallback takes 'local' or None, not {fallback!r}")
    _check_compiler(compile_with)
    given = {"backend": backend, "gpu": gpu, "device": device, "timeout": timeout, "cpu": cpu, "memory": memory,
             "pip": pip}
    options = CellOptions(**settings.for_cell(given, current().defaults, read=True))
    return RemoteCompiler(options, compile_with, fallback)


def session_backend(module: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable[..., Any]:
    """``torch.compile(model, backend="modal")``: ``remote()`` with the session's defaults as they are now."""
    return remote()(module, example_inputs)


def _check_compiler(name: Any) -> None:
    known = [known for known in torch._dynamo.list_backends(exclude_tags=()) if known != "modal"]  # not itself
    if not isinstance(name, str) or name not in (AUTO, EAGER, *known):
        raise UsageProblem(f"compile_with takes the name of a torch.compile backend ({AUTO!r}, "
                           f"{', '.join(map(repr, known))}), not {name!r}")


def _register() -> None:
    """Make ``backend="modal"`` known to dynamo, unless the package's entry point already does."""
    if "modal" not in torch._dynamo.list_backends(exclude_tags=()):
        torch._dynamo.register_backend(session_backend, name="modal")


_register()
