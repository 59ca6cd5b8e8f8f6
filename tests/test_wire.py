"""The restricted wire format: what crosses between grader and sandbox, and what can never be built."""

from __future__ import annotations

import collections
import io
import os
import pickle

import pytest
import torch

from autograder.grading import wire, zoo
from autograder.grading.wire import HandleRef, WireError

Pair = collections.namedtuple("Pair", "first second")


class OwnModule(torch.nn.Module):
    """A class of the hidden suite: the sandbox cannot import it."""


class Opaque:
    """Any object a submission might return."""


class SneakyTensor(torch.Tensor):
    def __eq__(self, other):
        return True


class Exploit:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def round_trip_arguments(obj, handles=None):
    return wire.decode_arguments(wire.encode_arguments(obj), {} if handles is None else handles)


def assert_identical(actual, expected):
    """Same types all the way down, tensors bitwise equal with the same dtype."""
    assert type(actual) is type(expected), (type(actual), type(expected))
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and torch.equal(actual, expected)
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_identical(a, e)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            assert_identical(actual[key], expected[key])
    else:
        assert actual == expected


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def llama():
    return zoo.tiny_model("llama")


# --- grader -> sandbox ---------------------------------------------------------------------------

PLAIN_ARGUMENTS = {
    "float-tensor": torch.randn(3, 4, generator=torch.Generator().manual_seed(0)),
    "int8-codes": torch.tensor([[-128, 0, 127]], dtype=torch.int8),
    "fp16-bool-empty": [torch.ones(2, dtype=torch.float16), torch.tensor([True, False]), torch.empty(0, 3)],
    "scalars": (None, True, 3, 2.5, 1 - 2j, "text", b"\x00bytes"),
    "torch-values": [torch.bfloat16, torch.Size([2, 3]), torch.device("cpu")],
    "nested": {"logits": [torch.zeros(2), (1, {"k": torch.arange(3)})], 7: "int key", "empty": []},
}


@pytest.mark.parametrize("value", PLAIN_ARGUMENTS.values(), ids=PLAIN_ARGUMENTS.keys())
def test_plain_arguments_round_trip(value):
    assert_identical(round_trip_arguments(value), value)


def test_non_contiguous_view_round_trips():
    view = torch.arange(100.0).reshape(10, 10)[::3, 1:3].t()
    decoded = round_trip_arguments(view)
    assert torch.equal(decoded, view) and decoded.shape == (2, 4)


def test_parameter_arrives_as_a_plain_tensor():
    decoded = round_trip_arguments(torch.nn.Parameter(torch.ones(2)))
    assert type(decoded) is torch.Tensor and not decoded.requires_grad and torch.equal(decoded, torch.ones(2))


def test_generator_state_is_copied():
    generator = torch.Generator().manual_seed(1234)
    torch.rand(7, generator=generator)  # a state other than a fresh seed
    decoded = round_trip_arguments({"g": generator})["g"]
    assert isinstance(decoded, torch.Generator) and decoded is not generator
    assert torch.equal(torch.randn(5, generator=decoded), torch.randn(5, generator=generator))


def test_zoo_model_is_rebuilt_fresh_for_every_decode(llama):
    data = wire.encode_arguments((llama, 5))
    first, k = wire.decode_arguments(data, {})
    assert k == 5 and first is not llama and same_weights(first, llama)
    assert first._autograder_spec == llama._autograder_spec and not first.training
    with torch.no_grad():
        first.lm_head.weight.zero_()
    second, _ = wire.decode_arguments(data, {})
    assert second is not first and same_weights(second, llama)


def test_zoo_model_dtype_travels_with_it():
    model = zoo.tiny_model("qwen2", dtype=torch.float16)
    decoded = round_trip_arguments(model)
    assert decoded._autograder_spec.dtype == "float16" and same_weights(decoded, model)


def test_tokenizer_is_a_fresh_copy_each_decode():
    data = wire.encode_arguments([zoo.tiny_tokenizer()])
    [first] = wire.decode_arguments(data, {})
    first.padding_side = "left"
    [second] = wire.decode_arguments(data, {})
    assert second is not first and second.padding_side == "right"
    assert second.encode("Hello there") == zoo.tiny_tokenizer().encode("Hello there")


