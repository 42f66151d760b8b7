"""Spot credentials among what a cell would send, so they do not leave the machine by accident.

A cell that merely mentions ``OPENAI_API_KEY`` would otherwise ship the key to
a container. We hold such variables back unless the user names them with
``--in``. Names count only for string values (``tokens = tokenizer(text)`` is
not a secret; ``hf_token = "hf_…"`` is), and not the tokenizer's own words
(``pad_token = "<pad>"``); values count whatever the name.

A secret need not be a variable of its own: pickle sends what a variable
holds, so we look where cloudpickle would — inside dicts, lists, tuples and
sets, an object's attributes (and a notebook class's), a notebook function's
defaults, the variables it closes over and the globals its code names
(``def ask(): return OPENAI_API_KEY`` sends the key). The walk is bounded in
depth and in objects looked at per variable, and never reads an array's or a
tensor's contents, so a million-element list or a large tensor costs next to
nothing; a secret past the bound goes unseen. A string that equals a
notebook variable whose name suggests a credential counts too, wherever it is
(``--map tok=[api_token]``, ``cfg = {'t': api_token}``).
"""

from __future__ import annotations

import functools
import re
import reprlib
import types
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

from ..errors import UsageProblem
from ..wire.payload import travels_by_value

__all__ = ["Finding", "Guard", "credential_reason", "held_back", "hold_back"]

_SECRET_NAME = re.compile(
    r"(api_?key|apikey|secret|passw(or)?d|pwd|token|credential|private_?key|access_?key|aws_?key|auth)",
    re.IGNORECASE)
_NOT_SECRET = re.compile(r"tokeniz\w*|(pad|eos|bos|unk|sep|cls|mask|special|start|end|stop)_?tokens?|author",
                         re.IGNORECASE)
