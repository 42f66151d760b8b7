"""``%load_ext modal_magic`` and ``%unload_ext modal_magic``."""

from __future__ import annotations

from typing import Any

from ..backends.registry import close_all
from .magic import ModalMagics


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext modal_magic``."""
    ipython.register_magics(ModalMagics)


def unload_ipython_extension(ipython: Any) -> None:
    """Called by ``%unload_ext modal_magic``: stop the worker and forget the magic."""
    close_all()
    ipython.magics_manager.magics["cell"].pop("modal_gpu", None)
    for name in ("modal_stop", "modal_config"):
        ipython.magics_manager.magics["line"].pop(name, None)