def in_place(fn):
    def modify(model):
        with torch.no_grad():
            fn(model)
    return modify


MODIFICATIONS = {
    "scaled": in_place(lambda m: m.lm_head.weight.mul_(2)),
    "one-element": in_place(lambda m: m.model.embed_tokens.weight[3, 7].add_(1e-3)),
    "loaded-other-weights": lambda m: m.load_state_dict(zoo.tiny_model("llama", dtype=torch.float16).float().state_dict()),
    "cast-to-fp16": lambda m: m.half(),
    "negated": in_place(lambda m: m.lm_head.weight.neg_()),
    "transposed": in_place(
        lambda m: m.model.layers[0].self_attn.q_proj.weight.copy_(m.model.layers[0].self_attn.q_proj.weight.T.clone())),
}


@pytest.mark.parametrize("modify", MODIFICATIONS.values(), ids=MODIFICATIONS.keys())
def test_modified_zoo_model_is_refused(modify):
    model = zoo.tiny_model("llama")
    modify(model)
    with pytest.raises(WireError, match="a zoo model was modified before being passed to the submission"):
        wire.encode_arguments([model])


@pytest.mark.parametrize(
    "value, type_name",
    [(Opaque(), "Opaque"), ([1, {"x": Opaque()}], "Opaque"), (OwnModule(), "OwnModule"),
     (torch.zeros(2).as_subclass(SneakyTensor), "SneakyTensor"), (lambda x: x, "function"), ({1, 2}, "set")],
    ids=["object", "nested-object", "suite-module", "tensor-subclass", "function", "set"],
)
def test_other_arguments_cannot_be_sent(value, type_name):
    with pytest.raises(WireError, match=f"cannot pass a {type_name} to a submission"):
        wire.encode_arguments(value)


def test_a_torch_module_is_rebuilt_with_its_attributes_state_and_mode_and_hooks_are_refused():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2, bias=False))
    model[0].weight.requires_grad_(False)
    model.register_buffer("steps", torch.tensor(3), persistent=False)
    model.eval()
    rebuilt = wire.decode_arguments(wire.encode_arguments([model]), {})[0]
    assert type(rebuilt) is torch.nn.Sequential and [type(m) for m in rebuilt] == [type(m) for m in model]
    x = torch.randn(5, 4)
    assert torch.equal(rebuilt(x), model(x)) and rebuilt.state_dict().keys() == model.state_dict().keys()
    assert (rebuilt[0].weight.requires_grad, rebuilt[0].bias.requires_grad, rebuilt[2].bias) == (False, True, None)
    assert not rebuilt.training and not rebuilt[1].training and rebuilt[1].eps == model[1].eps
    assert "steps" not in rebuilt.state_dict() and torch.equal(rebuilt.steps, model.steps)
    rebuilt[0].bias.data.zero_()
    assert model[0].bias.abs().sum() > 0  # a copy: the grader's module is untouched
    model[0].register_forward_hook(lambda *args: None)
    with pytest.raises(WireError, match="cannot pass a Linear with hooks"):
        wire.encode_arguments([model])


def test_handles_go_back_as_the_sandbox_object():
    obj = Opaque()

    class Proxy:
        _handle_ref = HandleRef(4, "Opaque")

    decoded = round_trip_arguments([HandleRef(4, "Opaque"), Proxy()], handles={4: obj})
    assert decoded[0] is obj and decoded[1] is obj
    with pytest.raises(WireError, match="no longer exists in the sandbox"):
        round_trip_arguments(HandleRef(5, "Opaque"), handles={4: obj})


# --- sandbox -> grader ---------------------------------------------------------------------------


def round_trip_result(value, make_handle=None):
    handles = {}
    return wire.decode_message(wire.encode_result(value, handles), make_handle), handles


@pytest.mark.parametrize("value", PLAIN_ARGUMENTS.values(), ids=PLAIN_ARGUMENTS.keys())
def test_plain_results_come_back_as_is(value):
    decoded, handles = round_trip_result({"ok": True, "value": value})
    assert handles == {}
    assert_identical(decoded, {"ok": True, "value": value})


def test_parameter_result_is_a_plain_tensor():
    decoded, handles = round_trip_result(torch.nn.Parameter(torch.ones(3)))
    assert type(decoded) is torch.Tensor and handles == {}


