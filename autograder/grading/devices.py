"""Stage 6: which device this grader offers, and references computed on another one.

GPU-marked tests run only where CUDA is available; elsewhere the oracle reports them as needing a
GPU runner. References that only a GPU can compute are stored as snapshot files next to the suite
and loaded with the restricted loader, so CPU graders compare against them too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def nvidia_driver_present() -> bool:
    """For processes that must not import torch nor create a CUDA context (the CLI, the forkserver's
    parent): is this machine a GPU runner?"""
    return shutil.which("nvidia-smi") is not None and os.path.exists("/dev/nvidiactl")


def device_name() -> str:
    """What the gradebook records as the grading device."""
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return "cpu"


def load_snapshot(path: Path):
    """A stored reference (plain tensors and containers only), or None when it was never generated."""
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    return torch.load(path, weights_only=True, map_location="cpu")
