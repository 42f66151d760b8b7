"""How an interrupt that did not land in the cell's own code ends: one short ``KeyboardInterrupt``, said honestly.

When the cell's own code is interrupted, the worker sends the cell's traceback
and the driver raises it where the cell was, as a local interrupt would show.
An interrupt can also land anywhere in our machinery: while the inputs are
packed or going up, while the results are packed, coming back or being rebuilt,
or while the cell runs but does not stop (it ignores SIGINT, its worker is
stopped, a ``!command`` swallowed it). Raised as it was, IPython showed some
50 lines of our own frames ending in a bare ``KeyboardInterrupt``, and said
nothing when the worker had to be replaced. Here it becomes one
``KeyboardInterrupt`` that IPython shows as a line saying where the cell was
(the last stage its events named), and a ``modal_gpu:`` line with what the
backend said about it (``KeyboardInterrupt(sentence)``: the worker did not
stop and was replaced, say).
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import with_remote_traceback
from ..protocol import Event

__all__ = ["Landing"]

_WHERE = {
    "analyse": "before the cell was sent",
    "pack": "before the cell was sent",
    "start": "while waiting for a worker to run it",
    "upload": "while the inputs were going up",
    "run": "while the cell ran",
    "download": "while the results were being packed and sent back",
    "unpack": "while the results were being rebuilt here",
}


class Landing:
    """An ``on_event`` that passes every event on and keeps the last stage, to say where an interrupt landed."""

    def __init__(self, on_event: Callable[[Event], None]) -> None:
        self._on_event = on_event
        self.stage = "analyse"

    def __call__(self, event: Event) -> None:
        if event["kind"] == "stage":
            self.stage = event["stage"]
        self._on_event(event)

    def told(self, exc: KeyboardInterrupt) -> KeyboardInterrupt:
        """``exc`` as the user sees it: the cell's own interrupt as it is; any other, the short form."""
        if "_render_traceback_" in vars(exc):  # the cell's traceback (or a backend's own account) is attached
            return exc
        where = f"interrupted {_WHERE.get(self.stage, 'while the cell ran')}"
        said = str(exc)
        lines = [f"KeyboardInterrupt: {where}", *([f"modal_gpu: {said}"] if said else [])]
        told = KeyboardInterrupt(f"{where}; {said}" if said else where)
        return with_remote_traceback(told, lines)
