"""Every option of a cell, once: the table that ``%%modal_gpu``'s flags, ``%modal_config``, the
``ModalMagics`` traitlets and ``modal_magic.remote()`` are all made from.

A row of ``SETTINGS`` is one option: its name, its help, how its text is read (and checked), and —
for the five a session can change — its session default::

    Setting("timeout", "stop the cell after this many seconds …", parse=_seconds, session=None,
            flag={"metavar": "SECONDS"})

From the table come:

- the magic's flags, by decorating the magic with ``@flags`` (IPython's ``magic_arguments`` and one
  ``argument`` per row, ``--timeout`` for ``timeout``, ``--max-input`` for ``max_input``)::

      @flags
      @cell_magic
      def modal_gpu(self, line, cell):
          args = parse_argstring(self.modal_gpu, line)

- the session defaults, as traitlets of ``Defaults`` (``ModalMagics`` is one, so ``%config
  ModalMagics.timeout = 600`` and ``c.ModalMagics.timeout = 600`` in ``ipython_config.py`` set them);

- ``%modal_config timeout=600 gpu=H100``: ``configure(line)`` reads every item before anything is
  set, so a bad item changes nothing and the error names it and what is accepted;

- one cell's values, ``for_cell(given, defaults)``: what was given (a flag, or ``remote(timeout=…)``,
  read through the same row), else the session default — as ``CellOptions``'s fields::

      >>> fields = for_cell({"timeout": "600", "gpu": "h100:2"}, Defaults(), read=True)
      >>> fields["timeout"], fields["gpu"], fields["max_input_bytes"]
      (600.0, ('H100:2',), 4294967296)

A new option is one row here (and, if a cell needs it, one ``CellOptions`` field).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Float, TraitType, Unicode
from traitlets.config import Configurable

from ..backends import registry
from ..backends.modal.cost import Prices
from ..backends.modal.plan import DEFAULT_GPU, IDLE, NO_GPU, parse_gpu
from ..errors import UsageProblem

__all__ = ["Setting", "SETTINGS", "SESSION_OPTIONS", "Defaults", "flags", "configure", "for_cell", "session_default",
           "check_device", "DEVICES"]

_ABSENT: Any = object()
DEVICES = ("cpu", "auto", "cuda")


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if not n.isidentifier()]
    if bad:
        raise UsageProblem(f"not a variable name: {', '.join(map(repr, bad))} (give names separated by commas)")
    return names


def _seconds(value: Any) -> float:
    """``--timeout``'s seconds: a positive, finite number.

    ``inf`` is refused as ``nan`` is: no limit is said by leaving the flag out (and a session default is taken
    back with ``%modal_config timeout=none``), one spelling for one meaning; a number past every backend's own
    limit (Modal's 24 h) does the rest, and an infinite deadline would go on the wire to a container as a float
    JSON cannot carry.
    """
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise UsageProblem(f"--timeout takes a number of seconds, not {value!r}") from None
    if math.isinf(seconds) and seconds > 0:
        raise UsageProblem(f"--timeout must be a finite number of seconds, not {value!r}: for no limit leave the "
                           "flag out (%modal_config timeout=none takes back a session default)")
    if not seconds > 0:
        raise UsageProblem(f"--timeout must be a positive number of seconds, not {value!r}")
    return seconds


def _positive(flag: str, takes: str, convert: Callable[[str], float]) -> Callable[[Any], Any]:
    """A parser for ``flag``, whose value is ``convert``'s positive, finite number (``takes`` says what, e.g.
    'a positive number of cores like 4 or 0.5'): ``--cpu -2`` would otherwise ask Modal for minus two cores."""
    def parse(value: Any) -> Any:
        try:
            number = convert(value)
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number > 0):
            raise UsageProblem(f"{flag} takes {takes}, not {value!r}")
        return number

    parse.__name__ = convert.__name__
    return parse


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def _size(text: str) -> int:
    """``--max-input``'s size in bytes: at least one byte.

    A limit of 0 (or of less than a byte, ``0.5``) is refused rather than obeyed: it would refuse every cell that
    reads a variable while letting through one that reads none, which is never what is meant — a cell that is to
    send nothing just reads nothing.
    """
    match = re.fullmatch(r"\s*([0-9]+\.?[0-9]*|\.[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()]) \
        if match and match.group(2).lower() in _UNITS else 0
    if size < 1:
        raise UsageProblem(f"--max-input takes a positive size like 500MB or 2GiB, not {text!r}")
    return size


def _package(text: str) -> str:
    """A ``--pip`` package specifier: pip's own options (``-U``, ``--pre``) have no place in an image's pins."""
    options = [word for word in text.split() if word.startswith("-")]
    if options or not text.strip():
        raise UsageProblem(f"--pip takes package specifiers like transformers==4.44.2, not "
                           f"{(options or [text])[0]!r} (pip's options are not passed on)")
    return text.strip()


def _gpu(spec: str) -> tuple[str, ...]:
    return tuple(parse_gpu(spec))


def _idle(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not 2 <= seconds <= 3600:
        raise UsageProblem(f"idle takes the seconds (2 to 3600, Modal's range) a container may wait for the "
                           f"next cell, not {value!r}")
    return seconds


def _prices(path: Any) -> str | None:
    """A price file's path, checked by reading it now (so a bad file is refused by ``%modal_config``)."""
    if not path:
        return None
    Prices.load(str(path))
    return str(path)