"""Words that contain a secret's word and name none: the tokenizer's vocabulary, an author."""
_SECRET_VALUE = [
    (re.compile(r"^sk-[A-Za-z0-9_\-]{16,}"), "an OpenAI/Anthropic-style API key"),
    (re.compile(r"^(ghp|gho|ghu|ghs|github_pat)_[A-Za-z0-9_]{20,}"), "a GitHub token"),
    (re.compile(r"^hf_[A-Za-z0-9]{20,}"), "a Hugging Face token"),
    (re.compile(r"^AKIA[0-9A-Z]{16}$"), "an AWS access key id"),
    (re.compile(r"^xox[abprs]-[A-Za-z0-9\-]{10,}"), "a Slack token"),
    (re.compile(r"^(ak|as)-[A-Za-z0-9]{20,}"), "a Modal token"),
    (re.compile(r"^eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\."), "a JSON web token"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
]
_ANY_VALUE = re.compile(r"^(sk-|gh[opus]_|github_pat_|hf_|AKIA|xox|ak-|as-|eyJ)|-----BEGIN")
"""What every pattern above starts with: one search tells most strings apart from them all."""
_READ = 1 << 16
"""Characters of a string (bytes of a bytes object) the patterns look at: a credential sits at the start."""
_KNOWN_LENGTH = 6
"""A named secret shorter than this is not looked for elsewhere: 'on', 'yes' would turn up everywhere."""
DEPTH = 8
"""How deep the walk goes below a variable."""
BUDGET = 10_000
"""Objects looked at per variable: enough for any config, a fraction of a millisecond per thousand."""
_ATOMS = (int, float, complex, bool, type(None))


@dataclass(frozen=True)
class Finding:
    """A credential among what a variable holds: where it is, and what gave it away (never its value)."""

    where: str
    """A path from the variable: ``cfg['hf']``, ``client.api_key``, ``OPENAI_API_KEY (a global that ask reads)``;
    empty when the variable itself is the secret."""
    what: str
    """'a value that looks like a Hugging Face token', 'a string under a name that suggests a credential'."""

    def said(self, subject: str) -> str:
        """'cfg', which holds a value that looks like a Hugging Face token at cfg['hf']."""
        return f"{subject}, which holds {self.what}" + (f" at {self.where}" if self.where else "")


def credential_reason(name: str, value: Any) -> str | None:
    """Why ``name = value`` looks like a credential, or ``None`` when it does not (the value itself only)."""
    text = _text(value)
    if text is None:
        return None
    what = _pattern(text)
    if what is not None:
        return f"its value looks like {what}"
    if text and secret_name(name):
        return "its name suggests a credential"
    return None


@functools.lru_cache(maxsize=4096)  # the same attribute and key names come back object after object
def secret_name(name: str) -> bool:
    """Whether ``name`` names a credential (``hf_token``, ``db_password``; not ``pad_token`` or ``author``)."""
    return _SECRET_NAME.search(_NOT_SECRET.sub("", name)) is not None


class Guard:
    """Finds credentials in the variables a cell sends; ``named`` (``--in``) go as they are, on purpose.

    The notebook's secret-named strings are remembered (not those named), so that a copy of one is known
    wherever it turns up.
    """

    def __init__(self, namespace: Mapping[str, Any], named: Collection[str] = ()) -> None:
        self.named = frozenset(named)
        self.known: dict[str, str] = {}
        for name, value in list(namespace.items()):
            if name in self.named or not isinstance(value, (str, bytes, bytearray)) or not secret_name(name):
                continue
            text = _text(value)
            if text is not None and len(text) >= _KNOWN_LENGTH:
                self.known.setdefault(text, name)

    def find(self, name: str, value: Any) -> Finding | None:
        """The first credential ``value`` (bound to ``name``) holds, or ``None``."""
        found = _Walk(self).visit(value, name, name, 0)
        return found if found is None or found.where != name else Finding("", found.what)


def hold_back(names: Collection[str], namespace: Mapping[str, Any], named: Collection[str]) -> None:
    """Raise a ``UsageProblem`` naming the variables among ``names`` that hold a credential (``named`` go)."""
    guard = Guard(namespace, named)
    found = {n: finding for n in names if n not in guard.named and (finding := guard.find(n, namespace[n]))}
    if found:
        raise held_back({repr(n): finding for n, finding in found.items()}, list(found))


def held_back(found: Mapping[str, Finding], names: Collection[str]) -> UsageProblem:
    """The one sentence for what was held back: ``found`` by how to call each, and the names for ``--in``."""
    listed = "; ".join(finding.said(subject) for subject, finding in found.items())
    return UsageProblem(f"held back {listed}: nothing was sent and the cell did not run. "
                        f"If the cell needs it, name it: --in {','.join(names)}")


class _Walk:
    """One variable's walk: what is left of the budget, and the containers already seen (cycles)."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.left = BUDGET
        self.seen: set[int] = set()

    def visit(self, value: Any, where: str, name: str | None, depth: int) -> Finding | None:
        """``value``, found at ``where`` under ``name`` (a key, an attribute; ``None``: a list's element)."""
        if self.left <= 0 or depth > DEPTH or isinstance(value, _ATOMS):
            return None
        self.left -= 1
        if isinstance(value, (str, bytes, bytearray)):
            return self._text(value, where, name)
        if id(value) in self.seen or isinstance(value, types.ModuleType):  # a module goes by name
            return None
        self.seen.add(id(value))
        try:
            for part, part_where, part_name in self._parts(value, where):
                found = self.visit(part, part_where, part_name, depth + 1)
                if found is not None:
                    return found
        except Exception:  # noqa: BLE001 - an object that will not be looked into is not walked; pickle decides
            return None
        return None

    def _text(self, value: str | bytes | bytearray, where: str, name: str | None) -> Finding | None:
        text = _text(value)
        if text is None or not text:
            return None
        what = _pattern(text)
        if what is not None:
            return Finding(where, f"a value that looks like {what}")
        if name is not None and secret_name(name):
            return Finding(where, "a string under a name that suggests a credential")
        known = self.guard.known.get(text)
        if known is not None and known != name:
            return Finding(where, f"the value of {known!r} (a name that suggests a credential)")
        return None

    def _parts(self, value: Any, where: str) -> Iterator[tuple[Any, str, str | None]]:
        """What pickle would send of ``value``: (part, where, its name), at most what is left of the budget."""
        if isinstance(value, dict):
            return self._items(value, where)
        if isinstance(value, (list, tuple)):
            return ((v, f"{where}[{i}]", None) for i, v in enumerate(islice(value, self.left)))
        if isinstance(value, (set, frozenset)):
            return ((v, f"an element of {where}", None) for v in islice(value, self.left))
        if isinstance(value, types.FunctionType):
            return _function_parts(value, where, self.guard.named)
        if isinstance(value, types.MethodType):
            return iter([(value.__self__, f"{where}.__self__", None), (value.__func__, where, None)])
        if isinstance(value, functools.partial):
            return iter([(value.func, where, None), (value.args, f"{where}.args", None),
                         (value.keywords, f"{where}.keywords", None)])
        if isinstance(value, type):
            return _class_parts(value, where)
        return _object_parts(value, where)

    def _items(self, mapping: dict[Any, Any], where: str) -> Iterator[tuple[Any, str, str | None]]:
        """A dict's values under their keys; a key that is text is looked at too (pickle sends it alike)."""
        for key, part in islice(dict.items(mapping), self.left):
            if isinstance(key, (str, bytes)):
                yield key, f"a key of {where}", None
            yield part, f"{where}[{self._key(key)}]", key if isinstance(key, str) else None

    def _key(self, key: Any) -> str:
        """A key as a path shows it: short, and never a credential (one held as a key is a finding of its own)."""
        text = _text(key)
        if text is not None and (_pattern(text) is not None or text in self.guard.known):
            return "'…'"
        return _SHORT.repr(key)


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 40


def _function_parts(function: types.FunctionType, where: str,
                    named: Collection[str]) -> Iterator[tuple[Any, str, str | None]]:
    """A notebook function's defaults, closure, attributes and the globals its code names: what cloudpickle sends
    of a function it pickles by value (one it pickles by reference, a library's, goes as its name)."""
    if not travels_by_value(function):
        return
    code = function.__code__
    positional = code.co_varnames[:code.co_argcount]
    defaults = function.__defaults__ or ()
    for parameter, default in zip(positional[len(positional) - len(defaults):], defaults, strict=False):
        yield default, f"{where}({parameter}=…)", parameter
    for parameter, default in (function.__kwdefaults__ or {}).items():
        yield default, f"{where}({parameter}=…)", parameter
    for variable, cell in zip(code.co_freevars, function.__closure__ or (), strict=False):
        try:
            contents = cell.cell_contents
        except ValueError:  # not bound yet
            continue
        yield contents, f"{variable} (closed over by {where})", variable
    for attribute, part in vars(function).items():
        yield part, f"{where}.{attribute}", attribute
    scope = function.__globals__
    for global_name in dict.fromkeys(_code_names(code)):
        if global_name in scope and global_name not in named:
            yield scope[global_name], f"{global_name} (a global that {where} reads)", global_name


def _code_names(code: types.CodeType) -> Iterator[str]:
    """The names ``code`` and the code nested in it (inner functions, comprehensions) refer to."""
    yield from code.co_names
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _code_names(constant)


def _class_parts(cls: type, where: str) -> Iterator[tuple[Any, str, str | None]]:
    """A notebook class's attributes and methods (it goes by value); an importable one goes by name."""
    if not travels_by_value(cls):
        return
    for attribute, part in list(vars(cls).items()):
        if not (attribute.startswith("__") and attribute.endswith("__")):
            yield part, f"{where}.{attribute}", attribute


def _object_parts(value: Any, where: str) -> Iterator[tuple[Any, str, str | None]]:
    """An object's attributes and slots (what pickle sends of most objects), then its class when that goes by
    value. Each is read as the object's own: a class's ``__getattr__`` (a proxy's) is never asked. An array's
    or a tensor's contents are no attribute: they are never read."""
    try:
        attributes = object.__getattribute__(value, "__dict__")
    except AttributeError:
        attributes = None
    if isinstance(attributes, dict):
        for attribute, part in islice(attributes.items(), BUDGET):
            yield part, f"{where}.{attribute}", attribute
    for slot in _slots(type(value)):
        try:
            part = object.__getattribute__(value, slot)
        except AttributeError:  # not set
            continue
        yield part, f"{where}.{slot}", slot
    yield type(value), f"type({where})", None


def _slots(cls: type) -> Iterator[str]:
    """The slot names ``cls`` and its bases declare (``__dict__`` and ``__weakref__`` are no state)."""
    for klass in cls.__mro__:
        declared = klass.__dict__.get("__slots__", ())
        for slot in (declared,) if isinstance(declared, str) else declared:
            if slot not in ("__dict__", "__weakref__"):
                yield slot


def _text(value: Any) -> str | None:
    """A string's start, stripped; bytes decoded leniently (``b'\\xffhunter2'`` is text to a reader); else None."""
    if isinstance(value, str):
        return value[:_READ].strip()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value[:_READ]).decode("utf-8", "replace").strip()
    return None


def _pattern(text: str) -> str | None:
    """What ``text`` looks like, when it looks like a known kind of credential."""
    if _ANY_VALUE.search(text) is None:
        return None
    return next((what for pattern, what in _SECRET_VALUE if pattern.search(text)), None)
