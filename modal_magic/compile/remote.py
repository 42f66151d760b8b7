"""The remote side of ``torch.compile(..., backend=modal_magic.remote())``: graph cache, tensor store, execution.

This module runs in the session's worker process (the local backend's worker,
or the one a Modal container keeps warm), called by a one-line cell the
notebook sends (``channel.py``). Its caches are module-level state, so they
live exactly as long as that process: a recycled worker starts empty, and
``execute`` then says what it lacks instead of guessing — the notebook sends it
again. Nothing here trusts the notebook's belief about what is cached.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable

import torch
import torch.fx

from .protocol import AUTO, EAGER, Call, RemoteGraphError, Reply

__all__ = ["execute"]

_graphs: dict[str, Callable[..., Any]] = {}
"""Compiled graphs by key (a hash of their code and constants): a graph travels once per process."""
_tensors: dict[str, torch.Tensor] = {}
"""Parameters and buffers by key, on this side's device: a call sends only activations."""


def execute(call: Call) -> Reply:
    """Run one graph call; a ``Reply`` listing what is missing when this process lacks the graph or a tensor."""
    for key in call.drop:
        _tensors.pop(key, None)
    for key, tensor in call.send:
        _tensors[key] = tensor.detach()
    graph = _graphs.get(call.graph)
    if graph is None and call.blob is not None:
        graph = _graphs[call.graph] = _load(call)
    missing = tuple(key for _, key in call.resident if key not in _tensors)
    if graph is None or missing:
        return Reply(outputs=None, missing_graph=graph is None, missing=missing)

    args = list(call.args)
    for position, key in call.resident:
        args[position] = _tensors[key]
    versions = {key: _tensors[key]._version for _, key in call.resident}
    try:
        with torch.no_grad():  # inference: the notebook's autograd cannot reach a graph recorded here
            outputs = graph(*args)
    except Exception as exc:
        raise RemoteGraphError(f"running {call.label} (compiled there with {_backend_name(call.compile_with)}) "
                               f"failed: {type(exc).__name__}: {exc}") from exc
    sent = {key for key, _ in call.send}
    mutated = tuple((key, None if key in sent else _tensors[key])
                    for key in dict.fromkeys(key for _, key in call.resident)
                    if _tensors[key]._version != versions[key])
    return Reply(outputs=tuple(outputs), mutated=mutated)


def _backend_name(choice: str) -> str:
    """The dynamo backend ``choice`` means here: ``AUTO`` is inductor on a GPU, the graph as it is elsewhere."""
    if choice != AUTO:
        return choice
    return "inductor" if torch.cuda.is_available() else EAGER


def _load(call: Call) -> Callable[..., Any]:
    """Unpickle the graph onto this side's device and wrap it in the chosen compiler (which compiles on first run)."""
    backend = _backend_name(call.compile_with)
    try:
        module = pickle.loads(call.blob)  # type: ignore[arg-type]
        if torch.cuda.is_available():  # inputs arrive on the GPU; the graph was traced on the notebook's CPU
            _onto_gpu(module)
        return module if backend == EAGER else torch.compile(module, backend=backend)
    except Exception as exc:
        raise RemoteGraphError(f"loading {call.label} there for {backend} failed: {type(exc).__name__}: {exc}") from exc


def _onto_gpu(module: torch.fx.GraphModule) -> None:
    """Move the graph's constants to the GPU and make the CPU devices its code names (``torch.zeros(…,
    device=cpu)``, traced on the notebook's CPU) the GPU, so what it creates meets its inputs there."""
    module.to("cuda")
    gpu = torch.device("cuda")

    def moved(value: Any) -> Any:
        if isinstance(value, torch.device) and value.type == "cpu":
            return gpu
        return "cuda" if isinstance(value, str) and value == "cpu" else value

    for node in module.graph.nodes:
        node.args = torch.fx.node.map_aggregate(node.args, moved)
        node.kwargs = torch.fx.node.map_aggregate(node.kwargs, moved)
    module.recompile()