@dataclass(frozen=True)
class Setting:
    """One option: how it is written, read, checked and explained, and (``session``) its session default."""

    name: str
    """Its Python name (``max_input``); the flag is ``--max-input`` unless ``flag`` names another."""
    help: str
    parse: Callable[[Any], Any] | None = None
    """Text (or ``remote()``'s value) → the value a cell uses; raises ``UsageProblem`` naming the flag."""
    default: Any = None
    """A per-cell option's value when not given."""
    session: Any = _ABSENT
    """The session default, as ``%modal_config`` shows it; set for the options a session can change."""
    choices: tuple[str, ...] | None = None
    cell: str | None = None
    """The ``CellOptions`` field it fills (default: its name); ``""``: none (the magic reads it itself)."""
    flag: dict[str, Any] = field(default_factory=dict)
    """The rest of the flag for ``argparse``: ``metavar``, ``nargs``, ``action``, its own spelling (``names``)."""
    per_cell: bool = True
    """Whether a cell may set it with a flag; False: a session setting only (what a container or pool keeps)."""

    @property
    def spelling(self) -> str:
        names: tuple[str, ...] = self.flag.get("names", ("--" + self.name.replace("_", "-"),))
        return names[0]

    @property
    def cell_field(self) -> str:
        return self.name if self.cell is None else self.cell

    def value(self, given: Any) -> Any:
        """``given`` read and checked: what a cell uses."""
        if self.choices is not None and given not in self.choices:
            raise UsageProblem(f"unknown {self.name} {given!r}; choose one of {', '.join(self.choices)}")
        return given if self.parse is None else self.parse(given)

    @property
    def numeric(self) -> bool:
        """The session keeps a number (``timeout``, none by default), not the text as written."""
        return self.session is None or isinstance(self.session, float)

    def stored(self, text: str) -> Any:
        """``%modal_config``'s text as the session keeps it (checked, but as written: ``8GB``, ``H100``)."""
        if self.session is None and text.lower() == "none":
            return None  # an option whose default is none takes it back
        value = self.value(text)
        return value if self.numeric else text

    def trait(self) -> TraitType[Any, Any]:
        help = (f"the session default for {self.spelling} (a cell's flag wins): " if self.per_cell
                else f"the session's {self.name}: ") + self.help.replace('%%', '%')
        if self.numeric:
            return Float(self.session, allow_none=True, help=help).tag(config=True)
        return Unicode(self.session, help=help).tag(config=True)

    def argument(self) -> Callable[[Any], Any]:
        """This option as an ``@argument`` of the magic: a session option's flag defaults to None (unset)."""
        extra = {key: value for key, value in self.flag.items() if key != "names"}
        if extra.get("action") is None:
            extra["type"] = None if self.parse is None else _flag_type(self.parse)
            extra["choices"] = self.choices
        return argument(*self.flag.get("names", (self.spelling,)), default=None if self.is_session else self.default,
                        help=self.help, **extra)

    @property
    def is_session(self) -> bool:
        return self.session is not _ABSENT


