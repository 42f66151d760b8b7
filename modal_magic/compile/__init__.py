"""``torch.compile`` on the session's remote GPU: ``torch.compile(model, backend=modal_magic.remote())``.

Notebook side: ``backend.py`` (the dynamo backend), ``training.py`` (forward
and backward through AOTAutograd), ``graph.py`` (a captured graph ready to travel), ``channel.py`` (a call's
round trip, as a session
cell), ``residency.py`` (which parameters the remote side holds). Remote side:
``remote.py`` (execution; what it keeps between calls is the compile namespace of
the worker's store, ``worker/store.py``). ``protocol.py`` is what the two say to
each other.

Importing the notebook side imports ``torch._dynamo`` (and registers the
``"modal"`` backend name); this package's ``__init__`` does not, so the remote
side, which imports only ``remote``, stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["remote", "RemoteCompiler", "RemoteGraphError", "CallStats"]


def __getattr__(name: str) -> Any:
    if name in ("remote", "RemoteCompiler"):
        from . import backend

        return getattr(backend, name)
    if name == "CallStats":
        from .channel import CallStats

        return CallStats
    if name == "RemoteGraphError":
        from .protocol import RemoteGraphError

        return RemoteGraphError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
