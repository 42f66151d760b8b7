"""Process-wide state behaves as if the remote cell ran in the notebook's own process (issue 13)."""

from __future__ import annotations

import subprocess
import sys
from typing import Iterator

import pytest

from modal_magic.backends import get_backend

from .conftest import run


@pytest.fixture
def fresh_worker() -> Iterator[None]:
    """A worker started inside the test (with its environment), and not left to later tests."""
    get_backend("local").close()
    yield
    get_backend("local").close()


def test_worker_hashes_strings_as_a_kernel_with_a_pinned_seed(shell, monkeypatch, fresh_worker) -> None:
    monkeypatch.setenv("PYTHONHASHSEED", "123")
    pinned = subprocess.run([sys.executable, "-c", "print(hash('modal'), list({'a', 'b', 'c', 'd'}))"],
                            capture_output=True, text=True, check=True).stdout
    assert run(shell, "%%modal_gpu\nseen = f\"{hash('modal')} {list({'a', 'b', 'c', 'd'})}\\n\"").success
    assert shell.user_ns["seen"] == pinned