@pytest.mark.parametrize(
    "make, type_name",
    [(lambda: torch.ones(2).as_subclass(SneakyTensor), "SneakyTensor"), (Opaque, "Opaque"),
     (lambda: Pair(1, 2), "Pair"), (lambda: torch.nn.Linear(2, 2), "Linear"), (lambda: {1, 2}, "set")],
    ids=["tensor-subclass", "custom-class", "namedtuple", "module", "set"],
)
def test_other_results_become_handles(make, type_name):
    value = make()
    made = []
    decoded, handles = round_trip_result({"ok": True, "value": [value]}, make_handle=lambda ref: made.append(ref) or "H")
    assert decoded == {"ok": True, "value": ["H"]}
    [ref] = made
    assert type(ref) is HandleRef and ref.type_name == type_name and handles == {ref.id: value}


def test_handles_get_distinct_ids_and_stay_refs_without_make_handle():
    decoded, handles = round_trip_result([Opaque(), Opaque()])
    assert all(type(ref) is HandleRef for ref in decoded)
    assert {ref.id for ref in decoded} == set(handles) and len(handles) == 2


def test_control_messages_round_trip():
    message = {"call": "top_k_filter", "args": (1, "x"), "status": None}
    assert wire.decode_message(wire.encode_message(message)) == message


# --- the restricted loader never builds foreign objects -----------------------------------------


def torch_saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


SERIALIZERS = {"torch.save": torch_saved, "pickle": pickle.dumps}


@pytest.mark.parametrize("dumps", SERIALIZERS.values(), ids=SERIALIZERS.keys())
@pytest.mark.parametrize("value", [Opaque(), {"ok": True, "value": [Pair(1, 2)]}, torch.ones(2).as_subclass(SneakyTensor)],
                         ids=["custom-class", "nested-namedtuple", "tensor-subclass"])
def test_pickled_foreign_objects_are_refused(dumps, value):
    with pytest.raises(WireError, match="could not be read back in the grader.s restricted format"):
        wire.decode_message(dumps(value))


@pytest.mark.parametrize("dumps, unrestricted_load", [
    (torch_saved, lambda data: torch.load(io.BytesIO(data), weights_only=False)),
    (pickle.dumps, pickle.loads),
], ids=SERIALIZERS.keys())
def test_malicious_reduce_is_never_executed(tmp_path, dumps, unrestricted_load):
    control, marker = tmp_path / "control", tmp_path / "pwned"
    unrestricted_load(dumps(Exploit(control)))
    assert control.exists(), "the payload must be live for this test to mean anything"
    with pytest.raises(WireError):
        wire.decode_message(dumps({"ok": True, "value": Exploit(marker)}))
    assert not marker.exists()


@pytest.mark.parametrize("data", [b"", b"garbage", torch_saved(torch.ones(2))[:-10]], ids=["empty", "garbage", "truncated"])
def test_malformed_bytes_are_refused(data):
    with pytest.raises(WireError):
        wire.decode_message(data)


def test_a_result_the_restricted_loader_cannot_read_gets_an_actionable_message():
    """A Python int beyond 2**2040 pickles with an opcode the restricted loader refuses: the student
    learns what to return instead, not that bytes were malformed."""
    with pytest.raises(WireError, match="return tensors, numbers, strings, and lists, tuples or dicts of them"):
        wire.decode_message(wire.encode_result({"ok": True, "value": 10**1000}, {}))


def test_a_result_too_large_to_read_back_cheaply_is_refused_before_reading(monkeypatch):
    """Reading a pickled structure back costs the grader about a microsecond per item, untimed: a red-team
    submission returned 20 million list items (26 s of the grader's time per call). Tensors do not count."""
    big = wire.encode_result([0] * 3_000_000, {})
    small = wire.encode_result({"x": torch.zeros(4_000_000), "ids": list(range(1000))}, {})  # 16 MB of tensor
    assert wire.decode_message(small)["ids"] == list(range(1000))
    monkeypatch.setattr(wire, "_loads", lambda data: pytest.fail("the structure was read before its size was checked"))
    with pytest.raises(wire.WireError, match=r"too large to read back: [0-9.]+ MB of lists, numbers and strings"):
        wire.decode_message(big)
