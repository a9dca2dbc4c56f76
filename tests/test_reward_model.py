"""Tests of the preference reward model: loss maths, training on a tiny BERT, save/load, evaluation, plots."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from labkit import reward_model, rewards
from labkit.reward_model import RewardModelConfig

WORDS = (
    "good bad fine awful great terrible water the basil plant sleep well how do i keep my what is a way to "
    "you are an idiot reply please thanks help tip soil dry light cool dark"
).split()


def make_tiny_bert(
    folder: Path, num_labels: int = 1, id2label: dict | None = None, seed: int = 0, hidden: int = 32, layers: int = 2
) -> Path:
    """A random BertForSequenceClassification (hidden 32, 2 layers) and a word-level tokenizer, saved to `folder`."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(WORDS), "?", ".", "!"]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=64,
        num_labels=num_labels,
        pad_token_id=0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    if id2label is not None:
        config.id2label, config.label2id = dict(id2label), {v: k for k, v in id2label.items()}
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def easy_pairs(n_prompts: int = 24, per_prompt: int = 4, seed: int = 0):
    """Pairs where the chosen reply says "good" and the rejected one "bad": a reward model must learn that."""
    from datasets import Dataset, DatasetDict

    rng = random.Random(seed)
    prompts = [
        f"how do i keep my {w} {v} ?"
        for w in ("basil", "plant", "soil", "light")
        for v in ("well", "dry", "cool", "dark", "fine", "great")
    ][:n_prompts]
    rows = []
    for p in prompts:
        for _ in range(per_prompt):
            filler = " ".join(rng.choices(["water", "the", "tip", "help", "please"], k=3))
            rows.append({"prompt": p, "chosen": f"{filler} good", "rejected": f"{filler} bad", "margin": 1.0})
    test_prompts = set(prompts[: n_prompts // 4])
    return DatasetDict(
        {
            "train": Dataset.from_list([r for r in rows if r["prompt"] not in test_prompts]),
            "test": Dataset.from_list([r for r in rows if r["prompt"] in test_prompts]),
        }
    )


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A tiny random BERT reward-model backbone (one output) in a tmp folder."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model")


@pytest.fixture(scope="module")
def trained(bert_dir):
    """(model, tokenizer, metrics) after a few RewardTrainer steps on the easy good/bad task."""
    cfg = RewardModelConfig(
        backbone=str(bert_dir),
        max_length=32,
        learning_rate=3e-3,
        epochs=3,
        batch_size=8,
        warmup_fraction=0.0,
        seed=0,
        logging_steps=5,
    )
    return reward_model.train_reward_model(easy_pairs(), cfg)


def test_bradley_terry_loss_by_hand():
    """The loss is mean(-log sigmoid(chosen - rejected - margin)), plus the centring term when asked."""
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(1.0))) / 2
    assert math.isclose(expected, reward_model.bradley_terry_loss(chosen, rejected).item(), rel_tol=1e-6)
    margin = torch.tensor([1.0, 0.0])
    expected_m = (math.log(2.0) + math.log(1 + math.exp(1.0))) / 2
    assert math.isclose(expected_m, reward_model.bradley_terry_loss(chosen, rejected, margin).item(), rel_tol=1e-6)
    centred = reward_model.bradley_terry_loss(chosen, rejected, center_coefficient=0.01).item()
    assert math.isclose(expected + 0.01 * (9.0 + 1.0) / 2, centred, rel_tol=1e-6)


def test_calibration_bins_sum_to_sample_count():
    """Every pair lands in exactly one bin; a perfect separator's observed rate is 1 in every filled bin."""
    rng = np.random.default_rng(0)
    chosen, rejected = rng.normal(1, 1, 200), rng.normal(0, 1, 200)
    cal = reward_model.calibration_bins(chosen, rejected, n_bins=5)
    assert 200 == sum(cal["counts"])
    assert 6 == len(cal["bin_edges"])
    perfect = reward_model.calibration_bins(np.arange(10) + 1.0, np.zeros(10))
    assert all(o == 1.0 for o, c in zip(perfect["observed"], perfect["counts"]) if c)