def _flag_type(parse: Callable[[Any], Any]) -> Callable[[str], Any]:
    """``parse`` for ``argparse``, which would reword our ``UsageProblem`` (a ``ValueError``) as 'invalid value'."""
    def read(text: str) -> Any:
        try:
            return parse(text)
        except UsageProblem as exc:
            raise UsageError(str(exc)) from None

    read.__name__ = parse.__name__  # argparse names a type in its own messages: 'invalid float value'
    return read


_BACKENDS = registry.choices()
SETTINGS: dict[str, Setting] = {setting.name: setting for setting in (
    Setting("backend", "where the cell runs: " + ", ".join(
        f"'{name}' ({registry.backend_class(name).summary})" for name in _BACKENDS[1:])
        + f" or 'auto' ({registry.auto_help()}). Default: auto.", session="auto", choices=_BACKENDS),
    Setting("inputs", "comma-separated names to send in addition to the ones the cell is seen to read",
            parse=_names, default=(), flag={"names": ("--in",), "dest": "inputs", "metavar": "NAMES"}),
    Setting("outputs", "comma-separated names to bring back; by default every name the cell binds",
            parse=_names, flag={"names": ("--out",), "dest": "outputs", "metavar": "NAMES"}),
    Setting("device", "where returned tensors land here: 'cpu' (default), 'auto' (CUDA if this machine has it) "
            "or 'cuda'", session="cpu", choices=DEVICES),
    Setting("timeout", "stop the cell after this many seconds (default: no limit of ours; a Modal cell runs at most "
            "Modal's maximum, 24 h)", parse=_seconds, session=None, flag={"metavar": "SECONDS"}),
    Setting("env", "environment variables to set for the cell there (none are forwarded otherwise)",
            parse=_names, default=(), flag={"metavar": "NAMES"}),
    Setting("max_input", "refuse to send more than this much data (default 4GiB), e.g. 20GB", parse=_size,
            session="4GiB", cell="max_input_bytes", flag={"metavar": "SIZE"}),
    Setting("gpu", "Modal GPU, e.g. A10G, H100:2, or an ordered fallback list H100,A100 (case-insensitive); "
            f"'{NO_GPU}' for a CPU container. Default: {DEFAULT_GPU} (%%modal_config gpu=…)", parse=_gpu,
            session=DEFAULT_GPU, flag={"metavar": "TYPE[:N][,TYPE…]"}),
    Setting("cpu", "CPU cores for the container",
            parse=_positive("--cpu", "a positive number of cores like 4 or 0.5", float)),
    Setting("memory", "memory for the container, in MiB",
            parse=_positive("--memory", "a positive number of MiB like 16384", int), cell="memory_mib",
            flag={"metavar": "MiB"}),
    Setting("pip", "extra packages for the container image (pin them: same pins, no rebuild)", parse=_package,
            default=(), flag={"nargs": "+", "metavar": "PKG==VER"}),
    Setting("map", "run one copy of the cell per element of EXPR (evaluated here; any iterable), in parallel, "
            "with NAME bound to the element; or NAME alone: an iterable already in the notebook. Each name the "
            "cell binds comes back as a list in element order (None where an element failed), the last "
            "expression as a list; in-place changes to notebook objects are dropped. "
            "E.g. --map lr=[0.1, 0.01] or --map seed=range(8)",
            parse=str, cell="", flag={"nargs": "+", "metavar": "NAME=EXPR"}),
    Setting("max_parallel", "with --map: at most N copies at once (default: every element at once on Modal, "
            "one local worker per core)", parse=int, cell="", flag={"metavar": "N"}),
    Setting("map_fail_fast", "with --map: cancel the other copies at the first failure (default: they finish)",
            default=False, cell="", flag={"action": "store_true"}),
    Setting("dry_run", "print the plan (backend, GPU, image, inputs and sizes) without running or sending anything",
            default=False, cell="", flag={"action": "store_true"}),
    Setting("quiet", "show only the cell's own output and errors", default=False, flag={"action": "store_true"}),
    Setting("fresh", "run without the remote session's resident values: every input is sent, nothing is kept",
            default=False, flag={"action": "store_true"}),
    Setting("idle", f"seconds the single-cell Modal container waits, billed, for the next cell before it scales "
            f"down (default {IDLE:g}; 2 to 3600); a new value applies to the next container started, the warm "
            "one keeps its own (%modal_stop stops it now)", parse=_idle, session=float(IDLE), per_cell=False),
    Setting("prices", "a JSON file of Modal prices put over the package's table (any of its entries, e.g. "
            '{"gpu_per_second": {"H100": 0.0012}}); cost estimates use it', parse=_prices, session="",
            per_cell=False),
)}
_SESSION_ORDER = ("backend", "gpu", "device", "timeout", "max_input", "idle", "prices")  # as %modal_config lists them
SESSION_OPTIONS: dict[str, Setting] = {name: SETTINGS[name] for name in _SESSION_ORDER}
"""The options a session can change (``%modal_config``, ``%config ModalMagics.<name>``, ``remote()``)."""
assert set(SESSION_OPTIONS) == {name for name, setting in SETTINGS.items() if setting.is_session}


