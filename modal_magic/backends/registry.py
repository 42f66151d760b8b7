"""Where cells run, chosen by ``--backend``; one live instance of each per process (per kernel)."""

from __future__ import annotations

import atexit
import sys

from ..errors import UsageProblem
from .modal.plan import HOW_TO_CONFIGURE, modal_credentials
from .base import Backend, OnEvent, ResultFrame
from .local import LocalBackend
from .modal.backend import ModalBackend

__all__ = ["Backend", "OnEvent", "ResultFrame", "LocalBackend", "ModalBackend", "choose", "get_backend", "running",
           "close_all", "CHOICES"]

CHOICES = ("auto", "local", "modal")
_live: dict[str, Backend] = {}


def choose(choice: str, *, planning: bool = False) -> tuple[str, str]:
    """(the backend ``choice`` resolves to, why) — decided offline, from flags and credentials.

    ``planning`` is for ``--dry-run``: a plan sends nothing, so ``--backend modal`` without credentials is
    planned (saying that running it needs them) instead of refused.
    """
    if choice not in CHOICES:
        raise UsageProblem(f"unknown backend {choice!r}; choose one of {', '.join(CHOICES)}")
    found = modal_credentials()
    if choice == "modal":
        if found is None:
            if planning:
                return "modal", f"asked for; no Modal credentials were found, and running it needs them: {HOW_TO_CONFIGURE}"
            raise UsageProblem(f"--backend modal needs Modal credentials, and none were found: {HOW_TO_CONFIGURE}.")
        return "modal", f"credentials: {found}"
    if choice == "local":
        return "local", "asked for"
    if found is None:
        return "local", f"auto: no Modal credentials found; to run on GPUs, {HOW_TO_CONFIGURE}"
    return "modal", f"auto: Modal credentials found ({found}); --backend local runs cells on this machine"


_noticed = False


def get_backend(choice: str) -> Backend:
    """The session's backend for ``choice``; ``auto`` says once per session where cells run and why."""
    global _noticed
    name, why = choose(choice)
    if choice == "auto" and not _noticed:
        _noticed = True
        where = "on Modal" if name == "modal" else "on the local backend (this machine)"
        print(f"modal_gpu: running cells {where} — {why}.", file=sys.stderr)
    if name not in _live:
        _live[name] = ModalBackend() if name == "modal" else LocalBackend()
    return _live[name]


def running() -> list[Backend]:
    """The session's backends that are running now (a worker, an app), without starting any."""
    return [backend for backend in _live.values() if backend.running]


def close_all() -> None:
    """Stop every backend this process started (extension unload, interpreter exit)."""
    while _live:
        _live.popitem()[1].close()


atexit.register(close_all)
