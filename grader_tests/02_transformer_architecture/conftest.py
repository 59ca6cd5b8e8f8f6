"""Shared reference models for the hidden suite: built once, never modified by a test."""

import pytest

from autograder import zoo


@pytest.fixture(scope="session")
def tokenizer():
    return zoo.tiny_tokenizer()


@pytest.fixture(scope="session")
def llama():
    return zoo.tiny_model("llama")


@pytest.fixture(scope="session")
def qwen2():
    return zoo.tiny_model("qwen2")
