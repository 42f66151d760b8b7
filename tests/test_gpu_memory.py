"""A cell's peak GPU memory, measured in the worker process (``worker/gpu_memory.py``), on a real worker."""

from __future__ import annotations

import pytest
import torch

from modal_magic.backends.local import LocalBackend
from modal_magic.protocol import RunRequest
from modal_magic.wire import payload as wire


@pytest.fixture(scope="module")
def backend():
    local = LocalBackend()
    yield local
    local.close()


def test_a_cell_that_never_started_cuda_has_no_peak_rather_than_zero(backend) -> None:
    result = backend.run(RunRequest(code="import torch\nx = torch.ones(1000)"), wire.pack({}), lambda event: None)
    assert result.error is None and result.gpu_peak is None
    assert "gpu_peak" not in result.to_wire()[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA on this machine")
def test_a_cuda_cell_reports_its_own_peak_not_an_earlier_cells(backend) -> None:
    big = "import torch\nx = torch.empty(256 << 20, dtype=torch.uint8, device='cuda')\ndel x"
    first = backend.run(RunRequest(code=big), wire.pack({}), lambda event: None)
    assert first.gpu_peak is not None and first.gpu_peak >= 256 << 20
    small = "import torch\ny = torch.empty(1 << 20, dtype=torch.uint8, device='cuda')"
    second = backend.run(RunRequest(code=small), wire.pack({}), lambda event: None)
    assert second.gpu_peak is not None and (1 << 20) <= second.gpu_peak < 256 << 20  # reset at the cell's start
