"""The replay suite (issue 13): every corpus cell behaves under ``%%modal_gpu --backend local`` as it does plainly.

One replay of the whole corpus per session (``replay.py``); each notebook is one test. A cell
that does not match must be listed in ``known_mismatches.txt`` with its reason, and a listed
cell that matches fails too, so the list stays honest (strict xfail). A cell listed as only
"carried over" from an earlier cell must not introduce a difference of its own.

Regenerate the list's lines for today's code with ``python -m tests.replay.replay --known``.
"""

from __future__ import annotations

import os

import pytest

from . import corpus
from .conftest import SCORE
from .replay import KNOWN, Report, carried_sources, read_known, replay

ALL = corpus.load()
MIN_CELLS = 150
# REPLAY_NOTEBOOKS="05_autograd 16_mutation" replays only those (a quick check while working on one).
NOTEBOOKS = corpus.load(os.environ["REPLAY_NOTEBOOKS"].split()) if os.environ.get("REPLAY_NOTEBOOKS") else ALL


@pytest.fixture(scope="session")
def report(tmp_path_factory) -> Report:
    out = tmp_path_factory.mktemp("replay")
    result = replay([nb.name for nb in NOTEBOOKS], outdir=out)
    (out / "score.txt").write_text(result.score_line() + "\n")
    SCORE.append(result.score_line())
    SCORE.append(f"replay report (every mismatch, with reasons): {out / 'report.txt'}")
    print(result.text())
    return result


def test_corpus_is_big_enough_and_the_known_list_names_real_cells() -> None:
    cells = {c.id: c for nb in ALL for c in nb.cells}
    assert len(cells) >= MIN_CELLS, f"the corpus has {len(cells)} cells, fewer than {MIN_CELLS}"
    assert sum(not c.local for c in cells.values()) >= MIN_CELLS
    unknown = sorted(read_known().keys() - cells.keys())
    assert not unknown, f"{KNOWN.name} lists cells that are not in the corpus: {unknown}"


def test_both_sides_ran(report: Report) -> None:
    assert not report.side_errors, "\n".join(report.side_errors)


@pytest.mark.parametrize("notebook", [nb.name for nb in NOTEBOOKS])
def test_notebook_replays_as_locally(report: Report, notebook: str) -> None:
    known = read_known()
    problems = []
    for cell in (c for c in report.cells if c.id.startswith(f"{notebook}:")):
        listed = known.get(cell.id)
        if not cell.ok and listed is None:
            problems.append(f"{cell.id} differs: {cell.summary(limit=6)}")
        elif cell.ok and listed is not None:
            problems.append(f"{cell.id} now matches: remove it from {KNOWN.name} (was: {listed})")
        elif listed is not None and listed.startswith("carried over") and carried_sources(listed) != cell.carried_from:
            now = (f"from {cell.carried_from}" if cell.carried_from
                   else f"introducing a difference: {cell.summary(limit=6)}")
            problems.append(f"{cell.id} is listed as carried over from {carried_sources(listed)}, "
                            f"but is now carried over {now}"
                            if cell.carried_from else f"{cell.id} is listed as carried over, but it introduces a "
                            f"difference: {cell.summary(limit=6)}")
    assert not problems, "\n".join(problems)
