"""modal_magic — run one notebook cell on a GPU container as if it ran here.

``%load_ext modal_magic`` registers ``%%modal_gpu``. Without IPython, use
``run_cell(source, namespace)``; ``wire.loads`` loads any pickle made on a GPU
machine onto this one's CPU. ``torch.compile(model, backend=remote(gpu="A10G"))``
runs a model's graphs in the same session (``modal_magic.compile``).
"""

from __future__ import annotations

from typing import Any

from .driver import NO_VALUE, CellOptions, CellOutcome, run_cell
from .errors import BackendUnavailable, CellTimeout, InternalError, ModalMagicError, RemoteError, WorkerDied
from .fanout import MapFailed, MapSpec

__all__ = [
    "run_cell", "CellOptions", "CellOutcome", "NO_VALUE", "MapSpec", "MapFailed",
    "ModalMagicError", "WorkerDied", "BackendUnavailable", "InternalError", "CellTimeout", "RemoteError",
    "load_ipython_extension", "unload_ipython_extension", "remote",
]
__version__ = "0.1.0"


def remote(**options: Any) -> Any:
    """A ``torch.compile`` backend running each graph in this session's remote worker (``compile.backend.remote``).

    Defined here, importing torch only when called, so ``import modal_magic`` stays light.
    """
    from .compile.backend import remote as make

    return make(**options)


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext modal_magic``."""
    from .magic import ModalMagics

    ipython.register_magics(ModalMagics)


def unload_ipython_extension(ipython: Any) -> None:
    """Called by ``%unload_ext modal_magic``: stop the worker and forget the magic."""
    from .backends import close_all

    close_all()
    ipython.magics_manager.magics["cell"].pop("modal_gpu", None)
    for name in ("modal_stop", "modal_config"):
        ipython.magics_manager.magics["line"].pop(name, None)
