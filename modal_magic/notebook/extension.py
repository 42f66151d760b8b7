"""The extension's state for the life of a kernel, in one object instead of module globals.

``%load_ext modal_magic`` makes one (``magic.load_ipython_extension``) with the ``ModalMagics`` instance
as its session defaults; ``%unload_ext`` closes it. A plain script that calls ``modal_magic.run_cell``
never loads the extension: its ``Extension`` is made on first use, with the table's defaults
(``options.py``). Everything that must live as long as the kernel — and end with it — is reached from
``current()``.
"""

from __future__ import annotations

import atexit
from typing import Any

from ..backends.registry import Backends
from .options import Defaults
from .session import Session

__all__ = ["Extension", "current", "start", "stop"]


class Extension:
    """One kernel's backends, session defaults, remote-resident session and ``torch.compile`` places."""

    def __init__(self, defaults: Defaults | None = None) -> None:
        self.defaults = Defaults() if defaults is None else defaults
        """The session defaults (``%modal_config``): the loaded ``ModalMagics``, or the table's."""
        self.backends = Backends()
        """The live backends, one of each, kept warm from cell to cell."""
        self.session = Session()
        """Which notebook tensors mirror remote ones (``session.py``)."""
        self.compile_places: dict[Any, Any] = {}
        """``compile/backend.py``'s ``Place`` per (options, compiler): shared by every compiler using it."""
        atexit.register(self.close)

    def stop_backends(self) -> None:
        """Stop the backends (``%modal_stop``): nothing is resident remotely any more; the next cell starts one."""
        self.backends.close()
        self.session.forget()

    def close(self) -> None:
        """Release everything (``%unload_ext``, interpreter exit). Idempotent."""
        self.stop_backends()
        atexit.unregister(self.close)


_current: Extension | None = None
"""The kernel's extension: the package's one module-level piece of session state."""


def current() -> Extension:
    """The kernel's extension: the one ``%load_ext`` made, else one made now (a script using ``run_cell``)."""
    global _current
    if _current is None:
        _current = Extension()
    return _current


def start(defaults: Defaults) -> Extension:
    """A fresh extension for this kernel with ``defaults`` (``%load_ext``), the previous one closed."""
    global _current
    stop()
    _current = Extension(defaults)
    return _current


def stop() -> None:
    """Close the kernel's extension, if there is one (``%unload_ext``)."""
    global _current
    if _current is not None:
        _current.close()
        _current = None
