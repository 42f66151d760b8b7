"""The GPU a stand-in container says it has: an ``nvidia-smi`` on its ``PATH``, as Modal's GPU containers have.

The container has no GPU (this machine's ``torch.cuda`` is what it is), so the tool only names one: the
type its function asked for, as the driver's ``nvidia-smi --query-gpu=name --format=csv,noheader`` prints
it, one line per GPU. Any other query prints nothing and fails, so a caller relying on more is seen.
"""

from __future__ import annotations

from pathlib import Path

# Modal's types → the device names their drivers report.
DEVICE_NAMES = {"T4": "Tesla T4", "L4": "NVIDIA L4", "A10": "NVIDIA A10", "A10G": "NVIDIA A10G",
                "L40S": "NVIDIA L40S", "A100": "NVIDIA A100-SXM4-40GB", "A100-40GB": "NVIDIA A100-SXM4-40GB",
                "A100-80GB": "NVIDIA A100-SXM4-80GB", "RTX-PRO-6000": "NVIDIA RTX PRO 6000 Blackwell Server Edition",
                "H100": "NVIDIA H100 80GB HBM3", "H100!": "NVIDIA H100 80GB HBM3", "H200": "NVIDIA H200",
                "B200": "NVIDIA B200", "B200+": "NVIDIA B200"}


def fake_nvidia_smi(root: Path, gpu: str) -> Path:
    """Write ``root/bin/nvidia-smi`` naming ``gpu`` (``H100:2``: two lines); the folder to put on ``PATH``."""
    name, _, count = gpu.partition(":")
    folder = root / "bin"
    folder.mkdir(parents=True, exist_ok=True)
    lines = "\\n".join([DEVICE_NAMES.get(name, name)] * int(count or 1))
    tool = folder / "nvidia-smi"
    tool.write_text('#!/bin/sh\nif [ "$*" = "--query-gpu=name --format=csv,noheader" ]; then\n'
                    f'  printf "{lines}\\n"; exit 0\nfi\nexit 6\n')
    tool.chmod(0o755)
    return folder
