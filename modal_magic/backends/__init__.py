"""Where cells run, chosen by ``--backend``; one live instance of each per process (per kernel)."""

from __future__ import annotations

import atexit

from ..errors import UsageProblem
from .base import Backend, OnEvent, ResultFrame
from .local import LocalBackend

__all__ = ["Backend", "OnEvent", "ResultFrame", "LocalBackend", "get_backend", "close_all", "CHOICES"]

CHOICES = ("auto", "local", "modal")
_live: dict[str, Backend] = {}


def get_backend(choice: str) -> Backend:
    """The session's backend for ``choice`` (``auto`` means local until the Modal backend lands)."""
    if choice not in CHOICES:
        raise UsageProblem(f"unknown backend {choice!r}; choose one of {', '.join(CHOICES)}")
    if choice == "modal":
        raise UsageProblem("the Modal backend is not available yet in this version; "
                           "use --backend local (or leave --backend out).")
    if "local" not in _live:
        _live["local"] = LocalBackend()
    return _live["local"]


def close_all() -> None:
    """Stop every backend this process started (extension unload, interpreter exit)."""
    while _live:
        _live.popitem()[1].close()


atexit.register(close_all)
