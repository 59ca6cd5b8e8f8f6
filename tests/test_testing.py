"""assert_close / assert_same_text: what passes, what fails, and what the student reads when it fails."""

from __future__ import annotations

import math
import re

import pytest
import torch

from autograder.grading import testing
from autograder.course.config import Tolerance
from autograder.grading.testing import ToleranceError, assert_close, assert_same_text

INF = math.inf


@pytest.fixture(autouse=True)
def default_tolerances():
    """configure() changes module state: every test starts and ends with the built-in defaults."""
    testing.configure({})
    yield
    testing.configure({})


def failure(actual, expected, **kwargs) -> str:
    with pytest.raises(ToleranceError) as info:
        assert_close(actual, expected, **kwargs)
    return str(info.value)


def with_value(shape, index, value, dtype=torch.float32):
    t = torch.zeros(shape, dtype=dtype)
    t[index] = value
    return t


# --- type, shape, dtype, device --------------------------------------------------------------------


@pytest.mark.parametrize(
    "actual, expected, message",
    [
        (torch.zeros(2, 3), torch.zeros(3, 2), "shape [2, 3] but expected [3, 2]"),
        (torch.zeros(3, dtype=torch.float64), torch.zeros(3), "dtype torch.float64 but expected torch.float32"),
        (torch.zeros(3, device="meta"), torch.zeros(3), "on device meta but expected cpu"),
    ],
    ids=["shape", "dtype", "device"],
)
def test_metadata_mismatch_is_named(actual, expected, message):
    assert failure(actual, expected, what="softmax(x)") == f"softmax(x): {message}"


class AlwaysEqual:
    def __eq__(self, other):
        return True

    __hash__ = object.__hash__


class SneakyTensor(torch.Tensor):
    pass


@pytest.mark.parametrize(
    "actual, type_name",
    [([0.0, 0.0], "list"), (AlwaysEqual(), "AlwaysEqual"), (torch.zeros(2).as_subclass(SneakyTensor), "SneakyTensor")],
    ids=["list", "custom-eq", "tensor-subclass"],
)
def test_non_tensor_where_a_tensor_is_expected_fails_naming_its_type(actual, type_name):
    assert failure(actual, torch.zeros(2)) == f"result: expected a torch.Tensor, got {type_name}"


def test_parameter_is_accepted_as_a_tensor():
    assert_close(torch.nn.Parameter(torch.ones(2)), torch.ones(2))


# --- floating point ------------------------------------------------------------------------------


def test_worst_element_fraction_and_tolerance_are_reported():
    expected = torch.zeros(2, 6, 3)
    actual = with_value((2, 6, 3), (0, 5, 1), 0.5)
    actual[1, 0, 0] = 0.1
    message = failure(actual, expected, what="attention(q, k, v)")
    assert message.startswith("attention(q, k, v): 2 of 36 elements (5.6%) differ beyond tolerance")
    assert "max abs error 0.5 at [0, 5, 1] (got 0.5, expected 0)" in message
    assert message.endswith("tolerance rtol 0.0001, atol 1e-05 (fp32)")


def test_within_default_fp32_tolerance_passes():
    expected = torch.linspace(-3, 3, 50)
    assert_close(expected * (1 + 5e-5), expected)


def test_explicit_tolerance_overrides_the_default_and_is_reported():
    expected = torch.ones(4)
    assert_close(expected + 0.05, expected, atol=0.1, rtol=0)
    assert "tolerance rtol 0, atol 0.01 (fp32)" in failure(expected + 0.05, expected, atol=0.01, rtol=0)


@pytest.mark.parametrize("nan_in", ["actual", "expected"])
def test_nan_counts_and_first_position(nan_in):
    clean = torch.arange(12.0).reshape(3, 4)
    dirty = clean.clone()
    dirty[1, 2] = dirty[2, 0] = math.nan
    actual, expected = (dirty, clean) if nan_in == "actual" else (clean, dirty)
    message = failure(actual, expected)
    counts = (2, 0) if nan_in == "actual" else (0, 2)
    assert f"{counts[0]} NaN values where the reference has numbers" in message
    assert f"{counts[1]} numbers where the reference has NaN" in message
    assert "first at [1, 2]" in message


def test_equal_nan_accepts_matching_nans_only():
    expected = torch.tensor([1.0, math.nan])
    assert_close(expected.clone(), expected, equal_nan=True)
    assert "1 NaN values where the reference has numbers" in failure(
        torch.tensor([math.nan, math.nan]), expected, equal_nan=True)
    # A NaN in the reference matches only a NaN, not whatever number the student returned.
    assert "1 numbers where the reference has NaN" in failure(torch.tensor([1.0, 5.0]), expected, equal_nan=True)


def test_matching_infinities_pass():
    expected = torch.tensor([-INF, 3.0, INF])
    assert_close(expected.clone(), expected)


