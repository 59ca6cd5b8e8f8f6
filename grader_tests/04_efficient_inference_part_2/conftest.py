"""Fixtures shared by the quantization tests of assignment 04."""

import pytest
import torch

from quant_references import SNAPSHOT, cuda_kernel_outputs, snapshot_inputs


@pytest.fixture(scope="session")
def cuda_reference() -> dict:
    """Inputs and bitsandbytes CUDA outputs: from the snapshot, else computed live on this GPU."""
    if SNAPSHOT.is_file():
        return torch.load(SNAPSHOT, weights_only=True)
    if not torch.cuda.is_available():
        pytest.skip(f"no CUDA reference: {SNAPSHOT.name} is absent (regenerate it with make_snapshots.py "
                    "on a GPU machine) and this grader has no GPU")
    inputs = snapshot_inputs()
    return {**inputs, **cuda_kernel_outputs(inputs)}


@pytest.fixture
def cuda():
    """The CUDA device, for tests that run the student's code and the kernels on the GPU."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA runner")
    return torch.device("cuda")
