"""The replay corpus: notebooks written as plain ``.py`` files with ``# %%`` cell separators.

A cell header may carry tags in brackets::

    # %% [local] seed the notebook's generator here, draw remotely next

``local`` runs the cell plainly on both sides (a notebook cell without the magic), so a
sequence can mix local and remote cells; everything else runs under ``%%modal_gpu`` on the
remote side. Text after the tags is the cell's title. A cell is named ``NOTEBOOK:NN``
(1-based, two digits), e.g. ``05_autograd:03``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

NOTEBOOKS = Path(__file__).with_name("notebooks")
_HEADER = re.compile(r"^# %%(?:\s*\[(?P<tags>[^\]]*)\])?(?P<title>.*)$")


@dataclass(frozen=True)
class Cell:
    notebook: str
    index: int  # 1-based
    source: str
    title: str = ""
    local: bool = False

    @property
    def id(self) -> str:
        return f"{self.notebook}:{self.index:02d}"


@dataclass(frozen=True)
class Notebook:
    name: str
    path: Path
    cells: tuple[Cell, ...]


def parse(path: Path) -> Notebook:
    """Cells are the text between ``# %%`` headers; anything before the first header is a preamble (ignored)."""
    name = path.stem
    cells: list[Cell] = []
    header: re.Match | None = None
    body: list[str] = []

    def close() -> None:
        if header is None:
            return
        source = "\n".join(body).strip("\n")
        if not source.strip():
            raise ValueError(f"{path}: cell {len(cells) + 1} is empty")
        tags = {t.strip() for t in (header.group("tags") or "").split(",") if t.strip()}
        unknown = tags - {"local"}
        if unknown:
            raise ValueError(f"{path}: unknown cell tags {sorted(unknown)}")
        cells.append(Cell(name, len(cells) + 1, source, header.group("title").strip(), "local" in tags))

    for line in path.read_text().splitlines():
        match = _HEADER.match(line)
        if match:
            close()
            header, body = match, []
        else:
            body.append(line)
    close()
    if not cells:
        raise ValueError(f"{path}: no cells")
    return Notebook(name, path, tuple(cells))


def load(names: list[str] | None = None) -> list[Notebook]:
    """Every notebook under ``notebooks/`` (sorted by file name), or just the ``names`` given (stems)."""
    paths = sorted(NOTEBOOKS.glob("*.py"))
    if names:
        wanted = set(names)
        paths = [p for p in paths if p.stem in wanted]
        missing = wanted - {p.stem for p in paths}
        if missing:
            raise ValueError(f"no such notebooks: {sorted(missing)}")
    return [parse(p) for p in paths]