class Defaults(Configurable):
    """The session defaults, a traitlet per ``SESSION_OPTIONS`` row (``ModalMagics`` is one: ``%config`` finds it)."""

    locals().update({name: setting.trait() for name, setting in SESSION_OPTIONS.items()})  # the class's own traits


def flags(magic: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``magic`` every option as a flag, in the table's order (``@magic_arguments`` and ``@argument``s)."""
    for setting in reversed([setting for setting in SETTINGS.values() if setting.per_cell]):
        magic = setting.argument()(magic)
    decorated: Callable[..., Any] = magic_arguments()(magic)
    return decorated


def configure(line: str) -> dict[str, Any]:
    """``%modal_config``'s ``name=value`` items, every one read before any is set: {name: value to set}.

    Raises ``UsageProblem`` for the first bad item, naming it and what it takes; then nothing is to change.
    """
    changes: dict[str, Any] = {}
    for item in line.split():
        name, sep, text = item.partition("=")
        setting = SESSION_OPTIONS.get(name)
        if not sep or setting is None:
            raise UsageProblem(f"%modal_config takes name=value with a name from {', '.join(SESSION_OPTIONS)}; "
                               f"got {item!r}. Nothing was changed.")
        try:
            changes[name] = setting.stored(text)
        except UsageProblem as exc:
            raise UsageProblem(f"%modal_config {item}: {str(exc).rstrip('.')}. Nothing was changed.") from None
    return changes


def session_default(name: str, defaults: Any = None) -> Any:
    """The value a cell uses for session option ``name``: from ``defaults`` (a ``Defaults``), else the table's."""
    setting = SESSION_OPTIONS[name]
    stored = setting.session if defaults is None else getattr(defaults, name)
    return None if stored is None else setting.value(stored)


def for_cell(given: Mapping[str, Any], defaults: Defaults, *, read: bool = False) -> dict[str, Any]:
    """One cell's ``CellOptions`` fields: each option ``given`` (not None), else its session or per-cell default.

    ``read``: the given values are as a caller wrote them (``remote(timeout=…)``), to read and check through
    the table; otherwise they were read already (the flags, by ``argparse``).
    """
    fields: dict[str, Any] = {}
    for name, setting in SETTINGS.items():
        if setting.cell_field == "":
            continue
        value = given.get(name)
        if value is not None and read:
            value = [setting.value(v) for v in value] if setting.flag.get("nargs") else setting.value(value)
        if value is None:
            value = session_default(name, defaults) if setting.is_session else setting.default
        fields[setting.cell_field] = tuple(value) if isinstance(value, list) else value
    return fields


def check_device(device: str) -> None:
    """``--device`` can be had here: a ``cuda`` one needs this machine to have CUDA (checked as the cell runs)."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageProblem(f"--device {device}, but this machine has no CUDA device to put results on; "
                               "use --device cpu (the default) or auto.")
