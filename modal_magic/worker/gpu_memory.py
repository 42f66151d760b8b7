"""A cell's peak GPU memory, as PyTorch's caching allocator counts it, without ever starting CUDA ourselves.

``begin`` before the cell resets each device's peak, when CUDA is already up in this process; ``peak``
after it is the most the cell's tensors held at once, summed over devices. A cell whose process never
initialised CUDA (no torch, or torch on the CPU only) has no peak: ``None``, not 0, so a view says nothing
rather than a number that looks measured. Initialising CUDA only to ask would cost a second and a
context's memory on every GPU, for an answer known in advance.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["begin", "peak"]


def _cuda() -> Any:
    """torch.cuda if torch is imported here and has started CUDA; else None."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    return cuda if cuda is not None and cuda.is_initialized() else None


def begin() -> None:
    cuda = _cuda()
    if cuda is not None:
        for device in range(cuda.device_count()):
            cuda.reset_peak_memory_stats(device)


def peak() -> int | None:
    """Bytes: the cell's peak of allocated GPU memory over all devices (since ``begin``, or since CUDA started)."""
    cuda = _cuda()
    if cuda is None:
        return None
    return sum(int(cuda.max_memory_allocated(device)) for device in range(cuda.device_count()))
