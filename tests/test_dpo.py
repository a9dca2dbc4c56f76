"""Tests for labkit.dpo: the loss by hand, chat-template formatting, and a few real TRL steps."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from datasets import Dataset, DatasetDict

from labkit import dpo
from labkit.models import chat_prompts


def _pairs(n: int = 8) -> Dataset:
    return Dataset.from_dict(
        {
            "prompt": ["How do I keep my basil plant alive?", "What is a good way to sleep better?"] * (n // 2),
            "chosen": ["Water basil when the top inch of soil feels dry.", "Keep the bedroom cool and dark."]
            * (n // 2),
            "rejected": ["You are an idiot.", "What a stupid question. Figure it out yourself."] * (n // 2),
        }
    )


def test_plain_prompting_trains_on_prompt_and_continuation_as_one_text(tiny_lm, tmp_path):
    """prompting="plain" (the smol preset's RealToxicityPrompts continuations): no chat turn, no dialogue
    frame; TRL's prompt ids are the prompt's own tokens and the continuation keeps its leading space."""
    model, tok = tiny_lm
    pairs = Dataset.from_dict(
        {"prompt": ["He said that you"], "chosen": [" should rest."], "rejected": [" are an idiot"]}
    )
    assert pairs[0] == dpo.trl_pairs(pairs, tok, "plain")[0]
    trainer = dpo.make_trainer(model, tok, pairs, dpo.LabDPOConfig(prompting="plain"), str(tmp_path))
    row = trainer.train_dataset[0]
    assert tok("He said that you", add_special_tokens=False)["input_ids"] == row["prompt_ids"]
    assert tok(" should rest.", add_special_tokens=False)["input_ids"] == row["chosen_ids"][:-1]


def test_dpo_loss_by_hand():
    """Policy equal to reference gives log 2; a positive margin lowers the loss."""
    z = torch.zeros(3)
    assert pytest.approx(math.log(2)) == dpo.dpo_loss(z, z, z, z, beta=0.1).item()
    assert dpo.dpo_loss(z + 1, z - 1, z, z, beta=0.1).item() < math.log(2)
    assert [0.5] == dpo.implicit_reward(torch.tensor([-1.0]), torch.tensor([-6.0]), beta=0.1).tolist()


def test_trl_sees_the_generation_format(tiny_lm, tmp_path):
    """TRL's tokenised prompt is exactly what generate feeds the model; the reply ends with EOS."""
    model, tok = tiny_lm
    trainer = dpo.make_trainer(model, tok, _pairs(2), dpo.LabDPOConfig(), str(tmp_path))
    row = trainer.train_dataset[0]
    expected = tok(chat_prompts(tok, ["How do I keep my basil plant alive?"])[0], add_special_tokens=False)["input_ids"]
    assert expected == row["prompt_ids"]
    assert 1 == row["prompt_ids"].count(tok.bos_token_id)
    assert tok.eos_token_id == row["chosen_ids"][-1] == row["rejected_ids"][-1]


def test_trl_sees_the_generation_format_without_a_chat_template(tiny_lm, tmp_path):
    """A model without a chat template: TRL's prompt is the dialogue frame generate uses, reply + EOS."""
    model, tok = tiny_lm
    tok = copy.deepcopy(tok)  # the fixture's tokenizer is shared
    tok.chat_template = None
    trainer = dpo.make_trainer(model, tok, _pairs(2), dpo.LabDPOConfig(), str(tmp_path))
    row = trainer.train_dataset[0]
    frame = chat_prompts(tok, ["How do I keep my basil plant alive?"])[0]
    assert frame.startswith("User: ")
    assert tok(frame, add_special_tokens=False)["input_ids"] == row["prompt_ids"]
    assert tok.eos_token_id == row["chosen_ids"][-1] == row["rejected_ids"][-1]


@pytest.mark.filterwarnings("error::FutureWarning")  # a learner's output stays free of library deprecations
def test_train_dpo_moves_adapter_not_base(tiny_lm, tmp_path):
    """A few steps change the LoRA weights, leave the base frozen, and raise the implicit margin."""
    model, tok = tiny_lm
    base_before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = dpo.LabDPOConfig(
        max_steps=6, batch_size=4, learning_rate=5e-3, output_dir=str(tmp_path / "dpo"), test_pairs=3
    )
    pairs = DatasetDict(train=_pairs(8), test=_pairs(4))
    policy, metrics = dpo.dpo_stage(model, tok, pairs, cfg)
    assert 6 == metrics["steps"]
    assert 3 == metrics["test_pairs"]  # a sample of the held-out pairs, not all 4
    assert 0.0 == metrics["margin_before"]
    assert metrics["margin_after"] > metrics["margin_before"]
    assert "test_margin" in metrics
    lora_b = [p for n, p in policy.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero
    base_after = policy.get_base_model().state_dict()
    for key, value in base_before.items():
        assert torch.equal(
            value,
            base_after[key.replace(".weight", ".base_layer.weight")] if key not in base_after else base_after[key],
        ), key
    assert (tmp_path / "dpo" / "manifest.json").is_file()
    assert (tmp_path / "dpo" / "adapter" / "adapter_config.json").is_file()


def test_bad_pairs_are_refused(tiny_lm, tmp_path):
    """Missing columns and pre-rendered prompts raise a ValueError saying how to fix them."""
    model, tok = tiny_lm
    with pytest.raises(ValueError, match="rejected"):
        dpo.train_dpo(model, tok, Dataset.from_dict({"prompt": ["a"], "chosen": ["b"]}))
    rendered = Dataset.from_dict({"prompt": chat_prompts(tok, ["hi"]), "chosen": ["b"], "rejected": ["c"]})
    with pytest.raises(ValueError, match="raw user prompt"):
        dpo.train_dpo(model, tok, rendered)
    with pytest.raises(TypeError, match="Dataset"):
        dpo.train_dpo(model, tok, [("a", "b", "c")])


def test_plot_history_draws_training_steps_only():
    """Eval rows are skipped; each panel holds the per-step values and their running mean."""
    history = [
        {"loss": 0.69, "rewards/margins": 0.0, "rewards/accuracies": 0.5, "step": 1},
        {"loss": 0.5, "rewards/margins": 0.4, "rewards/accuracies": 0.75, "step": 2},
        {"eval_loss": 0.6, "step": 2},
        {"loss": 0.3, "rewards/margins": 0.9, "rewards/accuracies": 1.0, "step": 3},
    ]
    fig = dpo.plot_history(history, smooth=2)
    per_step, mean = fig.axes[1].get_lines()[:2]
    assert [1, 2, 3] == list(per_step.get_xdata())
    assert [0.0, 0.4, 0.9] == list(per_step.get_ydata())
    assert pytest.approx([0.2, 0.65]) == list(mean.get_ydata())
    with pytest.raises(ValueError, match="no training steps"):
        dpo.plot_history([{"eval_loss": 0.6, "step": 2}])