def test_training_beats_chance_on_easy_task(trained):
    """A few RewardTrainer steps on a tiny BERT prefer "good" over "bad" on held-out prompts."""
    model, tokenizer, metrics = trained
    result = reward_model.evaluate_reward_model(model, tokenizer, easy_pairs()["test"], max_length=32)
    assert result["accuracy"] > 0.75
    assert result["mean_margin"] > 0
    assert metrics["train_steps"] > 0 and metrics["train_seconds"] > 0
    assert result["num_pairs"] == sum(result["calibration"]["counts"])


def test_training_is_deterministic(bert_dir, trained):
    """The same seed and data give the same scores."""
    cfg = RewardModelConfig(
        backbone=str(bert_dir),
        max_length=32,
        learning_rate=3e-3,
        epochs=3,
        batch_size=8,
        warmup_fraction=0.0,
        seed=0,
        logging_steps=5,
    )
    again, tok, _ = reward_model.train_reward_model(easy_pairs(), cfg)
    model, tokenizer, _ = trained
    texts = ["water good", "water bad"]
    assert torch.allclose(
        reward_model.score(model, tokenizer, ["how ?"] * 2, texts),
        reward_model.score(again, tok, ["how ?"] * 2, texts),
        atol=1e-5,
    )


def test_save_load_roundtrip_gives_identical_scores(trained, tmp_path):
    """Scores after save and load equal the scores before; the folder has a manifest."""
    model, tokenizer, _ = trained
    prompts, texts = ["how do i keep my basil well ?"] * 3, ["good", "bad", "water the basil"]
    before = reward_model.score(model, tokenizer, prompts, texts)
    folder = reward_model.save(
        model, tokenizer, tmp_path / "rm", RewardModelConfig(max_length=32), normalization={"mean": 0.5, "std": 2.0}
    )
    assert (folder / "manifest.json").is_file()
    reward = reward_model.PreferenceReward(folder)
    assert (32, {"mean": 0.5, "std": 2.0}) == (reward.max_length, reward.normalization)
    assert torch.equal(before, torch.as_tensor(reward.raw(prompts, texts)))
    assert torch.allclose((before - 0.5) / 2.0, reward(prompts, texts), atol=1e-6)


def test_failed_save_keeps_the_old_folder(trained, tmp_path):
    """A save that fails midway leaves the previous saved model loadable and unchanged."""
    model, tokenizer, _ = trained
    folder = reward_model.save(model, tokenizer, tmp_path / "rm")
    before = reward_model.score(*reward_model.load(folder), ["how ?"], ["good"])

    class Broken:
        def save_pretrained(self, path):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        reward_model.save(model, Broken(), folder)
    assert torch.equal(before, reward_model.score(*reward_model.load(folder), ["how ?"], ["good"]))
    assert ["rm"] == [p.name for p in tmp_path.iterdir()]


def test_load_of_a_wrong_folder_says_what_to_do(tmp_path):
    """Loading a folder without a model raises FileNotFoundError naming the fix."""
    with pytest.raises(FileNotFoundError, match="train_reward_model"):
        reward_model.load(tmp_path)


def test_bad_pairs_raise_clear_errors(bert_dir):
    """Pairs without the needed columns, or with an empty train split, raise ValueError."""
    from datasets import Dataset, DatasetDict

    cfg = RewardModelConfig(backbone=str(bert_dir), max_steps=1)
    with pytest.raises(ValueError, match="chosen"):
        reward_model.train_reward_model(DatasetDict({"train": Dataset.from_dict({"prompt": ["p"], "x": ["y"]})}), cfg)
    empty = Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []})
    with pytest.raises(ValueError, match="no pairs"):
        reward_model.train_reward_model(DatasetDict({"train": empty}), cfg)


def test_plots_carry_the_data(trained):
    """The calibration plot's points are the filled bins; the histogram counts every score."""
    model, tokenizer, _ = trained
    result = reward_model.evaluate_reward_model(model, tokenizer, easy_pairs()["test"], max_length=32)
    fig = reward_model.calibration_plot(result)
    points = fig.axes[0].lines[1]
    filled = [i for i, c in enumerate(result["calibration"]["counts"]) if c]
    assert [result["calibration"]["observed"][i] for i in filled] == list(points.get_ydata())
    hist = reward_model.score_histogram(result)
    heights = [sum(p.get_height() for p in c) for c in hist.axes[0].containers]
    assert [result["num_pairs"]] * 2 == heights