@pytest.mark.parametrize(
    "actual, expected",
    [
        ([INF, 1.0], [1.0, 1.0]),
        ([5.0, 3.0], [-INF, 3.0]),
        ([INF, 3.0], [-INF, 3.0]),
    ],
    ids=["inf-vs-finite", "finite-vs-expected-inf", "inf-vs-opposite-inf"],
)
def test_mismatched_infinity_fails(actual, expected):
    message = failure(torch.tensor(actual), torch.tensor(expected))
    assert "1 of 2 elements" in message and "at [0]" in message


def test_complex_tensors_compare_imaginary_parts():
    assert "(real, imaginary)" in failure(torch.tensor([1 + 1j]), torch.tensor([1 + 5j]))


# --- integer codes -------------------------------------------------------------------------------


def test_integer_tensors_are_exact_by_default():
    expected = torch.tensor([[10, -3], [7, 127]], dtype=torch.int8)
    actual = expected.clone()
    actual[1, 0] += 1
    message = failure(actual, expected, what="quantize(w)")
    assert message == (
        "quantize(w): 1 of 4 values differ (25.0%); first at [1, 0]: got 8, expected 7; "
        "largest difference 1 at [1, 0]; values must be exactly equal"
    )


def test_integer_atol_allows_off_by_one_codes_but_not_more():
    expected = torch.tensor([10, -3, 7, 127], dtype=torch.int8)
    assert_close(expected + torch.tensor([1, -1, 0, 0], dtype=torch.int8), expected, atol=1)
    message = failure(expected + torch.tensor([1, 0, -2, 0], dtype=torch.int8), expected, atol=1)
    assert "1 of 4 values differ" in message
    assert "largest difference 2 at [2]" in message and message.endswith("allowed difference 1")


def test_bool_tensors_are_exact():
    assert "first at [1]" in failure(torch.tensor([True, True]), torch.tensor([True, False]))


# --- containers and numbers ----------------------------------------------------------------------


def test_nested_containers_pass_when_all_leaves_match():
    expected = {"logits": torch.ones(2), "ids": [1, 2, 3], "loss": 0.5}
    assert_close({"logits": torch.ones(2), "ids": (1, 2, 3), "loss": 0.5 + 1e-7}, expected)


@pytest.mark.parametrize(
    "actual, expected, message",
    [
        ({"a": 1, "z": 2}, {"a": 1, "b": 2}, "out: keys differ; missing ['b'], unexpected ['z']"),
        ([1, 2], [1, 2, 3], "out: length 2 but expected 3"),
        (torch.ones(3), [1, 2, 3], "out: expected a list, got Tensor"),
        ([1.0], {"a": 1.0}, "out: expected a dict, got list"),
        ({"a": [1.0, 2.0]}, {"a": [1.0, 2.5]}, "out['a'][1]: got 2, expected 2.5"),
        ("1.0", 1.0, "out: expected a number, got str"),
        (True, 1, "out: expected a number, got bool"),
        (math.nan, 1.0, "out: got NaN, expected 1"),
        ("b", "a", "out: got 'b', expected 'a'"),
    ],
    ids=["missing-key", "length", "tensor-for-list", "list-for-dict", "nested-leaf", "str-for-number",
         "bool-for-number", "nan-number", "plain-value"],
)
def test_container_and_number_mismatches(actual, expected, message):
    assert failure(actual, expected, what="out").startswith(message)


def test_number_failure_reports_error_and_tolerance():
    assert failure(1.1, 1.0) == "result: got 1.1, expected 1 (abs error 0.1; tolerance rtol 0.0001, atol 1e-05)"


def test_one_element_tensor_is_compared_as_a_number():
    assert_close(torch.tensor(2.0), 2.0)
    assert failure(torch.tensor([3]), 2).startswith("result: got 3, expected 2")


@pytest.mark.parametrize(
    "actual, expected",
    [
        (-INF, -INF),
        (math.nan, math.nan),
    ],
    ids=["-inf", "nan-equal_nan"],
)
def test_matching_special_numbers_pass(actual, expected):
    assert_close(actual, expected, equal_nan=True)


def test_finite_number_against_infinity_fails():
    assert failure(1.0, INF) == "result: got 1, expected inf"


# --- per-dtype defaults --------------------------------------------------------------------------


def test_configure_changes_the_per_dtype_default():
    testing.configure({"fp16": (0.1, 0.1), "fp32": Tolerance(rtol=0.0, atol=1e-3)})
    for dtype, passes in ((torch.float16, True), (torch.float32, False)):
        expected = torch.ones(3, dtype=dtype)
        actual = expected + 0.05
        if passes:
            assert_close(actual, expected)
        else:
            assert failure(actual, expected).endswith("tolerance rtol 0, atol 0.001 (fp32)")


def test_fp16_tensor_uses_the_fp16_row():
    expected = torch.ones(3, dtype=torch.float16)
    assert failure(expected + 0.125, expected).endswith("tolerance rtol 0.005, atol 0.005 (fp16)")


