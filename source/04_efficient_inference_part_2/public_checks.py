"""Public checks for 04_efficient_inference_part_2: small, hand-checkable cases in plain torch.

They catch the common slips early (rows instead of columns, a missing zero-row rule, one absmax for
the whole tensor, per-text averaging or n instead of n - 1 predictions per text); the hidden suite grades
against bitsandbytes itself.
"""

import math

import torch

from autograder import zoo
from autograder.checks import check, public_check, same_on_gpu  # noqa: F401  (`check` is what the notebook imports)
from autograder.testing import assert_close


@public_check("vectorwise_quantize")
def quantizes_each_row_by_its_own_absmax(vectorwise_quantize):
    x = torch.tensor([[2.0, -1.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0], [8.0, 4.0, -2.0, 1.0]])
    q, row_scale = vectorwise_quantize(x)
    assert_close(row_scale, torch.tensor([2.0, 0.0, 8.0]), rtol=0, atol=0,
                 what="row_scale (the absmax of each row, exactly 0 for the zero row)")
    # -1 * 127 / 2 = -63.5 and 4 * 127 / 8 = 63.5 are ties: half to even gives -64 and 64.
    assert_close(q, torch.tensor([[127, -64, 0, 32], [0, 0, 0, 0], [127, 64, -32, 16]], dtype=torch.int8),
                 what="codes of a 3-row example (middle row all zeros)")


@public_check("outlier_columns")
def returns_the_columns_holding_an_outlier(outlier_columns):
    x = torch.tensor([[0.1, 7.0, 0.2, 0.3, 0.0],
                      [0.4, 0.5, 0.6, -6.0, 0.1]])
    assert_close(outlier_columns(x), torch.tensor([1, 3]),
                 what="outlier_columns of a 2x5 example with 7.0 in column 1 and -6.0 in column 3")
    assert_close(outlier_columns(x, threshold=10.0), torch.zeros(0, dtype=torch.long),
                 what="outlier_columns(x, threshold=10.0) (nothing reaches 10)")


@public_check("int8_linear_with_outliers")
def stays_close_to_the_fp32_layer(int8_linear_with_outliers):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 32, generator=g)
    x[:, 7] *= 25.0  # one outlier feature
    weight, bias = torch.randn(8, 32, generator=g), torch.randn(8, generator=g)
    out = int8_linear_with_outliers(x, weight, bias)
    expected = x @ weight.T + bias
    assert isinstance(out, torch.Tensor) and out.shape == expected.shape, (
        f"int8_linear_with_outliers(x, w, b) must return a tensor of shape {list(expected.shape)}"
    )
    error = ((out - expected).norm() / expected.norm()).item()
    assert error < 0.02, f"relative error {100 * error:.2f}% against x @ weight.T + bias; expected well below 2%"


@public_check("nf4_quantize")
def picks_the_nearest_code_per_block(nf4_quantize):
    w = torch.tensor([2.0, -1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.1])
    codes, absmax = nf4_quantize(w, blocksize=4)
    # Block 1: -1.0 / 2 = -0.5 is nearest to NF4 -0.525 (code 2), 0.25 to 0.246 (code 10);
    # block 3: 0.1 / 0.3 = 0.333 is nearest to 0.338 (code 11).
    assert_close(absmax, torch.tensor([2.0, 0.0, 0.3]), what="absmax of 3 blocks of 4 (the last holds 2 values)")
    assert_close(codes, torch.tensor([15, 2, 10, 7, 7, 7, 7, 7, 15, 11], dtype=torch.uint8), what="codes")


@public_check("nf4_dequantize")
def scales_each_code_by_its_blocks_absmax(nf4_dequantize):
    codes = torch.tensor([[15, 0, 7], [8, 2, 15]], dtype=torch.uint8)
    out = nf4_dequantize(codes, torch.tensor([2.0, 0.5]), blocksize=4)
    expected = torch.tensor([[2.0, -2.0, 0.0], [0.07958029955625534 * 2, -0.5250730514526367 * 0.5, 0.5]])
    assert_close(out, expected, what="nf4_dequantize of 6 codes in blocks of 4")