def test_encode_uses_sentence_pairs_for_encoders(trained):
    """A BERT tokenizer encodes [CLS] prompt [SEP] response [SEP], truncated to max_length."""
    _, tokenizer, _ = trained
    ids = reward_model.encode(tokenizer, "how do i", "water good", max_length=64)
    assert "[CLS] how do i [SEP] water good [SEP]" == tokenizer.decode(ids)
    assert 5 == len(reward_model.encode(tokenizer, "how do i keep my basil", "water the basil well", max_length=5))


def test_reward_stage_metrics(bert_dir, tmp_path):
    """reward_stage returns a PreferenceReward and the held-out accuracy, gold correlation and time."""
    from labkit import world as world_mod

    cfg = RewardModelConfig(backbone=str(bert_dir), max_length=32, learning_rate=3e-3, epochs=1, batch_size=8)
    reward, metrics = reward_model.reward_stage(easy_pairs(), cfg, world=world_mod.load(), out_dir=tmp_path / "rm")
    assert isinstance(reward, reward_model.PreferenceReward)
    assert {"heldout_accuracy", "gold_correlation", "train_seconds", "score_mean", "score_std"} <= set(metrics)
    assert (tmp_path / "rm" / "manifest.json").is_file()
    assert (2,) == tuple(reward(["how ?", "how ?"], ["good", "bad"]).shape)
    # normalised on the training replies: mean 0 and unit spread there, and the same after a reload
    prompts, texts = reward_model.replies(easy_pairs()["train"])
    scores = reward(prompts, texts).numpy()
    assert abs(scores.mean()) < 1e-4 and abs(scores.std() - 1.0) < 1e-4
    again = reward_model.PreferenceReward(tmp_path / "rm")
    assert np.allclose(scores, again(prompts, texts).numpy(), atol=1e-5)


def test_causal_lm_backbone_trains_and_scores(tiny_tokenizer, tmp_path):
    """A Llama-architecture backbone (chat-template text format) trains a few steps and scores text."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        num_labels=1,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "llama")
    tiny_tokenizer.save_pretrained(tmp_path / "llama")
    cfg = RewardModelConfig(backbone=str(tmp_path / "llama"), max_length=48, max_steps=2, batch_size=4)
    model, tokenizer, metrics = reward_model.train_reward_model(easy_pairs(n_prompts=4, per_prompt=2), cfg)
    assert 2 == metrics["train_steps"]
    ids = reward_model.encode(tokenizer, "how do i", "water good", max_length=48)
    assert "<|assistant|>" in tokenizer.decode(ids)
    assert (3,) == tuple(reward_model.score(model, tokenizer, ["q"] * 3, ["a", "bb", "ccc"]).shape)


def test_replies_are_distinct_and_in_first_seen_order():
    """replies() lists every (prompt, reply) of a split once, chosen and rejected alike."""
    from datasets import Dataset

    split = Dataset.from_dict({"prompt": ["p", "p", "q"], "chosen": ["a", "a", "a"], "rejected": ["b", "c", "b"]})
    assert (["p", "p", "p", "q", "q"], ["a", "b", "c", "a", "b"]) == reward_model.replies(split)


def test_gold_comparison_and_correlation():
    """A reward equal to gold has zero rank disagreement and correlation 1; the reversed one flips both."""
    from labkit import world as world_mod

    w = world_mod.load()
    prompt = w.prompts("train")[0]
    rng = random.Random(0)
    texts = [w.reply(prompt, style, rng) for style in world_mod.STYLES]
    prompts = [prompt.text] * len(texts)
    gold = rewards.GoldReward(w)
    same = reward_model.gold_comparison(gold, prompts, texts, world=w)
    assert ["prompt", "reply", "reward", "gold", "disagreement"] == list(same.columns)
    assert np.allclose(0.0, same["disagreement"])
    assert math.isclose(1.0, reward_model.gold_correlation(same)["gold_spearman"])
    flipped = reward_model.gold_comparison(rewards.FunctionReward(lambda p, r: -gold(p, r)), prompts, texts, world=w)
    best = flipped["gold"].idxmax()
    assert flipped.loc[best, "disagreement"] < -0.5
    assert math.isclose(-1.0, reward_model.gold_correlation(flipped)["gold_spearman"])


def test_gold_correlation_is_nan_for_a_constant_reward():
    """A constant reward (or fewer than three replies) has no correlation: NaN, not an error."""
    import pandas as pd

    table = pd.DataFrame({"reward": [1.0, 1.0, 1.0], "gold": [0.1, 0.5, 0.9]})
    assert all(math.isnan(v) for v in reward_model.gold_correlation(table).values())
    assert math.isnan(reward_model.gold_correlation(table.head(2))["gold_pearson"])


def test_reward_stage_scores_heldout_accuracy_on_eval_pairs(bert_dir):
    """With eval_pairs, heldout_accuracy is measured on them: swapping every test pair gives 1 - the test accuracy."""
    cfg = RewardModelConfig(backbone=str(bert_dir), max_length=32, learning_rate=3e-3, epochs=1, batch_size=8)
    data = easy_pairs()
    swapped = data["test"].rename_columns({"chosen": "rejected", "rejected": "chosen"})
    _, metrics = reward_model.reward_stage(data, cfg, eval_pairs=swapped)
    assert math.isclose(1.0 - metrics["test_split_accuracy"], metrics["heldout_accuracy"])
    assert len(swapped) == metrics["num_test"] and metrics["heldout_accuracy"] < 0.5
    _, default = reward_model.reward_stage(data, cfg)
    assert math.isclose(metrics["test_split_accuracy"], default["heldout_accuracy"])
    assert "test_split_accuracy" not in default


def test_reward_stage_takes_the_test_split_of_eval_pairs_and_refuses_leaks(bert_dir):
    """A DatasetDict's "test" split is used; eval pairs on training prompts raise before any training."""
    from datasets import DatasetDict

    cfg = RewardModelConfig(backbone=str(bert_dir), max_length=32, epochs=1, batch_size=8)
    data = easy_pairs()
    both = DatasetDict({"train": data["train"], "test": data["test"]})
    _, metrics = reward_model.reward_stage(data, cfg, eval_pairs=both)
    assert len(data["test"]) == metrics["num_test"]
    with pytest.raises(ValueError, match="same seed"):
        reward_model.reward_stage(data, cfg, eval_pairs=data["train"])


