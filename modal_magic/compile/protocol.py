"""What one compiled-graph call carries to the remote side and back.

Both sides import this module: the notebook builds a ``Call``, the remote side
(``remote.py``) answers with a ``Reply``. They are plain tuples of builtins and
tensors, so they travel through the session's ordinary payload format (tensors
out of band, CUDA mapped back to the CPU). Being immutable, a ``Call`` never comes
back as "changed in place", and neither do the tensors inside it: what a graph
changes in place is listed in the ``Reply``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["Call", "Reply", "RemoteGraphError", "EAGER", "AUTO"]

AUTO = "auto"
"""Compile with ``inductor`` where the remote side has a GPU, else run the graph as it is (``eager``)."""
EAGER = "eager"


class Call(NamedTuple):
    graph: str
    """The graph's key: a hash of its code and constants (``graph.GraphPlan``)."""
    blob: bytes | None
    """The pickled ``GraphModule``; ``None`` when the notebook believes the remote side has it already."""
    compile_with: str
    """The dynamo backend the remote side compiles the graph with (``AUTO``, ``EAGER``, ``inductor``…)."""
    label: str
    """How errors name the graph."""
    args: tuple[Any, ...]
    """The graph's inputs in order, ``None`` where a resident tensor goes (``resident``)."""
    resident: tuple[tuple[int, str], ...]
    """(argument position, key) of each parameter or buffer the remote side keeps."""
    send: tuple[tuple[str, Any, bool], ...]
    """(key, tensor, is a parameter): resident tensors the remote side lacks or holds an old version of."""
    drop: tuple[str, ...]
    """Keys of resident tensors the notebook no longer has (their memory can go)."""
    keep: tuple[tuple[int, str], ...] = ()
    """(output position, key): outputs to keep there under these keys instead of sending them (a training
    forward's saved activations); the reply has ``None`` in their place."""


class Reply(NamedTuple):
    outputs: tuple[Any, ...] | None
    """The graph's outputs; ``None`` when it could not run for lack of ``missing`` things."""
    missing_graph: bool = False
    """The remote side does not have the graph (a new worker or container): send it again."""
    missing: tuple[str, ...] = ()
    """Keys of resident tensors the remote side does not have: send them again."""
    mutated: tuple[tuple[int, Any], ...] = ()
    """(argument position, new value) of the inputs the graph changed in place (``x.add_(1)``, batch
    norm's running statistics): the notebook's tensors change too, as they would running it here."""


class RemoteGraphError(RuntimeError):
    """A compiled graph failed on the remote side: what failed, and the original error, in one sentence."""