@public_check("perplexity")
def does_not_change_when_a_text_is_repeated(perplexity):
    qwen = zoo.tiny_model("qwen2")
    one = perplexity(qwen, zoo.tiny_tokenizer(), ["Models predict the next token."])
    assert isinstance(one, float) and one > 1.0, f"perplexity must be a Python float above 1, got {one!r}"
    assert math.isclose(perplexity(qwen, zoo.tiny_tokenizer(), ["Models predict the next token."] * 2), one, rel_tol=1e-5), (
        "repeating the same text must not change the perplexity"
    )


@public_check("perplexity")
def weighs_every_predicted_token_alike(perplexity):
    qwen, tokenizer = zoo.tiny_model("qwen2"), zoo.tiny_tokenizer()
    texts = ["Short text.", "A much longer text gives the model many more tokens to predict, one after another."]
    predictions = [len(tokenizer(text).input_ids) - 1 for text in texts]  # a text of n tokens predicts n - 1
    each = [math.log(perplexity(qwen, tokenizer, [text])) for text in texts]
    wanted = math.exp(sum(n * nll for n, nll in zip(predictions, each)) / sum(predictions))
    got = perplexity(qwen, tokenizer, texts)
    assert math.isclose(got, wanted, rel_tol=1e-4), (
        f"perplexity of a short and a long text: got {got:.6g}, expected {wanted:.6g}, the exp of the mean NLL over "
        f"all {sum(predictions)} predicted tokens ({predictions[0]} + {predictions[1]}), not the mean of per-text values")


# --- on the GPU (where one is present): the same answers, on the input's device ------------------


@public_check("vectorwise_quantize", cuda=True)
def quantizes_rows_on_the_inputs_device(vectorwise_quantize):
    same_on_gpu(vectorwise_quantize, torch.tensor([[2.0, -1.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0], [8.0, 4.0, -2.0, 1.0]]),
                what="vectorwise_quantize of a 3-row example")


@public_check("outlier_columns", cuda=True)
def finds_outliers_on_the_inputs_device(outlier_columns):
    same_on_gpu(outlier_columns, torch.tensor([[0.1, 7.0, 0.2, 0.3, 0.0], [0.4, 0.5, 0.6, -6.0, 0.1]]),
                what="outlier_columns of a 2x5 example")


@public_check("int8_linear_with_outliers", cuda=True)
def multiplies_on_the_gpu_without_an_integer_matmul(int8_linear_with_outliers):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 32, generator=g)
    x[:, 7] *= 25.0
    same_on_gpu(int8_linear_with_outliers, x, torch.randn(8, 32, generator=g), torch.randn(8, generator=g),
                what="int8_linear_with_outliers(x, weight, bias) (CUDA has no int64 matmul)")


@public_check("nf4_quantize", cuda=True)
def picks_codes_on_the_inputs_device(nf4_quantize):
    same_on_gpu(nf4_quantize, torch.tensor([2.0, -1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.1]), blocksize=4,
                what="nf4_quantize of 10 values in blocks of 4")


@public_check("nf4_dequantize", cuda=True)
def dequantizes_on_the_inputs_device(nf4_dequantize):
    same_on_gpu(nf4_dequantize, torch.tensor([[15, 0, 7], [8, 2, 15]], dtype=torch.uint8), torch.tensor([2.0, 0.5]),
                blocksize=4, what="nf4_dequantize of 6 codes in blocks of 4")


@public_check("perplexity", cuda=True)
def measures_a_model_on_the_gpu(perplexity):
    same_on_gpu(perplexity, zoo.tiny_model("qwen2"), zoo.tiny_tokenizer(), ["Models predict the next token."],
                what="perplexity(tiny qwen2, one text)")
