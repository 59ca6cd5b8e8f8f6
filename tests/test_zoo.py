"""The tiny model zoo: reproducible offline models and the shipped course tokenizer."""

from __future__ import annotations

import pytest
import torch

from autograder.grading import zoo

PROMPTS = ["Hello", "The quick brown fox", "Once upon a time", "1 2 3 4 5"]
FP32_NOISE = 1e-3  # far above the fp32 drift between devices/implementations (NUMERICS.md: ~1e-6)


@pytest.fixture(scope="module")
def tokenizer():
    return zoo.tiny_tokenizer()


@pytest.fixture(scope="module", params=sorted(zoo.MODEL_CONFIGS))
def model(request):
    return zoo.tiny_model(request.param)


# --- tokenizer -----------------------------------------------------------------------------------


def test_shipped_tokenizer_is_the_reproducible_build():
    assert zoo._tokenizer_json() == zoo.build_tokenizer_json()


@pytest.mark.parametrize("text", ["Hello, world!", "  two  spaces\tand a tab\n", "x = f(a[0]) ** 2 # ~{}|"])
def test_ascii_text_round_trips(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert all(isinstance(i, int) and 0 <= i < len(tokenizer) for i in ids)
    assert tokenizer.decode(ids) == text


def test_tokenizer_has_the_course_special_tokens_and_vocabulary(tokenizer):
    assert len(tokenizer) == zoo.VOCAB_SIZE
    for attribute, token in zoo.SPECIAL_TOKENS.items():
        assert getattr(tokenizer, attribute) == token
        assert tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id
    assert tokenizer.padding_side == "right"


def test_each_tokenizer_is_a_fresh_copy(tokenizer):
    other = zoo.tiny_tokenizer()
    other.padding_side = "left"
    assert other is not tokenizer and zoo.tiny_tokenizer().padding_side == "right"


# --- models --------------------------------------------------------------------------------------


def test_same_name_gives_bit_identical_models(model):
    again = zoo.tiny_model(model._autograder_spec.name)
    first, second = model.state_dict(), again.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_models_differ_between_names():
    llama, qwen = zoo.tiny_model("llama"), zoo.tiny_model("qwen2")
    assert not torch.equal(llama.model.embed_tokens.weight, qwen.model.embed_tokens.weight)


def test_building_a_model_leaves_the_global_rng_alone():
    zoo._pristine_model.cache_clear()  # built now, not taken from an earlier test's build
    torch.manual_seed(1234)
    expected = torch.rand(5)
    torch.manual_seed(1234)
    zoo.tiny_model("llama")
    assert torch.equal(torch.rand(5), expected)


def test_each_model_is_a_fresh_copy_of_the_one_built():
    """Models are built once per process and copied: a test or submission that changes its model in
    place (quantized weights, a generation setting) must not change the next one."""
    first = zoo.tiny_model("llama")
    with torch.no_grad():
        first.model.embed_tokens.weight.zero_()
    first.generation_config.eos_token_id = 5
    second = zoo.tiny_model("llama")
    assert second is not first and second.model.embed_tokens.weight.abs().sum() > 0
    assert second.generation_config.eos_token_id is None
    assert zoo.fingerprint(second) == second._autograder_fingerprint


@pytest.mark.parametrize("name, tied", [("qwen2", True), ("llama", False)])
def test_tied_embeddings(name, tied):
    m = zoo.tiny_model(name)
    same_storage = m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
    assert same_storage is tied
    assert m.config.tie_word_embeddings is tied


def test_model_is_in_eval_mode_and_matches_the_tokenizer(model, tokenizer):
    assert not model.training
    assert model.config.vocab_size == len(tokenizer)
    assert model.generation_config.eos_token_id is None
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


def test_spec_and_fingerprint_record_defaults(model):
    assert model._autograder_spec.dtype == "float32" and model._autograder_spec.device == "cpu"
    assert model._autograder_fingerprint == zoo.fingerprint(model)


def test_dtype_and_device_are_recorded_in_the_spec():
    m = zoo.tiny_model("qwen2", dtype=torch.float16, device="cpu")
    assert m._autograder_spec == zoo.ModelSpec("qwen2", "float16", "cpu")
    assert {p.dtype for p in m.parameters()} == {torch.float16}
    rebuilt = zoo.from_spec(m._autograder_spec)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), rebuilt.state_dict().values()))


@torch.no_grad()
def test_greedy_decoding_is_decisive(model, tokenizer):
    """Every position's top-1 / top-2 logit gap is far above fp32 noise, so greedy tokens cannot flip."""
    for prompt in PROMPTS:
        ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False)])
        continued = model.generate(ids, max_new_tokens=8, do_sample=False)
        top2 = model(continued).logits[0].topk(2, dim=-1).values
        gap = (top2[:, 0] - top2[:, 1]).min().item()
        assert gap > FP32_NOISE, f"{prompt!r}: smallest top-1/top-2 gap {gap:.2g}"


def test_unknown_model_name_lists_the_known_models():
    with pytest.raises(ValueError, match=r"unknown zoo model 'gpt9'; known: \['llama', 'qwen2'\]"):
        zoo.tiny_model("gpt9")
