"""The remote side of ``torch.compile(..., backend=modal_magic.remote())``: one graph call's execution.

This module runs in the session's worker process (the local backend's worker,
or the one a Modal container keeps warm), called by a one-line cell the
notebook sends (``channel.py``). What it keeps between calls (graphs, parameters,
buffers, saved activations) is the compile namespace of the worker's store
(``worker/store.py``), which lives exactly as long as that process: a recycled
worker starts empty, and ``execute`` then says what it lacks instead of
guessing — the notebook sends it again. Nothing here trusts the notebook's
belief about what is held.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import torch
import torch.fx

from ..worker.store import this_process
from .protocol import AUTO, EAGER, Call, RemoteGraphError, Reply

__all__ = ["execute"]


def execute(call: Call) -> Reply:
    """Run one graph call; a ``Reply`` listing what is missing when this process lacks the graph or a tensor."""
    held = this_process().compiled
    for key in call.drop:
        held.drop(key)
    for key, tensor, is_parameter in call.send:
        held.hold(key, tensor, "parameter" if is_parameter else "buffer")
    graph = held.graphs.get((call.graph, call.compile_with))
    if graph is None and call.blob is not None:
        graph = held.graphs[call.graph, call.compile_with] = _load(call)
    args = list(call.args)
    resident = dict(call.resident)  # position → key
    for position, key in resident.items():
        args[position] = held.tensor(key)
    missing = tuple(key for position, key in call.resident if args[position] is None)
    if graph is None or missing:
        return Reply(outputs=None, missing_graph=graph is None, missing=missing)

    before = {position: _snapshot(arg, held.kind(resident.get(position)) == "buffer")
              for position, arg in enumerate(args)
              if isinstance(arg, torch.Tensor) and held.kind(resident.get(position)) != "saved"}
    try:
        # An inference graph, or one of AOTAutograd's forward and backward graphs: none needs autograd here.
        with torch.no_grad():
            outputs = graph(*args)
    except Exception as exc:
        raise RemoteGraphError(f"running {call.label} (compiled there with {_backend_name(call.compile_with)}) "
                               f"failed: {type(exc).__name__}: {exc}") from exc
    outputs = list(outputs)
    for position, key in call.keep:
        held.hold(key, outputs[position], "saved")
        outputs[position] = None
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
