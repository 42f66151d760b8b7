"""``%%modal_gpu``'s line read into its flags, every mistake in it told in one sentence.

IPython's ``parse_argstring`` splits the line and hands the words to ``argparse``, which reads a mistyped
line in its own ways: an unclosed quote is ``shlex``'s ``ValueError`` with a traceback, a value that starts
with ``-`` (``--max-input -5GB``, ``--timeout -inf``, ``--map lr=[0.1, -0.01]``) looks like a flag ("expected
one argument"), and a misspelt flag is "unrecognized arguments". Here the line is split the same way
(IPython's ``arg_split``, quotes kept), a word that can only be a value is kept with its flag, and what is
left over is named, with the nearest flag when it looks like a misspelt one::

    >>> read(ModalMagics.modal_gpu, "--timout 3")
    Traceback (most recent call last):
    UsageProblem: %%modal_gpu has no flag --timout; did you mean --timeout?
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from typing import Any

from IPython.utils.process import arg_split

from ..errors import UsageProblem
from .options import SETTINGS, Setting

__all__ = ["read"]


def read(magic: Any, line: str) -> argparse.Namespace:
    """The flags in ``line`` of ``magic``, the magic's function: ``options.flags`` gave it its parser.

    Raises ``UsageProblem`` for an unclosed quote, a misspelt flag or a stray word; the table's parsers raise it
    for a bad value (``argparse`` raises IPython's ``UsageError`` for the rest, such as a flag with no value).
    """
    try:
        words = arg_split(line)
    except ValueError:  # shlex: "No closing quotation"
        raise UsageProblem(f"the flags have an unclosed quote: {line.strip()!r}; close it, or leave it out") from None
    parser: argparse.ArgumentParser = magic.parser
    args, extra = parser.parse_known_args(_values_kept(words))
    if extra:
        raise UsageProblem(_left_over(extra))
    return args


def _spellings() -> dict[str, Setting]:
    """Every flag as written (``--in``, ``--max-input``…) and its row."""
    return {name: setting for setting in SETTINGS.values()
            for name in setting.flag.get("names", (setting.spelling,))}


def _flag(word: str) -> Setting | None:
    """The row ``word`` names, as ``argparse`` reads it: the whole flag, or a prefix of one flag only."""
    if not word.startswith("--"):
        return None
    spellings = _spellings()
    name = word.partition("=")[0]
    if name in spellings:
        return spellings[name]
    matches = [setting for spelled, setting in spellings.items() if spelled.startswith(name)]
    return matches[0] if len(matches) == 1 else None


def _values_kept(words: Sequence[str]) -> list[str]:
    """``words`` with each that starts with ``-`` but must be a value given to ``argparse`` as one.

    Right after a flag that takes a value it becomes ``--flag=value`` (so the flag's own parser judges it:
    "--max-input takes a positive size like 500MB or 2GiB, not '-5GB'"); among the values of a flag that takes
    several (``--map``'s words, ``--pip``'s packages) it joins the word before it, with the space between, as
    ``--map`` joins its words anyway.
    """
    kept: list[str] = []
    current: Setting | None = None  # the flag whose values are being read
    values = 0
    for word in words:
        if current is not None and word.startswith("-") and len(word) > 1 and not word.startswith("--"):
            if values == 0:
                kept[-1] = f"{kept[-1]}={word}"
            else:
                kept[-1] = f"{kept[-1]} {word}"
            values += 1
            if not current.flag.get("nargs"):
                current = None
            continue
        if word.startswith("--"):
            setting = _flag(word)
            current = setting if "=" not in word and setting is not None and setting.flag.get("action") is None \
                else None
            values = 0
        elif current is not None:
            values += 1
            if not current.flag.get("nargs"):
                current = None
        kept.append(word)
    return kept


def _looks_like_a_flag(word: str) -> bool:
    """``--timout``, ``-x``; not a stray negative number (``--quiet -5``)."""
    return word.startswith("--") or (word.startswith("-") and word[1:2].isalpha())


def _left_over(extra: Sequence[str]) -> str:
    """The sentence for the words ``argparse`` did not take: a flag it does not know, or a stray value."""
    flags = [word.partition("=")[0] for word in extra if _looks_like_a_flag(word)]
    if not flags:
        return (f"%%modal_gpu does not take {' '.join(extra)!r} there: each value follows its flag, as in "
                "--timeout 600 (%%modal_gpu? lists the flags)")
    unknown = flags[0]
    # Compared without their dashes, which every flag shares: with them, '--bogus' is 'near' '--out'.
    nearest = difflib.get_close_matches(unknown.lstrip("-"), [flag[2:] for flag in _spellings()], n=1, cutoff=0.6)
    hint = f"did you mean --{nearest[0]}?" if nearest else "%%modal_gpu? lists the flags"
    return f"%%modal_gpu has no flag {unknown}; {hint}"
