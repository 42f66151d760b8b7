"""Shared fixtures: a real IPython shell with the extension loaded, talking to a real worker.

Also the test tiers: every test is marked by where it lives or what it uses (below), so a test file needs no
marks of its own and the fast lane, ``-m "not fake_modal and not browser and not replay"``, can leave the slow
tiers out.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

# The stand-in Modal server's fixtures (``modal_server``, ``fresh``), for every module that asks for them.
pytest_plugins = ["tests.fake_modal.pytest_plugin"]

TESTS = Path(__file__).resolve().parent
# Modules that test the stand-in or run the Modal path against it, whether or not each test takes its fixture.
FAKE_MODAL_MODULES = {"test_modal_fake_server.py", "test_fake_modal_strict.py", "test_modal_fanout.py",
                      "test_resident_modal.py", "test_compile_modal.py", "test_modal_dead_server.py"}
# Folders whose every test is the tier of that name: a real browser on JupyterLab, the replay of the corpus.
TIER_FOLDERS = {"browser", "replay"}


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its tier: ``fake_modal``, ``browser`` or ``replay`` (the rest is the fast lane)."""
    for item in items:
        path = Path(str(item.path)).resolve()
        if path.name in FAKE_MODAL_MODULES or "modal_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.fake_modal)
        try:
            folder = path.relative_to(TESTS).parts[0]
        except ValueError:  # a notebook under notebooks/ (nbval): the fast lane does not name that folder
            continue
        if folder in TIER_FOLDERS:
            item.add_marker(getattr(pytest.mark, folder))


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
