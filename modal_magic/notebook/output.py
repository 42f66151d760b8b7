"""Show a runner's output events here, the way a local cell's output would appear.

Streams go to this process's ``sys.stdout``/``sys.stderr`` as they arrive (in
a kernel those are the cell's output area); rich displays go through IPython's
display publisher, so HTML, images and ``update`` displays behave as local ones.
"""

from __future__ import annotations

import sys

from ..protocol import Event

__all__ = ["show_event"]


def show_event(event: Event) -> None:
    """Render one ``stream``/``display``/``clear_output`` event; ignore the rest (stages)."""
    if event["kind"] == "stream":
        stream = sys.stderr if event["name"] == "stderr" else sys.stdout
        stream.write(event["text"])
        stream.flush()
    elif event["kind"] == "display":
        from IPython.display import publish_display_data

        publish_display_data(event["data"], event.get("metadata") or None,
                             transient=event.get("transient") or None, update=event.get("update", False))
    elif event["kind"] == "clear_output":
        from IPython.display import clear_output

        clear_output(wait=event.get("wait", False))
