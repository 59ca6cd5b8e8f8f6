"""Regenerate snapshots/cuda_kernels.pt: bitsandbytes' CUDA kernel outputs, so CPU graders can compare
students' CPU results against them. Run on a machine with a CUDA GPU, from this folder:

    python make_snapshots.py

The file holds plain tensors and strings only (it loads with torch.load(weights_only=True)).
"""

import platform

import torch

from quant_references import SNAPSHOT, cuda_kernel_outputs, snapshot_inputs


def main() -> None:
    import bitsandbytes

    if not torch.cuda.is_available():
        raise SystemExit("make_snapshots.py needs a CUDA GPU: the point is to record the CUDA kernels' outputs")
    inputs = snapshot_inputs()
    # Plain strings: the snapshot is read with torch.load(weights_only=True), which refuses TorchVersion.
    versions = {name: str(value) for name, value in {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "bitsandbytes": bitsandbytes.__version__,
        "gpu": torch.cuda.get_device_name(),
        "python": platform.python_version(),
    }.items()}
    SNAPSHOT.parent.mkdir(exist_ok=True)
    torch.save({**inputs, **cuda_kernel_outputs(inputs), "versions": versions}, SNAPSHOT)
    print(f"wrote {SNAPSHOT} ({versions})")


if __name__ == "__main__":
    main()
