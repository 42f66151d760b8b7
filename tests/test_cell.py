"""Cell analysis on tricky cells: what is read, bound and deleted."""

from __future__ import annotations

import pytest

from modal_magic.notebook.analysis import analyze


def reads(src: str) -> set[str]:
    return set(analyze(src).reads)


def binds(src: str) -> set[str]:
    return set(analyze(src).binds)


@pytest.mark.parametrize(
    "src, expected",
    [
        ("y = x * 2", {"x"}),
        ("x = 1\ny = x", set()),                       # bound before read: not an input
        ("y = x\nx = 1", {"x"}),                       # read before bound
        ("x += 1", {"x"}),                             # aug-assign reads first
        ("[a * k for a in xs]", {"k", "xs"}),          # comprehension scope: `a` is local
        ("[a for a in a]", {"a"}),                     # the first iterable is the outer scope's
        ("{k: v for k, v in d.items() if v > t}", {"d", "t"}),
        ("def f(n):\n    return n + K\n", {"K"}),     # a function body reads globals
        ("def f(n=D):\n    return n\n", {"D"}),       # defaults evaluated at def time
        ("def f():\n    def g():\n        return Z\n    return g\n", {"Z"}),
        ("def f(z):\n    def g():\n        return z\n    return g\n", set()),  # closure, not global
        ("class C(Base):\n    attr = V\n    def m(self):\n        return attr\n", {"Base", "V", "attr"}),
        ("lambda q: q + R", {"R"}),
        ("print(len(x))", {"print", "len", "x"}),    # builtins are reported (and later dropped)
        ("if c:\n    z = 1\nz", {"c", "z"}),           # bound only on one path: may come from outside
        ("for i in it:\n    pass\ni", {"it", "i"}),
        ("try:\n    pass\nexcept E as e:\n    pass", {"E"}),
        ("with open(p) as fh:\n    fh.read()", {"open", "p"}),
        ("match v:\n    case [a, *rest]:\n        a\n    case {'k': w, **kw}:\n        w", {"v"}),
        ("(w := f0())\nw", {"f0"}),
        ("def g():\n    global G\n    G = 1\n    return H\n", {"H"}),
        ("def g():\n    global G\n    G += 1\n", {"G"}),          # aug-assign of a global reads it
        ("del x", set()),
        ("c = 1\nif f:\n    del c\nc", {"f", "c"}),        # deleted on one path: may come from outside
        ("get_ipython().system('echo hi')", {"get_ipython"}),
    ],
)
def test_reads(src: str, expected: set[str]) -> None:
    assert reads(src) == expected


@pytest.mark.parametrize(
    "src, expected",
    [
        ("a = b = 1", {"a", "b"}),
        ("a, (b, *c) = t", {"a", "b", "c"}),
        ("x: int = 1", {"x"}),
        ("x: int", set()),                             # annotation alone binds nothing
        ("x += 1", {"x"}),
        ("import os.path, numpy as np\nfrom m import a as b", {"os", "np", "b"}),
        ("def f(): pass\nclass C: pass", {"f", "C"}),
        ("for i, j in p: pass", {"i", "j"}),
        ("with a as (b, c): pass", {"b", "c"}),
        ("try:\n    pass\nexcept E as e:\n    pass", {"e"}),
        ("if (n := 3): pass", {"n"}),
        ("match v:\n    case Point(x=px) | [px, *_]:\n        pass\n    case {**rest}:\n        pass", {"px", "rest"}),
        ("def f():\n    global G\n    G = 1", {"f", "G"}),
        ("def f():\n    L = 1", {"f"}),                # function locals stay local
        ("[q for q in r]", set()),                     # comprehension variables do not leak
        ("obj.attr = 1\nd['k'] = 2", set()),           # mutation is not binding
    ],
)
def test_binds(src: str, expected: set[str]) -> None:
    assert binds(src) == expected


def test_deletes_and_rebinding() -> None:
    assert analyze("del a, b").deletes == ("a", "b")
    assert analyze("del a\na = 2").deletes == ("a",)   # deleted, then bound again (the rebinding may not run)
    assert analyze("a = 1\ndel a").deletes == ("a",)


def test_ends_with_expression() -> None:
    assert analyze("x = 1\nx + 1").ends_with_expression
    assert not analyze("x = 1").ends_with_expression
    assert not analyze("").ends_with_expression


def test_star_import_binds_nothing_known_in_advance_and_reads_what_follows() -> None:
    analysis = analyze("from math import *\ny = sqrt(x)")
    assert analysis.binds == ("y",) and analysis.reads == ("sqrt", "x")


def test_syntax_error_is_a_syntax_error() -> None:
    with pytest.raises(SyntaxError):
        analyze("x = (")
