"""Trusted references for assignment 04: bitsandbytes where it defines the answer, plain torch
(integer sums in int64, log-likelihoods in float64) where it does not.

bitsandbytes is imported inside the helpers: its import takes seconds and pulls in torch._dynamo,
so only the tests that need it pay for it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autograder.testing import reference

# Reference outputs of the CUDA kernels, written by make_snapshots.py on a GPU machine.
SNAPSHOT = Path(__file__).parent / "snapshots" / "cuda_kernels.pt"

# The library calls a student must not make inside the quantization functions they re-implement.
FORBIDDEN_BNB = (
    "bitsandbytes.functional.int8_vectorwise_quant",
    "bitsandbytes.functional.int8_vectorwise_dequant",
    "bitsandbytes.functional.int8_double_quant",
    "bitsandbytes.functional.int8_linear_matmul",
    "bitsandbytes.functional.int8_mm_dequant",
    "bitsandbytes.functional.quantize_4bit",
    "bitsandbytes.functional.dequantize_4bit",
    "bitsandbytes.functional.quantize_blockwise",
    "bitsandbytes.functional.dequantize_blockwise",
    "bitsandbytes.matmul",
    "bitsandbytes.nn.Linear8bitLt.forward",
    "bitsandbytes.nn.Linear4bit.forward",
    "bitsandbytes::*",  # every bitsandbytes operator, also reached through torch.ops.bitsandbytes
)


def generator(seed: int) -> torch.Generator:
    """Inputs come from an explicit CPU generator so that CPU and CUDA runs see the same numbers."""
    return torch.Generator().manual_seed(seed)


def expect_tensor(value, shape, dtype: torch.dtype, what: str, device: str = "cpu") -> None:
    """Fail with a plain message before a test does arithmetic on a result of the wrong kind."""
    assert type(value) is torch.Tensor, f"{what}: expected a torch.Tensor, got {type(value).__name__}"
    assert value.shape == torch.Size(shape), f"{what}: shape {list(value.shape)} but expected {list(shape)}"
    assert value.dtype == dtype, f"{what}: dtype {value.dtype} but expected {dtype}"
    assert value.device.type == device, f"{what}: on device {value.device} but expected {device}"


def activations_with_outliers(tokens: int, features: int, outlier_cols: list[int], seed: int) -> torch.Tensor:
    """LLM-like activations: N(0, 1) features plus a few feature columns of magnitude 20-40."""
    g = generator(seed)
    x = torch.randn(tokens, features, generator=g)
    x[:, outlier_cols] *= torch.empty(len(outlier_cols)).uniform_(20.0, 40.0, generator=g)
    return x


@reference
def bnb_int8(x: torch.Tensor, threshold: float = 0.0):
    """bitsandbytes' vector-wise int8 quantization: (codes, row absmax, outlier columns or None)."""
    import bitsandbytes.functional as bnbf

    return bnbf.int8_vectorwise_quant(x.clone(), threshold=threshold)


@reference
def int8_vectorwise_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight.T through per-row absmax int8 codes of both operands, summed exactly in int64."""
    qx, sx, _ = bnb_int8(x)
    qw, sw, _ = bnb_int8(weight)
    acc = qx.long() @ qw.long().T
    return (acc.double() * sx.double()[:, None] * sw.double()[None, :] / 127**2).to(x.dtype)


@reference
def linear8bitlt(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, threshold: float = 6.0):
    """The same layer through bitsandbytes' Linear8bitLt (int8 weights, outlier split at `threshold`)."""
    import bitsandbytes as bnb

    layer = bnb.nn.Linear8bitLt(weight.shape[1], weight.shape[0], bias=bias is not None,
                                has_fp16_weights=False, threshold=threshold)
    layer.weight = bnb.nn.Int8Params(weight.detach().cpu().clone(), requires_grad=False, has_fp16_weights=False)
    if bias is not None:
        layer.bias = torch.nn.Parameter(bias.detach().cpu().clone(), requires_grad=False)
    layer = layer.to(x.device)  # moving the layer is what quantizes its weight
    with torch.no_grad():
        return layer(x)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| (Frobenius), in float64."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    return ((actual - expected).norm() / expected.norm()).item()


