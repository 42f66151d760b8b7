"""The IPython face: ``%%modal_gpu`` parses its flags and hands the cell to the driver."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from ..errors import UsageProblem
from ..protocol import Event
from . import driver, dry_run, extension, flagline, options
from .fanout import MapFailed, MapSpec
from .output import show_event
from .report import resident_report
from .status import status_lines
from .view.live import make_view


@magics_class
class ModalMagics(Magics, options.Defaults):
    """Run cells on a GPU container (or a local worker) as if they ran here.

    Session defaults are traitlets (``options.Defaults``), set with ``%config ModalMagics.timeout = 600``,
    ``%modal_config timeout=600`` or in ``ipython_config.py`` (``c.ModalMagics.timeout = 600``); flags win.
    """

    @options.flags
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
        try:
            return self._run(flagline.read(self.modal_gpu, line), line, cell)
        except UsageProblem as exc:
            raise UsageError(str(exc)) from None
        except MapFailed as exc:  # IPython leaves a group to Python's display: show it from here, not our internals
            raise exc.with_traceback(None) from None

    def _run(self, args: Any, line: str, cell: str) -> Any:
        cell_options = driver.CellOptions(**options.for_cell(vars(args), self), mapping=_mapping(args))
        shell = self.shell
        assert shell is not None  # registered magics always have their shell
        hidden = {k for k, v in shell.user_ns_hidden.items() if shell.user_ns.get(k, _ABSENT) is v}
        if args.dry_run:
            print("\n".join(dry_run.plan_cell(cell, shell.user_ns, cell_options, hidden=hidden)))
            return None
        view = make_view(args.quiet)

        def on_event(event: Event) -> None:
            view(event)
            show_event(event)

        outcome = driver.run_cell(cell, shell.user_ns, cell_options, hidden=hidden, on_event=on_event,
                                  execution_count=_prompt_number(shell), colors=str(shell.colors),
                                  header=f"%%modal_gpu {line}".rstrip())
        return None if outcome.value is driver.NO_VALUE else outcome.value

    @line_magic
    def modal_stop(self, line: str = "") -> None:
        """Stop this session's backends: the Modal app (and its warm container) and the local worker, saying which
        were running.

        The next ``%%modal_gpu`` cell starts them again. From another thread while a cell runs, they stop as it ends.
        """
        print(extension.current().stop_backends())

    @line_magic
    def modal_status(self, line: str = "") -> None:
        """Show what this notebook started on Modal that is still up: each pool's GPU, how long it has been
        idle, when it scales down, what it costs a minute idle, and the session's estimated cost so far.

        From the notebook's own bookkeeping (what it started, and when each pool last ran); asks Modal nothing.
        """
        print("\n".join(status_lines()))

    @line_magic
    def modal_resident(self, line: str = "") -> None:
        """Show what the remote session keeps for this notebook (by variable name), and the memory it holds."""
        assert self.shell is not None
        print("\n".join(resident_report(self.shell.user_ns, extension.current())))

    @line_magic
    def modal_config(self, line: str = "") -> None:
        """Show or set session defaults: ``%modal_config gpu=A10G timeout=600 backend=modal max_input=8GB``.

        The same settings as ``%config ModalMagics.<name>`` and ``c.ModalMagics.<name>`` in
        ``ipython_config.py``; a flag on a cell still wins.
        """
        try:
            changes = options.configure(line)
        except UsageProblem as exc:
            raise UsageError(str(exc)) from None
        for name, value in changes.items():
            setattr(self, name, value)
        for name in options.SESSION_OPTIONS:
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


def _show_map_failed(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> list[str]:
    """IPython's handler for ``MapFailed``: its lines, a sentence per failed element.

    IPython hands an exception group to Python's own display, which shows the frames the magic raised it
    through (ours among them) before the elements' exceptions; this shows the group as ``_render_traceback_``
    says, through the shell's own way of showing a traceback (a kernel's error message)."""
    render = getattr(value, "_render_traceback_", None)
    stb = render() if callable(render) else [f"{etype.__name__}: {value}"]
    shell._showtraceback(etype, value, stb)
    return stb


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext modal_magic``: the magics, and this kernel's ``Extension`` with them as defaults."""
    magics = ModalMagics(ipython)
    extension.start(magics)
    ipython.register_magics(magics)
    if not ipython.custom_exceptions:  # a handler the user set stays theirs; groups then show as Python shows them
        ipython.set_custom_exc((MapFailed,), _show_map_failed)


def unload_ipython_extension(ipython: Any) -> None:
    """Called by ``%unload_ext modal_magic``: stop the backends, and take back every magic ``%load_ext`` added."""
    extension.stop()
    if ipython.custom_exceptions == (MapFailed,):
        ipython.set_custom_exc((), None)  # (its printing handler then stands in, for no exception type)
    manager = ipython.magics_manager
    magics = manager.registry.pop(ModalMagics.__name__, None)
    for kind, names in ModalMagics.magics.items():
        for name in names:
            manager.magics[kind].pop(name, None)
    if magics in ipython.configurables:  # Magics.__init__ put it there, for %config
        ipython.configurables.remove(magics)
