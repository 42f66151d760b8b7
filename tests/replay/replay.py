"""Replay the corpus both ways and compare, cell by cell.

``python -m tests.replay.replay`` runs every notebook in ``notebooks/`` plainly (one kernel
process per notebook) and with its cells under ``%%modal_gpu --backend local --quiet`` (the
same, on the other side), compares them after every cell, and prints the score and the
mismatches. Options::

    --notebooks 05_autograd 07_training   only these
    --known        print the mismatches in the format of known_mismatches.txt (reasons already
                   listed there are kept; new ones carry the harness's own one-line reason)
    --out DIR      keep the raw per-side JSON and the report there
    --control      both sides plain (no magic): checks the harness; must score 100%
    -v             every reason for each mismatching cell, not only the first ones

A cell matches when, after it ran, both kernels hold the same names with the same values
(``snapshot.py``), printed the same stdout, showed the same displays and raised the same
exception (type and message). Compared after *every* cell: a difference a cell introduced
stays visible in the cells after it (flagged "carried over from …").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import corpus

ROOT = Path(__file__).resolve().parents[2]
KNOWN = Path(__file__).with_name("known_mismatches.txt")
SIDE_TIMEOUT = 900.0
RTOL, ATOL = 1e-5, 1e-6


@dataclass
class CellResult:
    id: str
    local: bool
    reasons: list[str] = field(default_factory=list)
    carried_from: str | None = None  # every reason was already there after this earlier cell
    notes: list[str] = field(default_factory=list)  # what the magic said on stderr (not compared; helps to read)
    seconds: tuple[float, float] = (0.0, 0.0)  # plain, remote

    @property
    def ok(self) -> bool:
        return not self.reasons

    def summary(self, limit: int = 3) -> str:
        shown = "; ".join(self.reasons[:limit])
        more = f" (+{len(self.reasons) - limit} more)" if len(self.reasons) > limit else ""
        carried = f"carried over from {self.carried_from}: " if self.carried_from else ""
        return f"{carried}{shown}{more}"


@dataclass
class Report:
    cells: list[CellResult]
    seconds: float
    side_errors: list[str] = field(default_factory=list)

    @property
    def score(self) -> tuple[int, int]:
        return sum(c.ok for c in self.cells), len(self.cells)

    def score_line(self) -> str:
        ok, total = self.score
        new = sum(1 for c in self.cells if not c.ok and not c.carried_from)
        return (f"replay score: {ok}/{total} cells match ({100 * ok / max(total, 1):.1f}%); "
                f"{total - ok} differ, {new} of them introducing a difference; {self.seconds:.0f} s")

    def mismatches(self) -> list[CellResult]:
        return [c for c in self.cells if not c.ok]

    def text(self, verbose: bool = False) -> str:
        lines = [self.score_line(), *(f"side error: {e}" for e in self.side_errors)]
        for c in self.mismatches():
            lines.append(f"{c.id}{' [local]' if c.local else ''}  {c.summary(limit=100 if verbose else 3)}")
            if verbose and not c.carried_from:
                lines.extend(f"    {_short(note, 300)}" for note in c.notes)
        return "\n".join(lines)


# --------------------------------------------------------------------------------------- running
def side_env() -> dict[str, str]:
    """The kernels' environment: pinned hash seed (a user who pinned it expects set order to hold), no Modal account."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env["MODAL_CONFIG_PATH"] = os.path.join(tempfile.gettempdir(), "replay-no-modal.toml")
    env["PYTHONHASHSEED"] = "0"
    env["MPLBACKEND"] = "Agg"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def run_sides(names: list[str], outdir: Path, control: bool = False) -> list[str]:
    """Both sides at once (each a process forking one kernel per notebook); returns their failures."""
    procs = {}
    for mode in ("plain", "control" if control else "remote"):
        log = open(outdir / f"{mode}.log", "w")
        procs[mode] = (subprocess.Popen([sys.executable, "-m", "tests.replay.side", mode, str(outdir), *names],
                                        cwd=ROOT, env=side_env(), stdout=log, stderr=subprocess.STDOUT), log)
    errors = []
    for mode, (proc, log) in procs.items():
        try:
            code = proc.wait(timeout=SIDE_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "timeout"
        log.close()
        text = (outdir / f"{mode}.log").read_text().strip()
        if code != 0 or text:
            errors.append(f"{mode} side (exit {code}): {text[-2000:]}")
    return errors


def replay(names: list[str] | None = None, outdir: Path | None = None, control: bool = False) -> Report:
    notebooks = corpus.load(names)
    outdir = Path(outdir or tempfile.mkdtemp(prefix="replay-"))
    outdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    errors = run_sides([nb.name for nb in notebooks], outdir, control)
    cells: list[CellResult] = []
    for nb in notebooks:
        sides = {}
        for mode in ("plain", "remote"):
            path = outdir / f"{nb.name}.{mode}.json"
            sides[mode] = json.loads(path.read_text())["cells"] if path.exists() else []
        cells.extend(compare_notebook(nb, sides["plain"], sides["remote"]))
    report = Report(cells, time.perf_counter() - started, errors)
    (outdir / "report.txt").write_text(report.text(verbose=True) + "\n")
    return report


# ------------------------------------------------------------------------------------- comparing
def compare_notebook(nb: corpus.Notebook, plain: list[dict], remote: list[dict]) -> list[CellResult]:
    results = []
    previous: dict[str, str] = {}  # reason -> the cell it first appeared in (state reasons only)
    for i, cell in enumerate(nb.cells):
        res = CellResult(cell.id, cell.local)
        p = plain[i] if i < len(plain) else None
        r = remote[i] if i < len(remote) else None
        if p is None or r is None:
            side = "plain" if p is None else "remote"
            res.reasons.append(f"no result from the {side} side (its kernel died or timed out)")
            results.append(res)
            continue
        res.seconds = (p["seconds"], r["seconds"])
        res.notes = [line for line in r.get("stderr", "").splitlines() if line.startswith("modal_gpu:")][:3]
        output = compare_output(p, r)
        state = compare_state(p["snapshot"], r["snapshot"])
        res.reasons = output + state
        carried = [previous[s] for s in state if s in previous]
        if state and not output and len(carried) == len(state):
            res.carried_from = ", ".join(sorted(set(carried)))
        previous = {s: previous.get(s, cell.id) for s in state}
        results.append(res)
    return results


_SYNTAX_LOCATION = re.compile(r" \([^()]*, line \d+\)$")


def _error(e: dict | None) -> dict | None:
    """A SyntaxError's message ends in its location: the file name is the kernel's own
    (``<ipython-input-N-…>``) and the magic's ``%%`` line shifts the line number by one, as the
    user sees the cell; neither is behaviour, so the location is left out."""
    if e is not None and e["type"] in ("SyntaxError", "IndentationError", "TabError"):
        return {**e, "message": _SYNTAX_LOCATION.sub("", e["message"])}
    return e


def compare_output(p: dict, r: dict) -> list[str]:
    reasons = []
    pe, re_ = _error(p["error"]), _error(r["error"])
    if pe != re_:
        if pe is None or re_ is None or pe["type"] != re_["type"]:
            def what(e):
                return "nothing" if e is None else f"{e['type']}: {_short(e['message'], 90)}"
            reasons.append(f"raised {what(pe)} locally, {what(re_)} remotely")
        else:
            reasons.append(f"{pe['type']} message: {_short(pe['message'])!r} locally, "
                           f"{_short(re_['message'])!r} remotely")
    if p["stdout"] != r["stdout"]:
        reasons.append("stdout " + _first_difference(p["stdout"], r["stdout"]))
    if p["displays"] != r["displays"]:
        def kinds(ds):
            return ", ".join(f"{'+'.join(d['mime'])}{' ' + d['png'] if 'png' in d else ''} "
                             f"{_short(d.get('text', ''), 40)!r}" for d in ds) or "nothing"
        reasons.append(f"displays: {kinds(p['displays'])} locally, {kinds(r['displays'])} remotely")
    return reasons


def compare_state(p: dict, r: dict) -> list[str]:
    if "harness_error" in p or "harness_error" in r:
        return ["harness could not take a snapshot: " + _short((p.get("harness_error") or r.get("harness_error")), 300)]
    reasons = []
    pn, rn = p["names"], r["names"]
    for name in sorted(pn.keys() - rn.keys()):
        reasons.append(f"{name}: defined locally, missing remotely")
    for name in sorted(rn.keys() - pn.keys()):
        reasons.append(f"{name}: defined remotely, not locally")
    for name in sorted(pn.keys() & rn.keys()):
        diffs: list[str] = []
        _diff(pn[name], rn[name], name, diffs)
        reasons.extend(diffs)
    ps, rs = p["shared"], r["shared"]
    for path in sorted(ps.keys() | rs.keys()):
        if ps.get(path) != rs.get(path):
            def shares(s, path=path):
                return f"shares memory with {s[path]}" if path in s else "owns its memory"
            reasons.append(f"{path}: {shares(ps)} locally, {shares(rs)} remotely")
    for key in sorted(p["state"].keys() | r["state"].keys()):
        a, b = p["state"].get(key), r["state"].get(key)
        if a != b:
            if key in ("torch.rng", "numpy.random", "random"):
                reasons.append(f"process state: {key} random state differs")
            else:
                reasons.append(f"process state: {key} is {a} locally, {b} remotely")
    return reasons


def _diff(a: Any, b: Any, path: str, out: list[str]) -> None:
    if a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        if "same_as" in a or "same_as" in b:
            out.append(f"{path}: {_identity(a)} locally, {_identity(b)} remotely")
            return
        if a.get("t") != b.get("t"):
            out.append(f"{path}: {a.get('t')} locally, {b.get('t')} remotely")
            return
        keys = list(dict.fromkeys([*a, *b]))
        if "sha" in keys and a.get("sha") != b.get("sha"):
            va, vb = a.get("values"), b.get("values")
            if va is None or vb is None or len(va) != len(vb):
                out.append(f"{path}: values differ")
            elif not _close(va, vb):
                worst = max((abs(x - y) for x, y in zip(va, vb, strict=True) if not (math.isnan(x) and math.isnan(y))),
                            default=0)
                out.append(f"{path}: values differ (max abs diff {worst:.3g})")
        for key in keys:
            if key in ("sha", "values", "t"):
                continue
            sub = path if key in ("items", "fields", "params", "buffers", "groups", "attrs") else f"{path}.{key}"
            if key == "grad" and (key not in a or key not in b):
                out.append(f"{path}.grad: {'set' if key in a else 'None'} locally, "
                           f"{'set' if key in b else 'None'} remotely")
                continue
            _diff(a.get(key), b.get(key), sub, out)
        return
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        named = all(isinstance(x, list) and len(x) == 2 and isinstance(x[0], str) for x in a + b)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if named:
                sub = f"{path}[{x[0]}]" if x[0].startswith("'") else f"{path}.{x[0]}"
                if x[0] != y[0]:
                    out.append(f"{path}: key {x[0]} locally, {y[0]} remotely")
                else:
                    _diff(x[1], y[1], sub, out)
            else:
                _diff(x, y, f"{path}[{i}]", out)
        return
    out.append(f"{path}: {_brief(a)} locally, {_brief(b)} remotely")


def _close(va: list[float], vb: list[float]) -> bool:
    for x, y in zip(va, vb, strict=True):
        if math.isnan(x) and math.isnan(y):
            continue
        if not abs(x - y) <= ATOL + RTOL * abs(y):
            return False
    return True


def _identity(d: dict) -> str:
    return f"the same object as {d['same_as']}" if "same_as" in d else f"its own {d.get('t', 'object')}"


def _brief(v: Any) -> str:
    if isinstance(v, dict):
        if "v" in v:
            return _short(v["v"], 60)
        if "repr" in v:
            return _short(v["repr"], 60)
        if "len" in v:
            return f"{v.get('t')} of length {v['len']}"
        return str(v.get("t", "?"))
    if isinstance(v, list):
        return f"{len(v)} items"
    return _short(repr(v), 60)


def _short(text: str, limit: int = 120) -> str:
    text = str(text).replace("\n", "⏎")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_difference(a: str, b: str) -> str:
    la, lb = a.splitlines(), b.splitlines()
    for i in range(max(len(la), len(lb))):
        x = la[i] if i < len(la) else None
        y = lb[i] if i < len(lb) else None
        if x != y:
            def show(s):
                return "(none)" if s is None else repr(_short(s, 70))
            return f"line {i + 1}: {show(x)} locally, {show(y)} remotely"
    return "differs in line endings"


# --------------------------------------------------------------------------------- known list
def read_known(path: Path = KNOWN) -> dict[str, str]:
    """``NOTEBOOK:NN  reason`` per line; ``#`` comments and blank lines ignored."""
    known: dict[str, str] = {}
    if not path.exists():
        return known
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cell_id, _, reason = line.partition(" ")
        if not reason.strip():
            raise ValueError(f"{path}:{number}: {cell_id} has no reason")
        if cell_id in known:
            raise ValueError(f"{path}:{number}: {cell_id} listed twice")
        known[cell_id] = reason.strip()
    return known


def carried_sources(reason: str) -> str | None:
    """'carried over from a:01, a:03 (…)' -> 'a:01, a:03'; None for any other reason."""
    match = re.match(r"carried over from ([^()]+?)(?:\s*\(|$)", reason)
    return match.group(1).strip() if match else None


def known_lines(report: Report, known: dict[str, str]) -> list[str]:
    """The mismatches in known_mismatches.txt's format.

    A listed reason is kept while it still holds (a "carried over" one only while the cell carries
    over from exactly the cells it names); a cell that only carries over earlier differences reads
    "carried over from …" with the causes of those cells; any other new one gets "NEW:" and the
    harness's own reasons, to be replaced by its cause.
    """
    lines: dict[str, str] = {}
    for c in report.mismatches():
        listed = known.get(c.id)
        if listed and carried_sources(listed) == c.carried_from:
            reason = listed
        elif c.carried_from:
            causes: list[str] = []
            for source in c.carried_from.split(", "):
                cause = lines.get(source, "")
                if cause.startswith("carried over"):
                    cause = cause[cause.find("(") + 1:cause.rfind(")")] if "(" in cause else ""
                else:
                    cause = cause.split(":")[0]
                for part in filter(None, (x.strip() for x in cause.split(";"))):
                    if part not in causes:
                        causes.append(part)
            reason = f"carried over from {c.carried_from}" + (f" ({'; '.join(causes)})" if causes else "")
        else:
            reason = "NEW: " + c.summary(limit=2)
        lines[c.id] = reason
    return [f"{cell_id}  {reason}" for cell_id, reason in lines.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.replay.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebooks", nargs="+", default=None)
    parser.add_argument("--known", action="store_true", help="print the mismatches as known_mismatches.txt lines")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--control", action="store_true",
                        help="both sides plain: checks the harness itself (must score 100%%)")
    args = parser.parse_args(argv)
    report = replay(args.notebooks, args.out, args.control)
    if args.control:
        print(report.text(verbose=args.verbose))
        return 0 if not report.mismatches() and not report.side_errors else 1
    if args.known:
        print("\n".join(known_lines(report, read_known())))
        print(f"# {report.score_line()}", file=sys.stderr)
    else:
        print(report.text(verbose=args.verbose))
        known = read_known()
        now = {c.id for c in report.mismatches()}
        scope = {c.id for c in report.cells}
        unexpected = sorted(now - known.keys())
        stale = sorted((known.keys() & scope) - now)
        print(f"against known_mismatches.txt: {len(unexpected)} unexpected, {len(stale)} listed but now matching"
              + (f" — unexpected: {', '.join(unexpected)}" if unexpected else "")
              + (f" — now matching: {', '.join(stale)}" if stale else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