def test_gold_scatter_plots_every_reply_once_per_group():
    """One point collection per style, together holding every (gold, reward) of the table."""
    import pandas as pd

    table = pd.DataFrame(
        {"reward": [0.5, -1.0, 2.0, 0.0], "gold": [0.1, -0.5, 0.8, 0.2], "style": ["vague", "rude", "helpful", None]}
    )
    fig = reward_model.gold_scatter(table)
    collections = fig.axes[0].collections
    assert ["?", "helpful", "rude", "vague"] == [c.get_label() for c in collections]
    points = sorted(map(tuple, np.concatenate([c.get_offsets() for c in collections])))
    assert sorted(zip(table["gold"], table["reward"])) == points
    assert 1 == len(reward_model.gold_scatter(table, hue=None).axes[0].collections)


def test_a_preset_with_no_saved_model_trains_on_its_own_worlds_rankings_and_your_rankings_by_its_criterion(
    tmp_path, monkeypatch
):
    """load_or_train(smol) reads the RealToxicityPrompts world's shipped rankings (not the tiny preset's) and, of
    the learner's files, only rankings by smol's criterion; training itself is replaced here (tested above)."""
    from labkit import learner, presets, shipped

    read, learners = [], []

    class Stop(Exception):
        pass

    def fake_training(pairs, cfg):
        raise Stop

    monkeypatch.setattr(shipped, "load_rankings", lambda path=None: read.append(path) or [])
    monkeypatch.setattr(
        learner, "learner_records", lambda folder=None, criterion="helpfulness": learners.append(criterion) or []
    )
    monkeypatch.setattr(
        learner, "training_pairs", lambda shipped_records, mine, seed=0: ({"train": []}, {"learner_items": 0})
    )
    monkeypatch.setattr(reward_model, "train_reward_model", fake_training)
    for name, folder, criterion in (
        ("smol", "rtp_rankings", "harmless continuation"),
        ("tiny", "rankings", "helpfulness"),
    ):
        with pytest.raises(Stop):
            reward_model.load_or_train(presets.by_name(name), [tmp_path / "nothing saved here"])
        assert (folder, criterion) == (Path(read[-1]).name, learners[-1])
