"""Tiny offline models and the course tokenizer, rebuilt bit-for-bit from a config and a seed.

Grading never downloads anything. The hidden suites and the sandbox both call `tiny_model(name)`:
the trusted side uses the model as the reference, the sandbox rebuilds the identical model from its
spec and hands it to the student's function. Real `transformers` classes are used, so references
such as `model.generate` are the library's own code.

Tiny random models have nearly flat logits; `initializer_range=0.2` makes greedy decoding decisive
(median top-1/top-2 gap about 0.6 instead of 1e-4), so correct implementations never flip a token.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from dataclasses import dataclass
from importlib import resources

import torch

TOKENIZER_FILE = "tokenizer.json"
CORPUS_FILE = "corpus.txt"
VOCAB_SIZE = 512
SPECIAL_TOKENS = {"pad_token": "<|pad|>", "bos_token": "<|bos|>", "eos_token": "<|eos|>"}

# name -> (transformers architecture, config overrides, seed)
MODEL_CONFIGS: dict[str, tuple[str, dict, int]] = {
    "llama": (
        "llama",
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512, rope_theta=10000.0,
             tie_word_embeddings=False),
        0,
    ),
    "qwen2": (
        "qwen2",
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512, rope_theta=10000.0,
             tie_word_embeddings=True),
        1,
    ),
}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a zoo model in another process."""

    name: str
    dtype: str = "float32"
    device: str = "cpu"


def corpus_text() -> str:
    return resources.files("autograder").joinpath("data", CORPUS_FILE).read_text(encoding="utf-8")


def build_tokenizer_json() -> str:
    """Train the course's byte-level BPE tokenizer on the bundled corpus (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_text().splitlines(), trainer=trainer)
    return tok.to_str(pretty=True)


@functools.cache
def _tokenizer_json() -> str:
    return resources.files("autograder").joinpath("data", TOKENIZER_FILE).read_text(encoding="utf-8")


def tiny_tokenizer():
    """A fresh `PreTrainedTokenizerFast` (left padding is the student's job: default is right)."""
    return copy.deepcopy(_pristine_tokenizer())


@functools.cache
def _pristine_tokenizer():
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json()), **SPECIAL_TOKENS)
    tok._autograder_spec = "tokenizer"
    return tok


def _config(name: str):
    from transformers import AutoConfig

    try:
        arch, overrides, _ = MODEL_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown zoo model {name!r}; known: {sorted(MODEL_CONFIGS)}") from None
    tok = tiny_tokenizer()
    return AutoConfig.for_model(
        arch,
        vocab_size=len(tok),
        initializer_range=0.2,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        attn_implementation="eager",
        **overrides,
    )


def fingerprint(model: torch.nn.Module) -> str:
    """A hash of every weight's bytes, to notice a zoo model that was changed after it was built."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tiny_model(name: str = "llama", dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """A fresh, deterministic tiny causal LM in eval mode; same name, same bits, on any machine.

    Each call gets its own copy (a test or a submission may change it in place) of one model built
    per process: copying is a third of building it, and tests ask for dozens per submission."""
    return from_spec(ModelSpec(name, str(dtype).removeprefix("torch."), str(torch.device(device))))


def warm() -> None:
    """Build the models and the tokenizer once, so processes forked afterwards find them ready."""
    _pristine_tokenizer()
    for name in MODEL_CONFIGS:
        _pristine_model(name, "float32", "cpu")


@functools.cache
def _pristine_model(name: str, dtype_name: str, device: str):
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, dtype_name)
    _, _, seed = MODEL_CONFIGS.get(name, (None, None, 0))
    config = _config(name)
    cpu_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.random.set_rng_state(cpu_state)
    model = model.to(dtype=dtype, device=device).eval()
    # Generation must run exactly gen_len steps: no early stop at a sampled EOS.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = config.pad_token_id
    spec = ModelSpec(name, dtype_name, device)
    model._autograder_spec = spec
    model._autograder_fingerprint = fingerprint(model)
    return model


def from_spec(spec: ModelSpec):
    """A fresh copy of the model a spec names (the sandbox's side of a model passed as an argument)."""
    return copy.deepcopy(_pristine_model(spec.name, spec.dtype, spec.device))
