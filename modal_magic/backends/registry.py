"""Which backends exist, how ``--backend`` chooses one, and a kernel's live instances of them.

The backends are found by the ``modal_magic.backends`` entry point group (``name = "module:Class"``, as
``pyproject.toml`` declares the built-in ones), so a backend in another package is one entry-point line.
The built-in ones are known here too: a checkout that is not installed (or installed before the group
existed) still has them. Each backend class describes itself (``base.Backend``): nothing here or in the
notebook's side names one.
"""

from __future__ import annotations

import functools
from importlib import import_module, metadata

from ..errors import UsageProblem
from .base import Backend

__all__ = ["GROUP", "AUTO", "known", "backend_class", "choices", "choose", "auto_help", "Backends"]

GROUP = "modal_magic.backends"
AUTO = "auto"
_BUILT_IN = {"local": "modal_magic.backends.local:LocalBackend",
             "modal": "modal_magic.backends.modal.backend:ModalBackend"}


@functools.cache
def known() -> dict[str, str]:
    """Each backend's name and where its class is (``module:Class``): the built-in ones, then those declared.

    Read once per process (entry points are scanned from disk); ``known.cache_clear()`` reads them again.
    """
    declared = {entry.name: entry.value for entry in metadata.entry_points(group=GROUP)}
    return {**_BUILT_IN, **declared}


def backend_class(name: str) -> type[Backend]:
    """The class of the backend called ``name`` (imported on first use)."""
    module, _, attribute = known()[name].partition(":")
    found: type[Backend] = getattr(import_module(module), attribute)
    return found


def choices() -> tuple[str, ...]:
    """What ``--backend`` takes: ``auto`` and every known backend."""
    return (AUTO, *known())


def choose(choice: str, *, planning: bool = False) -> tuple[str, str]:
    """(the backend ``choice`` resolves to, why) — decided offline, from each backend's ``availability``.

    ``auto`` takes the first available backend in ``auto_order``, saying why it passed over the ones
    before it. ``planning`` is for ``--dry-run``: a plan sends nothing, so a backend asked for by name
    that cannot run here is planned (saying what running it needs) instead of refused.
    """
    if choice not in choices():
        raise UsageProblem(f"unknown backend {choice!r}; choose one of {', '.join(choices())}")
    if choice != AUTO:
        found = backend_class(choice).availability()
        if not found.ok and not planning:
            raise UsageProblem(found.refusal)
        return choice, found.why
    passed_over: list[str] = []
    for name, cls in _auto_order():
        found = cls.availability()
        if found.ok:
            return name, f"auto: {'; '.join(passed_over) or found.auto}"
        passed_over.append(found.auto)
    raise UsageProblem(f"--backend auto found no backend that can run here: {'; '.join(passed_over)}")


def auto_help() -> str:
    """``auto`` for ``--backend``'s help: 'Modal when configured, else local'."""
    return ", else ".join(cls.auto_help for _, cls in _auto_order())


def _auto_order() -> list[tuple[str, type[Backend]]]:
    classes = [(name, backend_class(name)) for name in known()]
    ordered = sorted((cls.auto_order, index) for index, (_, cls) in enumerate(classes) if cls.auto_order is not None)
    return [classes[index] for _, index in ordered]


class Backends:
    """A kernel's live backends: one instance of each, started on first use and kept warm until ``close``."""

    def __init__(self) -> None:
        self._live: dict[str, Backend] = {}
        self._noticed = False

    def get(self, choice: str) -> Backend:
        """The live backend for ``choice``; ``auto`` says once (per kernel) where cells run and why."""
        name, why = choose(choice)
        if choice == AUTO and not self._noticed:
            self._noticed = True
            # A notice, not an error: on stderr a notebook showed it in a red box, saved with the notebook.
            print(f"modal_gpu: running cells {backend_class(name).runs_cells} — {why}.")
        if name not in self._live:
            self._live[name] = backend_class(name)()
        return self._live[name]

    def live(self, name: str) -> Backend | None:
        """The live backend called ``name``, if one was made; never makes one (the dry run asks)."""
        return self._live.get(name)

    def running(self) -> list[Backend]:
        """The backends that are running now (a worker, an app), without starting any."""
        return [backend for backend in self._live.values() if backend.running]

    def close(self) -> list[str]:
        """Stop every backend started here (``%modal_stop``, extension unload, interpreter exit); what was running,
        in words ('the local worker'), for ``%modal_stop`` to name only what it stopped."""
        stopped = []
        while self._live:
            backend = self._live.popitem()[1]
            if backend.running:
                stopped.append(backend.held or f"the {backend.name} backend")
            backend.close()
        return stopped
