"""The source of the code a payload's functions were defined in, so that a traceback on the other side shows it.

A function defined in one notebook cell and called in a ``%%modal_gpu`` cell travels by value; so does one a
remote cell defines and the notebook calls later. A traceback through it should read as it does locally,

    Cell In[4], line 2, in helper(t)
          1 def helper(t):
    ----> 2     return 1 / t

but the other process has never seen cell 4: its ``linecache`` holds no such lines, and its IPython does not
know the cell's number (cloudpickle even renames every code object's file ``<dynamic-code>``, which the pickler
undoes). So a payload carries, for each file its functions' code names, the file's text and, for a cell, its
number; unpacking puts them in this process's ``linecache`` (as IPython caches a cell: no mtime, so
``checkcache`` keeps them) and tells its IPython the cell's number, the one mapping IPython's tracebacks read
(``CachingCompiler._filename_map``, what ``format_code_name`` consults).

A real file goes too where it holds the user's own code (a module next to the notebook, which a Modal container
does not have) and is at most ``MAX_FILE`` bytes; it is put in the cache only where no file of that name exists,
so a worker on the notebook's own disk reads the file itself. Installed code (site-packages, the standard
library) is never sent: both sides have it.
"""

from __future__ import annotations

import linecache
import os
import sys
from collections.abc import Callable, Collection, Mapping
from typing import Any

__all__ = ["Source", "collect", "install", "MAX_FILE"]

Source = tuple[int | None, str]
"""A file's cell number (``None``: not a cell) and text."""

MAX_FILE = 256 * 1024
"""The largest real file sent: a module of the user's is rarely larger, and every cell using it sends it."""


def _filename_map() -> dict[str, int] | None:
    """This process's IPython's cell file → cell number, or None outside IPython (a bare ``run_cell``)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    mapping = getattr(getattr(shell, "compile", None), "_filename_map", None)
    return mapping if isinstance(mapping, dict) else None


def collect(files: Collection[str], installed: Callable[[], tuple[str, ...]]) -> dict[str, Source]:
    """The sources of ``files`` (code objects' ``co_filename``) worth sending; ``installed()``: where code both
    sides have lives (asked only when a real file is among them)."""
    if not files:
        return {}
    cells = _filename_map() or {}
    found: dict[str, Source] = {}
    for name in files:
        if name in cells:
            lines = linecache.getlines(name)
            if lines:
                found[name] = (cells[name], "".join(lines))
        elif not name.startswith(("<", *installed())) and _small_file(name):
            lines = linecache.getlines(name)
            if lines:
                found[name] = (None, "".join(lines))
    return found


def _small_file(name: str) -> bool:
    try:
        return os.path.getsize(name) <= MAX_FILE
    except OSError:
        return False


def install(sources: Mapping[str, Any]) -> None:
    """Make ``sources`` (from ``collect``, through the wire) readable here, as IPython caches a cell."""
    if not sources:
        return
    cells = _filename_map()
    for name, (number, text) in sources.items():
        if number is None and os.path.exists(name):
            continue  # this side has the file itself
        if number is not None and cells is not None:
            cells.setdefault(name, number)
        if name not in linecache.cache:  # a cell's name holds the hash of its text: one name, one text
            lines = text.splitlines(keepends=True)
            linecache.cache[name] = (len(text), None, lines, name)
