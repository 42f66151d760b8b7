"""The IPython face: ``%%modal_gpu`` parses its flags and hands the cell to the driver."""

from __future__ import annotations

import re
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Float, Unicode

from . import driver
from ..backends.registry import CHOICES, close_all
from ..errors import UsageProblem
from ..protocol import Event
from .fanout import MapFailed, MapSpec
from ..backends.modal.plan import DEFAULT_GPU, NO_GPU, parse_gpu
from .output import show_event
from .report import resident_report
from .session import SESSION
from .view.live import make_view


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if not n.isidentifier()]
    if bad:
        raise UsageError(f"not a variable name: {', '.join(map(repr, bad))} (give names separated by commas)")
    return names


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--timeout takes a number of seconds, not {text!r}") from None
    if value <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    return value


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def _size(text: str) -> int:
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise UsageError(f"--max-input takes a size such as 500MB, 20GB or 1GiB, not {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@magics_class
class ModalMagics(Magics):
    """Run cells on a GPU container (or a local worker) as if they ran here.

    Session defaults are traitlets, set with ``%config ModalMagics.timeout = 600``
    or in ``ipython_config.py`` (``c.ModalMagics.timeout = 600``); flags win.
    """

    backend = Unicode("auto", help="default for --backend").tag(config=True)
    device = Unicode("cpu", help="default for --device").tag(config=True)
    timeout = Float(None, allow_none=True, help="default for --timeout, in seconds").tag(config=True)
    max_input = Unicode("4GiB", help="default for --max-input").tag(config=True)
    gpu = Unicode(DEFAULT_GPU, help=f"default for --gpu ('{NO_GPU}': a CPU container)").tag(config=True)

    @magic_arguments()
    @argument("--backend", choices=CHOICES, default=None,
              help="where the cell runs: 'modal' (a GPU container), 'local' (a worker process "
                   "on this machine) or 'auto' (Modal when configured, else local). Default: auto.")
    @argument("--in", dest="inputs", type=_names, default=(), metavar="NAMES",
              help="comma-separated names to send in addition to the ones the cell is seen to read")
    @argument("--out", dest="outputs", type=_names, default=None, metavar="NAMES",
              help="comma-separated names to bring back; by default every name the cell binds")
    @argument("--device", choices=("cpu", "auto", "cuda"), default=None,
              help="where returned tensors land here: 'cpu' (default), 'auto' (CUDA if this "
                   "machine has it) or 'cuda'")
    @argument("--timeout", type=_seconds, default=None, metavar="SECONDS",
              help="stop the cell after this many seconds (default: no limit of ours; "
                   "a Modal cell runs at most Modal's maximum, 24 h)")
    @argument("--env", type=_names, default=(), metavar="NAMES",
              help="environment variables to set for the cell there (none are forwarded otherwise)")
    @argument("--max-input", type=_size, default=None, metavar="SIZE",
              help="refuse to send more than this much data (default 4GiB), e.g. 20GB")
    @argument("--gpu", type=str, default=None, metavar="TYPE[:N][,TYPE…]",
              help=f"Modal GPU, e.g. A10G, H100:2, or an ordered fallback list H100,A100 (case-insensitive); "
                   f"'{NO_GPU}' for a CPU container. Default: {DEFAULT_GPU} (%%modal_config gpu=…)")
    @argument("--cpu", type=float, default=None, help="CPU cores for the container")
    @argument("--memory", type=int, default=None, metavar="MiB", help="memory for the container, in MiB")
    @argument("--pip", nargs="+", default=(), metavar="PKG==VER",
              help="extra packages for the container image (pin them: same pins, no rebuild)")
    @argument("--map", dest="map", nargs="+", default=None, metavar="NAME=EXPR",
              help="run one copy of the cell per element of EXPR (evaluated here; any iterable), in parallel, "
                   "with NAME bound to the element; or NAME alone: an iterable already in the notebook. Each "
                   "name the cell binds comes back as a list in element order (None where an element failed), "
                   "the last expression as a list; in-place changes to notebook objects are dropped. "
                   "E.g. --map lr=[0.1, 0.01] or --map seed=range(8)")
    @argument("--max-parallel", type=int, default=None, metavar="N",
              help="with --map: at most N copies at once (default: every element at once on Modal, "
                   "one local worker per core)")
    @argument("--map-fail-fast", action="store_true",
              help="with --map: cancel the other copies at the first failure (default: they finish)")
    @argument("--dry-run", action="store_true",
              help="print the plan (backend, GPU, image, inputs and sizes) without running or sending anything")
    @argument("--quiet", action="store_true", help="show only the cell's own output and errors")
    @argument("--fresh", action="store_true",
              help="run without the remote session's resident values: every input is sent, nothing is kept")
    @cell_magic
    def modal_gpu(self, line: str, cell: str) -> Any:
        """Run this cell remotely; its results come back into the notebook.

        The variables the cell reads are sent, the cell runs in a fresh
        namespace on the backend (``!cmd`` and ``%magic`` lines run there too),
        and the names it assigns come back — tensors mapped to this machine's
        CPU. The last expression is shown as ``Out[n]``; an exception in the
        cell is raised here with the cell's own line numbers. The tensors a cell
        received and made stay on the backend while the notebook holds them
        (graphs included), so later cells send an unchanged one as a reference;
        ``--fresh`` runs a cell without them.

        With ``--map NAME=EXPR`` one copy of the cell runs per element, in
        parallel (Modal containers, or local workers), with NAME bound to the
        element; the names it binds come back as lists in element order, and
        failed elements are raised together at the end (``MapFailed``).

        Example::

            %%modal_gpu --gpu A10G
            y = model(x.cuda())

            %%modal_gpu --map lr=[0.1, 0.01, 0.001]
            loss = train(model_config, lr)
        """
        args = parse_argstring(self.modal_gpu, line)
        try:
            return self._run(args, line, cell)
        except UsageProblem as exc:
            raise UsageError(str(exc)) from None
        except MapFailed as exc:  # IPython leaves a group to Python's display: show it from here, not our internals
            raise exc.with_traceback(None) from None

    def _run(self, args: Any, line: str, cell: str) -> Any:
        options = driver.CellOptions(
            backend=args.backend or self.backend, inputs=args.inputs, outputs=args.outputs,
            device=args.device or self.device, timeout=args.timeout or self.timeout, quiet=args.quiet,
            env=args.env, max_input_bytes=args.max_input or _size(self.max_input),
            gpu=tuple(parse_gpu(args.gpu or self.gpu)), cpu=args.cpu, memory_mib=args.memory,
            pip=tuple(args.pip), fresh=args.fresh, mapping=_mapping(args))
        shell = self.shell
        hidden = {k for k, v in shell.user_ns_hidden.items() if shell.user_ns.get(k, _ABSENT) is v}
        if args.dry_run:
            print("\n".join(driver.plan_cell(cell, shell.user_ns, options, hidden=hidden)))
            return None
        view = make_view(args.quiet)

        def on_event(event: Event) -> None:
            view(event)
            show_event(event)

        outcome = driver.run_cell(cell, shell.user_ns, options, hidden=hidden, on_event=on_event,
                                  execution_count=_prompt_number(shell), colors=str(shell.colors),
                                  header=f"%%modal_gpu {line}".rstrip())
        return None if outcome.value is driver.NO_VALUE else outcome.value


    @line_magic
    def modal_stop(self, line: str = "") -> None:
        """Stop this session's backends: the Modal app (and its warm container) and the local worker.

        The next ``%%modal_gpu`` cell starts them again.
        """
        close_all()
        SESSION.forget()
        print("modal_gpu: stopped the Modal app and the local worker, and released what they held; "
              "the next cell starts afresh.")

    @line_magic
    def modal_resident(self, line: str = "") -> None:
        """Show what the remote session keeps for this notebook (by variable name), and the memory it holds."""
        print("\n".join(resident_report(self.shell.user_ns)))

    @line_magic
    def modal_config(self, line: str = "") -> None:
        """Show or set session defaults: ``%modal_config gpu=A10G timeout=600 backend=modal max_input=8GB``.

        The same settings as ``%config ModalMagics.<name>`` and ``c.ModalMagics.<name>`` in
        ``ipython_config.py``; a flag on a cell still wins.
        """
        settable = {"backend": str, "gpu": str, "device": str, "timeout": float, "max_input": str}
        for item in line.split():
            name, sep, value = item.partition("=")
            if not sep or name not in settable:
                raise UsageError(f"%modal_config takes name=value with a name from {', '.join(settable)}; got {item!r}")
            if name == "backend" and value not in CHOICES:
                raise UsageError(f"backend must be one of {', '.join(CHOICES)}, not {value!r}")
            if name == "max_input":
                _size(value)
            if name == "gpu":
                try:
                    parse_gpu(value)
                except UsageProblem as exc:
                    raise UsageError(str(exc)) from None
            setattr(self, name, None if value.lower() == "none" else settable[name](value))
        for name in settable:
            print(f"{name} = {getattr(self, name)!r}")


_ABSENT = object()


def _mapping(args: Any) -> MapSpec | None:
    if args.map is None:
        if args.max_parallel is not None or args.map_fail_fast:
            raise UsageProblem("--max-parallel and --map-fail-fast go with --map NAME=EXPR.")
        return None
    # The expression may hold spaces (`--map lr=[0.1, 0.01]`): its words come back as they were written.
    return MapSpec.parse(" ".join(args.map), max_parallel=args.max_parallel, fail_fast=args.map_fail_fast)


def _prompt_number(shell: Any) -> int:
    """The number of the cell being run, as its prompt shows it (``In [6]``), under IPython 8 and 9.

    ``shell.execution_count`` cannot say: IPython 9 increments it before the cell runs, IPython 8 after.
    Both hand the running cell's result, numbered from the prompt, to the display hook for the length
    of the cell; outside a cell (``run_cell_magic`` called directly) the counter is the next prompt's.
    """
    running = getattr(shell.displayhook, "exec_result", None)
    number = getattr(running, "execution_count", None)
    return number if isinstance(number, int) else shell.execution_count
