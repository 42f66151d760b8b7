"""One FX graph dynamo captured, made ready to travel, and the callable dynamo runs in its place.

``GraphPlan`` is decided once per graph, when dynamo compiles: the graph's key
(a hash of its code and constants, so an identical graph — from a recompile, or
another model of the same shape — is the same remote graph), its pickled form
(a ``GraphModule`` pickles as its code plus its constants), and which of its
inputs are parameters or buffers, to be kept on the remote side.
``RemoteGraph`` is what dynamo calls on every run: it hands the call to its
place and, when autograd would record the call, makes backward say it cannot.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.fx

from ..errors import UsageProblem

__all__ = ["GraphPlan", "RemoteGraph", "NO_BACKWARD"]

NO_BACKWARD = ("backward through a graph compiled with modal_magic.remote is not supported: it runs inference only "
               "(call the compiled model under torch.no_grad(), or compile with a local backend to train)")


@dataclass(frozen=True)
class GraphPlan:
    key: str
    blob: bytes
    label: str
    resident: frozenset[int]
    """Positions of the graph's inputs that are parameters or buffers (dynamo's static inputs)."""

    @classmethod
    def of(cls, module: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> "GraphPlan":
        if any(True for _ in module.parameters()):
            raise UsageProblem(f"this torch ({torch.__version__}) hands parameters to compile backends as graph "
                               "attributes; modal_magic.remote needs a torch that passes them as graph inputs (2.5 or later)")
        travelling = torch.fx.GraphModule(module, module.graph)  # only what the code uses: no dynamo bookkeeping
        placeholders = [node for node in module.graph.nodes if node.op == "placeholder"]
        resident = frozenset(position for position, (node, example) in enumerate(zip(placeholders, example_inputs))
                             if _is_parameter_or_buffer(node, example))
        ops = sum(node.op.startswith("call_") for node in module.graph.nodes)
        compile_id = module.meta.get("dynamo_compile_id")
        label = f"graph {compile_id or '?'} ({ops} op{'s' * (ops != 1)})"
        return cls(key=_key(travelling), blob=pickle.dumps(travelling, protocol=pickle.HIGHEST_PROTOCOL),
                   label=label, resident=resident)


def _is_parameter_or_buffer(node: torch.fx.Node, example: Any) -> bool:
    """Dynamo marks the inputs it read off modules (parameters, buffers) as static; they stay remote."""
    return isinstance(example, torch.nn.Parameter) or \
        "_dynamo_static_input_type" in (node.meta.get("tensor_dict") or {})


def _key(module: torch.fx.GraphModule) -> str:
    """The graph's code and every constant it holds, hashed: same code and constants, same remote graph."""
    digest = hashlib.sha256(module.code.encode())
    for name, value in sorted(_tensor_attributes(module), key=lambda item: item[0]):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _tensor_attributes(module: torch.fx.GraphModule) -> list[tuple[str, torch.Tensor]]:
    """Tensors the graph reads with ``get_attr`` that are plain attributes (dynamo's lifted constants)."""
    found = []
    for node in module.graph.nodes:
        if node.op == "get_attr":
            value = module
            for part in str(node.target).split("."):
                value = getattr(value, part)
            if isinstance(value, torch.Tensor):
                found.append((str(node.target), value))
    return found


class _ForwardOnly(torch.autograd.Function):
    """Gives the remote outputs a ``grad_fn`` whose backward refuses in one sentence (no silent zero grads)."""

    @staticmethod
    def forward(ctx: Any, run: Callable[..., tuple[Any, ...]], *args: Any) -> tuple[Any, ...]:
        outputs = run(*args)
        ctx.mark_non_differentiable(*(out for out in outputs
                                      if isinstance(out, torch.Tensor) and not out.is_floating_point()
                                      and not out.is_complex()))
        return tuple(outputs)

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise RuntimeError(NO_BACKWARD)


class RemoteGraph:
    """What dynamo calls in place of one captured graph."""

    def __init__(self, plan: GraphPlan, run: Callable[..., tuple[Any, ...]]) -> None:
        self.plan = plan
        self._run = run

    def __call__(self, *args: Any) -> tuple[Any, ...]:
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            return _ForwardOnly.apply(self._run, *args)
        return self._run(*args)
