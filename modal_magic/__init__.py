"""modal_magic — run one notebook cell on a GPU container as if it ran here.

``%load_ext modal_magic`` registers ``%%modal_gpu``. Without IPython, use
``run_cell(source, namespace)``; ``wire.loads`` loads any pickle made on a GPU
machine onto this one's CPU. ``torch.compile(model, backend=remote(gpu="A10G"))``
runs a model's graphs in the same session (``modal_magic.compile``).

The package is in folders by the process that runs them:

- ``notebook/``: the kernel's side (the magic, the driver and its stages, the fan-out, the views);
- ``worker/``: what a worker process runs, locally or inside a Modal container;
- ``protocol.py``: the messages between the two sides (requests, results, events), typed;
- ``wire/``: what both sides share (payloads, tensors, identity, frames);
- ``backends/``: where cells run (``local.py``, ``modal/``), and their registry;
- ``compile/``: ``torch.compile`` graphs run remotely.

This module imports nothing on import (PEP 562): a worker that imports
``modal_magic.worker`` loads none of the notebook's side.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {  # public name -> the module that defines it
    "run_cell": "notebook.driver", "CellOptions": "notebook.cell", "CellOutcome": "notebook.cell",
    "NO_VALUE": "notebook.cell", "MapSpec": "notebook.fanout", "MapFailed": "notebook.fanout",
    "ModalMagicError": "errors", "WorkerDied": "errors", "BackendUnavailable": "errors",
    "InternalError": "errors", "CellTimeout": "errors", "RemoteError": "errors",
    "load_ipython_extension": "notebook.magic", "unload_ipython_extension": "notebook.magic",
    "remote": "compile.backend",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .compile.backend import remote
    from .errors import BackendUnavailable, CellTimeout, InternalError, ModalMagicError, RemoteError, WorkerDied
    from .notebook.cell import NO_VALUE, CellOptions, CellOutcome
    from .notebook.driver import run_cell
    from .notebook.fanout import MapFailed, MapSpec
    from .notebook.magic import load_ipython_extension, unload_ipython_extension


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use, so ``import modal_magic`` stays light on both sides."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'modal_magic' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
