"""Shared fixtures: a real IPython shell with the extension loaded, talking to a real worker."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

import pytest
from IPython.core.interactiveshell import InteractiveShell

# The interrupt tests press the kernel's stop button with ``_thread.interrupt_main``, which does nothing where
# SIGINT is ignored: it is in a job a script started in the background (``.ci/run &``), and Python keeps it so.
# A kernel always handles SIGINT, so the tests run as in one.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _no_modal_account(request, monkeypatch, tmp_path) -> None:
    """Hide a developer's Modal credentials: with them, ``--backend auto`` would run cells on real Modal.

    Only the tests that ask for Modal keep them: the live ones (marked ``modal``) and
    those against the fake server (``modal_server``), which set their own.
    """
    if request.node.get_closest_marker("modal") or "modal_server" in request.fixturenames:
        return
    for name in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "no-modal.toml"))


@pytest.fixture(scope="session")
def _ipython() -> InteractiveShell:
    shell = InteractiveShell.instance()
    shell.colors = "nocolor"  # plain text tracebacks, so tests can read them (IPython 8 and 9 spell it so)
    shell.run_line_magic("load_ext", "modal_magic")
    return shell


@pytest.fixture
def shell(_ipython: InteractiveShell) -> InteractiveShell:
    """The shell with a namespace emptied of the previous test's variables."""
    _ipython.reset(new_session=False)
    return _ipython


@contextlib.contextmanager
def published_displays(shell: InteractiveShell) -> Iterator[list[dict]]:
    """Collect what the shell's display publisher is asked to show (data bundles, with keyword args)."""
    published: list[dict] = []
    original = shell.display_pub.publish
    shell.display_pub.publish = lambda data, metadata=None, **kw: published.append({**data, "_kw": kw})
    try:
        yield published
    finally:
        shell.display_pub.publish = original


def run(shell: InteractiveShell, source: str):
    """Run a cell as the notebook would (history on, so Out[n] and _ are set)."""
    return shell.run_cell(source, store_history=True)