def test_profile_picks_another_row():
    testing.configure({"tf32": (0.0, 0.2)})
    expected = torch.ones(3)
    assert_close(expected + 0.1, expected, profile="tf32")
    assert failure(expected + 0.3, expected, profile="tf32").endswith("tolerance rtol 0, atol 0.2 (tf32)")
    assert failure(expected + 0.1, expected).endswith("(fp32)")


def test_configure_resets_rows_it_does_not_mention():
    testing.configure({"fp32": (0.5, 0.5)})
    testing.configure({"fp16": (0.5, 0.5)})
    assert testing.tolerance_for(torch.float32) == testing.DEFAULT_TOLERANCES["fp32"]


# --- text ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "actual, expected, index",
    [("hello world", "hello there", 6), ("abc", "abcdef", 3), ("abcdef", "abc", 3), ("x", "y", 0)],
    ids=["middle", "actual-shorter", "actual-longer", "first"],
)
def test_same_text_points_at_the_first_differing_character(actual, expected, index):
    with pytest.raises(ToleranceError) as info:
        assert_same_text(actual, expected, what="decode(ids)")
    message = str(info.value)
    assert message.startswith(f"decode(ids) differs from the reference at character {index}: ")
    assert f"got {actual[index:]!r}, expected {expected[index:]!r}" in message
    assert message.endswith(f"(lengths {len(actual)} and {len(expected)})")


def test_same_text_passes_equal_strings_and_rejects_non_strings():
    assert_same_text("same", "same")
    with pytest.raises(ToleranceError, match=re.escape("text: expected a str, got AlwaysEqual")):
        assert_same_text(AlwaysEqual(), "same")


def test_a_reference_is_computed_once_per_value_and_each_call_gets_its_own_copy():
    from autograder.grading.testing import reference

    calls = []

    @reference
    def doubled(x, *, scale=2):
        calls.append(1)
        return x * scale

    first = doubled(torch.arange(4.0))
    first.zero_()  # a test that changes its expected value changes only its own copy
    assert torch.equal(doubled(torch.arange(4.0)), torch.arange(4.0) * 2) and len(calls) == 1
    doubled(torch.arange(4.0), scale=3)
    doubled(torch.arange(4.0).to(torch.float64))
    doubled(torch.tensor([0.0, 1.0, 2.0, 4.0]))
    assert len(calls) == 4  # another keyword, dtype or value is another reference


def test_a_reference_call_with_a_generator_or_a_changed_zoo_model_is_computed_again():
    from autograder.grading import zoo
    from autograder.grading.testing import reference

    calls = []

    @reference
    def draw(model, generator=None):
        calls.append(1)
        return torch.rand(2, generator=generator) if generator is not None else model.lm_head.weight.sum()

    model = zoo.tiny_model("llama")
    draw(model), draw(zoo.tiny_model("llama"))
    assert len(calls) == 1  # equal zoo models, one computation
    with torch.no_grad():
        model.lm_head.weight.add_(1)
    draw(model)
    assert len(calls) == 2
    generator = torch.Generator().manual_seed(0)
    a, b = draw(model, generator), draw(model, generator)
    assert len(calls) == 4 and not torch.equal(a, b)  # the generator's state moves on: never cached


def test_the_reference_cache_keeps_a_bounded_number_of_values(monkeypatch):
    from autograder.grading import testing

    monkeypatch.setattr(testing, "REFERENCE_CACHE_ENTRIES", 3)

    @testing.reference
    def square(x):
        return x * x

    for n in range(10):
        square(n)
    assert list(square.cache) == [("tuple", (("tuple", (("int", n),)), ("dict", ()))) for n in (7, 8, 9)]
    monkeypatch.setattr(testing, "REFERENCE_MAX_TENSOR_BYTES", 64)
    square(torch.ones(16))  # 64 bytes: kept
    square(torch.ones(17))  # too large to keep: computed and given back, not cached
    assert len(square.cache) == 3 and square.cache[next(reversed(square.cache))][0] == 1
    assert torch.equal(square(torch.full((17,), 2.0)), torch.full((17,), 4.0))


def test_an_object_that_claims_any_attribute_is_never_a_reference_key():
    """A handle on a submission's object answers every attribute from the sandbox; claiming to be the
    zoo's tokenizer must not give two different objects one key (one submission's reference reused)."""
    from autograder.grading import zoo
    from autograder.grading.testing import reference

    class Claims:
        def __getattr__(self, name):
            return "tokenizer"

        def __repr__(self):
            return "same"

    calls = []

    @reference
    def echo(value):
        calls.append(value)
        return len(calls)

    assert echo(Claims()) == 1 and echo(Claims()) == 2
    tokenizer = zoo.tiny_tokenizer()
    assert echo(tokenizer) == 3 and echo(zoo.tiny_tokenizer()) == 3  # the real one is keyed