def unpack_nibbles(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """bitsandbytes stores two 4-bit codes per byte, the even element in the high nibble."""
    flat = packed.reshape(-1)
    return torch.stack([flat >> 4, flat & 0xF], dim=1).reshape(-1)[:numel]


@reference
def bnb_nf4(w: torch.Tensor, blocksize: int = 64):
    """bitsandbytes' NF4 quantization of `w`: (one code per element shaped like w, absmax per block)."""
    import bitsandbytes.functional as bnbf

    packed, state = bnbf.quantize_4bit(w, blocksize=blocksize, quant_type="nf4")
    return unpack_nibbles(packed, w.numel()).reshape(w.shape), state.absmax


@reference
def bnb_nf4_dequantize(codes: torch.Tensor, absmax: torch.Tensor, blocksize: int = 64) -> torch.Tensor:
    """bitsandbytes' NF4 dequantization of one-code-per-element `codes` (packed here as bnb wants)."""
    import bitsandbytes.functional as bnbf
    from bitsandbytes.functional import QuantState

    flat = codes.reshape(-1).to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    packed = ((flat[0::2] << 4) | flat[1::2]).unsqueeze(1)
    state = QuantState(absmax=absmax, shape=codes.shape, code=bnbf.get_4bit_type("nf4", device=codes.device),
                       blocksize=blocksize, quant_type="nf4", dtype=torch.float32)
    return bnbf.dequantize_4bit(packed, state)


@reference
def nf4_reference_dequantize(codes: torch.Tensor, absmax: torch.Tensor, blocksize: int = 64) -> torch.Tensor:
    """NF4_CODE[code] * absmax of the element's block, in float64 then float32 (bitsandbytes' CPU
    dequantize_4bit is wrong for some shapes, see NUMERICS.md; its codes and absmax are right)."""
    import bitsandbytes.functional as bnbf

    table = bnbf.get_4bit_type("nf4", device="cpu").double()
    values = table[codes.reshape(-1).long()]
    block_of = torch.arange(values.numel()) // blocksize
    return (values * absmax.double()[block_of]).float().reshape(codes.shape)


@reference
def token_level_perplexity(model, tokenizer, texts: list[str]) -> float:
    """exp of the mean negative log-likelihood over every predicted token of every text (float64)."""
    nll, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt").input_ids
            logprobs = torch.log_softmax(model(ids).logits[0, :-1].double(), dim=-1)
            nll -= logprobs.gather(1, ids[0, 1:, None]).sum().item()
            count += ids.shape[1] - 1
    return float(torch.tensor(nll / count, dtype=torch.float64).exp())


def snapshot_inputs() -> dict[str, torch.Tensor]:
    """The inputs the CUDA snapshot is computed on (also stored in the snapshot itself)."""
    return {
        "int8_input": activations_with_outliers(64, 256, [5, 130], seed=40).half(),
        "nf4_input": torch.randn(96, 200, generator=generator(41)),  # 300 blocks of 64
    }


def cuda_kernel_outputs(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run bitsandbytes' CUDA kernels on `inputs`; results come back on the CPU."""
    x = inputs["int8_input"].cuda()
    codes, scales, _ = bnb_int8(x)
    nf4_codes, absmax = bnb_nf4(inputs["nf4_input"].cuda())
    return {"int8_codes": codes.cpu(), "int8_row_scales": scales.cpu(),
            "nf4_codes": nf4_codes.cpu(), "nf4_absmax": absmax.cpu()}


# Tests comparing CPU results against the CUDA kernels read the snapshot when it exists (any grader);
# without it they need a GPU runner to compute the reference live.
needs_cuda_reference = pytest.mark.usefixtures() if SNAPSHOT.is_file() else pytest.mark.gpu
