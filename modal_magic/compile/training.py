"""Training through a remote graph: AOTAutograd splits it into a forward and a backward graph, both run remotely.

Dynamo hands over a graph that autograd must differentiate when grad mode is
on and an input requires grad. AOTAutograd traces its joint forward and
backward and partitions them: the forward returns the outputs plus what the
backward needs (saved activations), the backward takes those plus the output
gradients. Both travel like any graph. The saved activations stay on the
remote side: the forward's call keeps them there and hands autograd stand-ins
(empty tensors) to save; the backward's call names them by the stand-ins' keys.
When autograd frees a stand-in (after backward, or with the outputs), the
remote side is told to free what it stands for.

Gradients come back to the notebook, where the optimizer steps the notebook's
parameters; the changed parameters travel again with the next forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx
from torch._functorch.aot_autograd import aot_module_simplified, make_boxed_func
from torch._functorch.partitioners import default_partition

from .graph import GraphPlan, static_inputs

__all__ = ["needs_autograd", "training_graphs"]

_KEPT = "modal_magic_kept"  # forward graph meta: output positions of the saved activations
MakeRun = Callable[[torch.fx.GraphModule, GraphPlan], Callable[..., Any]]


def needs_autograd(example_inputs: Sequence[Any]) -> bool:
    """Dynamo compiled the graph with grad mode on and an input that requires grad (it guards on both)."""
    return torch.is_grad_enabled() and any(isinstance(x, torch.Tensor) and x.requires_grad for x in example_inputs)


def training_graphs(module: torch.fx.GraphModule, example_inputs: Sequence[Any],
                    make_run: MakeRun) -> Callable[..., Any]:
    """The callable dynamo runs: AOTAutograd's, with both graphs run remotely by what ``make_run`` returns."""
    parameters = static_inputs(module, example_inputs)
    arity = len(example_inputs)

    # The compilers' parameters are named as AOTAutograd's AOTDispatchCompiler protocol names them.
    def forward(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable[..., Any]:
        # The forward's inputs are dynamo's, in order (parameters are graph inputs, not attributes).
        resident = parameters if len(example_inputs) == arity else frozenset()
        return make_boxed_func(make_run(gm, GraphPlan.of(gm, resident, "forward", kept=gm.meta[_KEPT])))

    def backward(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable[..., Any]:
        return make_boxed_func(make_run(gm, GraphPlan.of(gm, frozenset(), "backward")))

    return aot_module_simplified(module, example_inputs, fw_compiler=forward, bw_compiler=backward,
                                 partition_fn=_partition)


def _partition(joint: torch.fx.GraphModule, joint_inputs: Sequence[Any], **options: Any) -> tuple[Any, Any]:
    """AOTAutograd's own partition, noting which of the forward's outputs are saved activations (tensors)."""
    forward, backward = default_partition(joint, joint_inputs, **options)
    outputs = next(node for node in forward.graph.nodes if node.op == "output").args[0]
    forward.meta[_KEPT] = tuple(position for position in range(options["num_fwd_outputs"], len(outputs))
                                if isinstance(outputs[position].meta.get("val"), torch.Tensor))
    return forward, backward
