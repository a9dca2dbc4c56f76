"""Tests for labkit.policies: a policy is trained and saved once, then loaded back unchanged."""

from __future__ import annotations

import pytest
import torch
from conftest import LinearLengthReward, make_tiny_lm
from datasets import Dataset, DatasetDict

from labkit import dpo, policies, ppo, presets, rewards

PROMPTS = ["How do I keep my basil plant alive?", "What is a good way to sleep better?"]


def length_reward(prompts, responses):
    """Longer replies score higher (any reward will do: these tests check saving and loading)."""
    return torch.tensor([len(r) / 50.0 for r in responses])


def _logits(model, tok):
    ids = tok(PROMPTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


def _pairs() -> DatasetDict:
    rows = {
        "prompt": PROMPTS * 2,
        "chosen": ["Water it when the soil is dry.", "Keep the room dark."] * 2,
        "rejected": ["You are an idiot.", "Figure it out yourself."] * 2,
    }
    return DatasetDict(train=Dataset.from_dict(rows), test=Dataset.from_dict(rows))


def test_find_saved_takes_the_first_folder_with_an_adapter(tmp_path):
    """Folders without an adapter are skipped; the first with one wins; an unknown method is refused."""
    empty, first, second = tmp_path / "empty", tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        (folder / "policy").mkdir(parents=True)
        (folder / "policy" / "adapter_config.json").write_text("{}")
    assert first == policies.find_saved([empty, None, first, second], "ppo")
    assert policies.find_saved([empty], "ppo") is None
    assert policies.find_saved([first], "dpo") is None  # DPO saves under adapter/, not policy/
    with pytest.raises(ValueError, match="method must be one of"):
        policies.find_saved([first], "grpo")


def test_ppo_policy_trains_once_then_loads_the_same_weights(tiny_tokenizer, tmp_path):
    """The first call trains and saves to save_to; the second finds it there and gives the same model."""
    tok = tiny_tokenizer
    cfg = ppo.PPOConfig(
        batch_size=4,
        mini_batch_size=2,
        max_new_tokens=8,
        total_steps=2,
        log_every=0,
        sample_table_every=0,
        learning_rate=1e-2,
    )
    preset = presets.load("tiny")
    trained = policies.ppo_policy(
        preset,
        [tmp_path / "ch04"],
        save_to=tmp_path / "ch06",
        reward=length_reward,
        prompts=PROMPTS,
        config=cfg,
        base=(make_tiny_lm(tok), tok),
    )
    assert ("trained", tmp_path / "ch06") == (trained.source, trained.folder)
    assert 2 == len(trained.history)
    loaded = policies.ppo_policy(preset, [tmp_path / "ch04"], save_to=tmp_path / "ch06", base=(make_tiny_lm(tok), tok))
    assert ("loaded", tmp_path / "ch06") == (loaded.source, loaded.folder)
    assert [1, 2] == [row["step"] for row in loaded.history]
    assert 2 == loaded.metrics["ppo.steps"]
    assert torch.allclose(_logits(trained.model, tok), _logits(loaded.model, tok))
    with loaded.model.disable_adapter():  # the reference is the untouched base
        assert torch.allclose(_logits(make_tiny_lm(tok), tok), _logits(loaded.model, tok))
    assert "PPO policy loaded" in loaded.describe()


def test_ppo_policy_does_not_load_a_run_trained_against_another_reward(tiny_tokenizer, tmp_path, capsys):
    """A chapter's saved PPO run against a reward model retrained since is not used: a run against this reward
    trains, and the old one is kept beside it."""
    tok = tiny_tokenizer
    cfg = ppo.PPOConfig(batch_size=4, mini_batch_size=2, max_new_tokens=8, total_steps=1, log_every=0)
    preset = presets.load("tiny")

    def call(reward):
        return policies.ppo_policy(
            preset,
            [],
            save_to=tmp_path / "ch06",
            reward=reward,
            prompts=PROMPTS,
            config=cfg,
            base=(make_tiny_lm(tok), tok),
        )

    assert "trained" == call(LinearLengthReward(0)).source
    assert "loaded" == call(LinearLengthReward(0)).source
    again = call(LinearLengthReward(1))
    assert ("trained", tmp_path / "ch06") == (again.source, again.folder)
    assert "against another reward than this one: not used" in capsys.readouterr().out
    assert (tmp_path / "ch06.old-1" / "policy" / "adapter_config.json").is_file()
    assert ppo.checkpoint_reward(tmp_path / "ch06")["fingerprint"] == rewards.fingerprint(LinearLengthReward(1))


def test_dpo_policy_trains_once_then_loads_the_same_weights(tiny_tokenizer, tmp_path):
    """DPO trains on the pairs and saves; the next call loads the adapter without needing pairs."""
    tok = tiny_tokenizer
    cfg = dpo.LabDPOConfig(max_steps=2, batch_size=2, learning_rate=5e-3)
    preset = presets.load("tiny")
    trained = policies.dpo_policy(
        preset, [], _pairs(), save_to=tmp_path / "dpo", config=cfg, base=(make_tiny_lm(tok), tok)
    )
    assert ("trained", 2) == (trained.source, trained.metrics["steps"])
    loaded = policies.dpo_policy(preset, [tmp_path / "dpo"], base=(make_tiny_lm(tok), tok))
    assert ("loaded", 2) == (loaded.source, loaded.metrics["steps"])
    assert loaded.history
    assert torch.allclose(_logits(trained.model, tok), _logits(loaded.model, tok))


def test_dpo_policy_without_a_run_or_pairs_says_what_to_pass(tiny_tokenizer, tmp_path):
    """With nothing saved and no pairs, the error names the folders searched and the pairs argument."""
    with pytest.raises(ValueError, match="pass pairs="):
        policies.dpo_policy(
            presets.load("tiny"), [tmp_path / "nothing"], base=(make_tiny_lm(tiny_tokenizer), tiny_tokenizer)
        )


def test_an_adapter_for_another_model_is_a_clear_error(tiny_tokenizer, tmp_path):
    """An adapter trained on a wider model does not load silently onto this one."""
    from labkit.models import add_lora

    add_lora(make_tiny_lm(tiny_tokenizer, hidden=64)).save_pretrained(tmp_path / "policy")
    with pytest.raises(ValueError, match="does not fit this base model"):
        policies.load_adapter(make_tiny_lm(tiny_tokenizer), tmp_path / "policy")
