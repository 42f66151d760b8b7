"""``--dry-run`` says what the run will send (issue 25): the sizes on its ``inputs:`` line are those of the run's
``sent:`` line, warm or not. A person saw ``31 B`` planned and ``169 B`` sent: the plan counted the notebook's
mirrors as references to a worker that was no longer there, which the run then sent again as values."""

from __future__ import annotations

import os
import re
import signal
import time

from modal_magic.notebook.extension import current

from .conftest import run

CELL = "y = x * 2"


def planned_and_sent(shell, capsys) -> tuple[str, str]:
    """The size the dry run gives ``x``, then the size the run's summary says it sent."""
    capsys.readouterr()
    assert run(shell, f"%%modal_gpu --backend local --dry-run\n{CELL}").success
    planned = re.search(r"inputs: x \(([^)]+)\)", capsys.readouterr().out)
    assert run(shell, f"%%modal_gpu --backend local\n{CELL}").success
    sent = re.search(r"sent: x \(([^)]+)\)", capsys.readouterr().out)
    assert planned is not None and sent is not None
    return planned.group(1), sent.group(1)


def test_the_plan_of_a_warm_cell_gives_the_sizes_it_sends(shell, capsys) -> None:
    run(shell, "import torch\nx = torch.ones(1024)")
    first, first_sent = planned_and_sent(shell, capsys)  # the value: the first cell of the session
    assert first == first_sent and first.endswith("KiB")
    warm, warm_sent = planned_and_sent(shell, capsys)    # a reference: the worker holds x
    assert warm == warm_sent and warm.endswith(" B")


def test_the_plan_for_a_worker_that_is_gone_counts_the_values_it_will_send_again(shell, capsys) -> None:
    run(shell, "import torch\nx = torch.ones(1024)")
    assert run(shell, "%%modal_gpu --backend local --quiet\nx.add_(1)").success  # x mirrors the worker's
    backend = current().backends.get("local")
    os.kill(backend.pid, signal.SIGKILL)
    while backend.pid is not None:  # seen to be gone: the next cell starts a new worker, which holds nothing
        time.sleep(0.01)
    planned, sent = planned_and_sent(shell, capsys)
    assert planned == sent and sent.endswith("KiB")  # x's 4 KiB, not the reference the first request held


def test_the_plan_leaves_the_keys_the_run_will_mint(shell) -> None:
    """A dry run's packing minted keys: the run's then had other numbers, and one more digit is one more byte."""
    table = current().session.table
    run(shell, "import torch\nx = torch.ones(3)")
    before = int(table.mint_key()[1:])
    assert run(shell, f"%%modal_gpu --backend local --dry-run\n{CELL}").success
    assert int(table.mint_key()[1:]) == before + 1
