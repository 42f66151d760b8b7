"""One FX graph dynamo (or AOTAutograd) captured, made ready to travel.

A ``GraphPlan`` is decided once per graph, when it is compiled: the graph's key
(a hash of its code and constants, so an identical graph — from a recompile, or
another model of the same shape — is the same remote graph), its pickled form
(a ``GraphModule`` pickles as its code plus its constants), and which of its
inputs are parameters or buffers, to be kept on the remote side, and which of
its outputs stay there too (a training forward's saved activations).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx

from ..errors import UsageProblem

__all__ = ["GraphPlan", "static_inputs"]


@dataclass(frozen=True)
class GraphPlan:
    key: str
    blob: bytes
    label: str
    resident: frozenset[int]
    """Positions of the graph's inputs that are parameters or buffers: they stay on the remote side."""
    kept: tuple[int, ...] = ()
    """Positions of the graph's outputs the remote side keeps (a training forward's saved activations);
    the notebook gets stand-ins for them, which the backward graph's call turns back into references."""

    @classmethod
    def of(cls, module: torch.fx.GraphModule, resident: frozenset[int], role: str,
           kept: tuple[int, ...] = ()) -> GraphPlan:
        if any(True for _ in module.parameters()):
            raise UsageProblem(f"this torch ({torch.__version__}) hands parameters to compile backends as graph "
                               "attributes; modal_magic.remote needs a torch that passes them as graph inputs "
                               "(2.5 or later)")
        travelling = torch.fx.GraphModule(module, module.graph)  # only what the code uses: no dynamo bookkeeping
        ops = sum(node.op.startswith("call_") for node in module.graph.nodes)
        compile_id = torch._guards.CompileContext.current_compile_id()
        label = f"graph {compile_id or '?'}{f' {role}' if role else ''} ({ops} op{'s' * (ops != 1)})"
        return cls(key=_key(travelling), blob=pickle.dumps(travelling, protocol=pickle.HIGHEST_PROTOCOL),
                   label=label, resident=resident, kept=kept)


def static_inputs(module: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> frozenset[int]:
    """Positions of a dynamo graph's parameters and buffers: the inputs dynamo marks static (read off modules)."""
    placeholders = [node for node in module.graph.nodes if node.op == "placeholder"]
    pairs = zip(placeholders, example_inputs, strict=False)  # one example per placeholder, as dynamo hands them
    return frozenset(position for position, (node, example) in enumerate(pairs)
                     if isinstance(example, torch.nn.Parameter)
                     or "_dynamo_static_input_type" in (node.meta.get("tensor_dict") or {}))


def _key(module: torch.fx.GraphModule) -> str:
    """The graph's code and every constant it holds, hashed: same code and constants, same remote graph."""
    digest = hashlib.sha256(module.code.encode())
    for name, value in sorted(_tensor_attributes(module), key=lambda item: item[0]):
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def _tensor_attributes(module: torch.fx.GraphModule) -> list[tuple[str, torch.Tensor]]:
    """Tensors the graph reads with ``get_attr`` that are plain attributes (dynamo's lifted constants)."""
    found: list[tuple[str, torch.Tensor]] = []
    for node in module.graph.nodes:
        if node.op == "get_attr":
            value = module
            for part in str(node.target).split("."):
                value = getattr(value, part)
            if isinstance(value, torch.Tensor):
                found.append((str(node.target), value))
    return found
