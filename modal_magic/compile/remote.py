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

_graphs: dict[tuple[str, str], Callable[..., Any]] = {}
"""Compiled graphs by key (a hash of their code and constants) and compiler: a graph travels once per process."""
_tensors: dict[str, torch.Tensor] = {}
"""Parameters and buffers by key, on this side's device: a call sends only activations."""
_buffers: set[str] = set()
"""Keys of the buffers among them: compared by content after a run (see ``_changed``)."""
_saved: set[str] = set()
"""Keys of the saved activations among them (kept from a training forward): the notebook has only stand-ins."""


def execute(call: Call) -> Reply:
    """Run one graph call; a ``Reply`` listing what is missing when this process lacks the graph or a tensor."""
    for key in call.drop:
        _tensors.pop(key, None)
        _buffers.discard(key)
        _saved.discard(key)
    for key, tensor, is_parameter in call.send:
        _tensors[key] = tensor
        if is_parameter:
            _buffers.discard(key)
        else:
            _buffers.add(key)
    graph = _graphs.get((call.graph, call.compile_with))
    if graph is None and call.blob is not None:
        graph = _graphs[call.graph, call.compile_with] = _load(call)
    missing = tuple(key for _, key in call.resident if key not in _tensors)
    if graph is None or missing:
        return Reply(outputs=None, missing_graph=graph is None, missing=missing)

    args = list(call.args)
    resident = dict(call.resident)  # position → key
    for position, key in resident.items():
        args[position] = _tensors[key]
    before = {position: _snapshot(arg, resident.get(position) in _buffers) for position, arg in enumerate(args)
              if isinstance(arg, torch.Tensor) and resident.get(position) not in _saved}
    try:
        # An inference graph, or one of AOTAutograd's forward and backward graphs: none needs autograd here.
        with torch.no_grad():
            outputs = graph(*args)
    except Exception as exc:
        raise RemoteGraphError(f"running {call.label} (compiled there with {_backend_name(call.compile_with)}) "
                               f"failed: {type(exc).__name__}: {exc}") from exc
    outputs = list(outputs)
    for position, key in call.keep:
        _tensors[key], outputs[position] = outputs[position], None
        _buffers.discard(key)
        _saved.add(key)
    # Copies: a tensor that arrived with this call would otherwise go back as a reference to the notebook's own.
    return Reply(outputs=tuple(outputs), mutated=tuple((position, args[position].clone())
                                                       for position, seen in before.items()
                                                       if _changed(args[position], seen)))


def _snapshot(tensor: torch.Tensor, by_content: bool) -> tuple[int, torch.Tensor | None]:
    """An input before a run: its version, and for a buffer a copy of its content.

    The version counter catches in-place operations, but not all of them: batch
    norm updates its running statistics without bumping it. Buffers are small
    as a rule (statistics, position ids), so they are also compared by content.
    """
    return tensor._version, tensor.clone() if by_content else None


def _changed(tensor: torch.Tensor, before: tuple[int, torch.Tensor | None]) -> bool:
    version, content = before
    return tensor._version != version or (content is not None and not torch.equal(content, tensor))


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
        # ``forward``, not the module: a GraphModule's own call prints a traceback to stderr before raising.
        return module.forward if backend == EAGER else torch.compile(module, backend=backend)
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
