"""The stand-in's pytest fixtures, for every test module that runs the Modal path against it.

Loaded through ``pytest_plugins`` in ``tests/conftest.py``, so a test asks for ``modal_server`` or ``fresh``
by name and imports nothing. A test that uses either (directly or through a fixture of its own) is marked
``fake_modal`` by ``tests/conftest.py``: the fast lane leaves it out.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import Server, serving


@pytest.fixture(scope="module")
def modal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One stand-in per test module, this process's Modal client pointed at it.

    Before it stops, every backend this process started is closed while the server still answers (closing an
    app says goodbye to it); a module that opens none of ours closes nothing.
    """
    from modal_magic.notebook.extension import current

    with serving(tmp_path_factory.mktemp("fake_modal"), before_stop=lambda: current().backends.close()) as server:
        yield server


@pytest.fixture
def fresh(modal_server: Server, shell) -> Iterator[Server]:
    """No app open and no fault armed: the next Modal cell starts an app.

    Afterwards: the stand-in met no bug of its own, and our flows sent no RPC it does not implement.
    """
    shell.run_cell("%modal_stop", store_history=True)
    modal_server.fail("")
    yield modal_server
    modal_server.fail("")
    report = modal_server.report()
    assert report["errors"] == [] and report["unimplemented"] == {}, (report["errors"], report["unimplemented"])
