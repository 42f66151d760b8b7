"""modal_magic — run one notebook cell on a GPU container as if it ran here.

``%load_ext modal_magic`` registers ``%%modal_gpu``. Without IPython, use
``run_cell(source, namespace)``; ``wire.loads`` loads any pickle made on a GPU
machine onto this one's CPU.
"""

from __future__ import annotations

from typing import Any

from .driver import NO_VALUE, CellOptions, CellOutcome, run_cell
from .errors import BackendUnavailable, CellTimeout, InternalError, ModalMagicError, RemoteError, WorkerDied
from .fanout import MapFailed, MapSpec

__all__ = [
    "run_cell", "CellOptions", "CellOutcome", "NO_VALUE", "MapSpec", "MapFailed",
    "ModalMagicError", "WorkerDied", "BackendUnavailable", "InternalError", "CellTimeout", "RemoteError",
    "load_ipython_extension", "unload_ipython_extension",
]
__version__ = "0.1.0"


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
