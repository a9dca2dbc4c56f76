"""Reward hacking helpers: the proxy/gold tracker, the noisy reward model recipe, the figure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_tiny_lm

from labkit import evaluate, generate, hacking, ppo
from labkit import world as world_mod
from labkit.labels import RankingRecord
from labkit.reward_model import RewardModelConfig

W = world_mod.load()
PROMPT = W.prompts("train")[0]
TOPIC = W.topic(PROMPT.topic_id)
HELPFUL = " ".join(TOPIC.tips[:2])
RUDE = "What a stupid question. Figure it out yourself, idiot."
SAMPLES = [
    (PROMPT.text, HELPFUL, 0.5, 1.0),
    (PROMPT.text, RUDE, -1.0, 3.0),
    (PROMPT.text, " ".join([TOPIC.tips[0]] * 3), 2.0, -0.5),
]


def fake_rows(n: int = 6) -> list[dict]:
    """Tracker rows with distinct, hand-made values for every curve key."""
    return [
        {
            "step": i + 1,
            "kl": 0.5 * i,
            "proxy": 0.1 * i,
            "kl_coef": 0.0,
            "gold_utility": 0.3 - 0.05 * i,
            "gold_helpfulness": 0.2,
            "rude_fraction": 0.1,
            "degeneration": 0.01 * i,
            "distinct_1": 0.5,
            "distinct_2": 0.9 - 0.1 * i,
            "repetition": 0.02 * i,
            "mean_words": 20.0,
        }
        for i in range(n)
    ]


def test_all_names_exist():
    """Every name in __all__ is defined."""
    assert all(hasattr(hacking, name) for name in hacking.__all__)


def test_repetition_is_the_share_of_repeated_trigrams():
    """Three copies of a three-word sentence repeat 4 of their 7 trigrams; distinct words repeat none."""
    assert 4 / 7 == pytest.approx(hacking.repetition("a b c a b c a b c"))
    assert 0.0 == hacking.repetition("water the basil when the soil is dry")
    assert 0.0 == hacking.repetition("too short")


def test_reply_stats_match_the_world_for_samples_and_tuples():
    """reply_stats averages the world's gold over the replies, whether given as Samples or tuples."""
    gold = [W.gold(p, r) for p, r, _, _ in SAMPLES]
    from_tuples = hacking.reply_stats(W, SAMPLES)
    as_samples = [generate.Sample("id", p, i, r, 0) for i, (p, r, _, _) in enumerate(SAMPLES)]
    assert from_tuples == hacking.reply_stats(W, as_samples)
    assert pytest.approx(np.mean([g.utility for g in gold])) == from_tuples["gold_utility"]
    assert pytest.approx(np.mean([g.helpfulness for g in gold])) == from_tuples["gold_helpfulness"]
    assert pytest.approx(1 / 3) == from_tuples["rude_fraction"]
    assert evaluate.distinct_n([s[1] for s in SAMPLES], 2) == from_tuples["distinct_2"]
    assert 3 == from_tuples["n"]


def test_tracker_records_proxy_kl_and_gold_of_the_step_samples():
    """One on_step call records the mean score, mean KL and the world's gold of exactly those samples."""
    tracker = hacking.ProxyGoldTracker(W, keep_samples_every=1)
    tracker.on_step({"step": 7, "ppo/kl_coef": 0.1}, SAMPLES)
    row = tracker.rows[0]
    assert set(hacking.CURVE_KEYS) == set(row)
    assert (7, 0.1) == (row["step"], row["kl_coef"])
    assert pytest.approx(np.mean([s[2] for s in SAMPLES])) == row["proxy"]
    assert pytest.approx(np.mean([s[3] for s in SAMPLES])) == row["kl"]
    assert pytest.approx(np.mean([W.gold(p, r).utility for p, r, _, _ in SAMPLES])) == row["gold_utility"]
    assert pytest.approx(np.mean([hacking.repetition(s[1]) for s in SAMPLES])) == row["repetition"]
    assert [s[1] for s in SAMPLES] == list(tracker.snapshots[7]["response"])
    assert [7] == list(tracker.table().index)


def test_tracker_follows_a_ppo_run(tiny_tokenizer):
    """Attached to PPO, the tracker logs one row per step whose proxy and KL equal PPO's own metrics."""
    prompts = [p.text for p in W.prompts("train")[:4]]
    cfg = ppo.PPOConfig(
        batch_size=8,
        mini_batch_size=4,
        max_new_tokens=8,
        total_steps=2,
        log_every=0,
        sample_table_every=0,
        checkpoint_every=0,
    )
    result, tracker = hacking.train_and_track(
        make_tiny_lm(tiny_tokenizer),
        tiny_tokenizer,
        prompts,
        lambda p, r: torch.tensor([float(len(x)) for x in r]),
        cfg,
        world=W,
    )
    assert [1, 2] == [r["step"] for r in tracker.rows]
    for row, metrics in zip(tracker.rows, result.metrics):
        assert pytest.approx(metrics["objective/scores"], rel=1e-5) == row["proxy"]
        assert pytest.approx(metrics["objective/kl"], rel=1e-4, abs=1e-6) == row["kl"]
    assert pytest.approx(hacking.reply_stats(W, result.samples)["gold_utility"]) == tracker.rows[-1]["gold_utility"]


def _lines(fig):
    return [
        [
            (line.get_label(), list(line.get_xdata()), list(line.get_ydata()))
            for line in ax.get_lines()
            if not line.get_label().startswith("_")
        ]
        for ax in fig.axes
    ]


def test_proxy_gold_figure_draws_each_run_against_kl():
    """Each panel has one line per run, x = KL and y = the panel's key (raw values when smooth=1)."""
    a, b = fake_rows(), fake_rows(4)
    fig = hacking.proxy_gold_figure({"no KL penalty": a, "KL penalty": b}, smooth=1)
    panels = _lines(fig)
    assert 3 == len(panels)
    for lines, key in zip(panels, ("proxy", "gold_utility", "distinct_2")):
        assert [
            ("no KL penalty", [r["kl"] for r in a], [r[key] for r in a]),
            ("KL penalty", [r["kl"] for r in b], [r[key] for r in b]),
        ] == lines
    assert 2 == len(hacking.proxy_gold_figure({"x": a}, diversity=False).axes)
    assert ["symlog", "linear"] == [
        hacking.proxy_gold_figure({"x": a}, log_kl=flag).axes[0].get_xscale() for flag in (True, False)
    ]


def test_proxy_gold_figure_smooths_both_axes():
    """With smooth=3 both coordinates are trailing 3-step means."""
    rows = fake_rows()
    ((label, x, y),) = _lines(hacking.proxy_gold_figure({"run": rows}, smooth=3))[0]
    kl = [r["kl"] for r in rows]
    assert pytest.approx([kl[0], np.mean(kl[:2]), *[np.mean(kl[i - 2 : i + 1]) for i in range(2, 6)]]) == x
    assert pytest.approx(np.mean([r["proxy"] for r in rows[-3:]])) == y[-1]


def test_curves_table_compares_first_and_last_steps():
    """curves_table holds the mean of the first and last `window` steps of each run."""
    table = hacking.curves_table({"run": fake_rows()}, window=2)
    assert pytest.approx(0.25) == table.loc["run", "kl_first"]
    assert pytest.approx(2.25) == table.loc["run", "kl_last"]
    assert pytest.approx(0.3 - 0.05 * 4.5) == table.loc["run", "gold_utility_last"]
    rising_then_falling = [{**r, "gold_utility": g} for r, g in zip(fake_rows(), (0.0, 0.2, 0.6, 0.6, 0.1, 0.0))]
    peak = hacking.curves_table({"run": rising_then_falling}, window=2).loc["run"]
    assert (0.6, 4, 1.25) == (peak["gold_peak"], peak["gold_peak_step"], peak["kl_at_gold_peak"])
    assert pytest.approx(0.25) == peak["proxy_at_gold_peak"]


def test_kl_controller_trace_follows_the_adaptive_controller():
    """The trace starts at the initial beta and moves it by the clipped proportional error of each step's KL."""
    betas = hacking.kl_controller_trace([12.0, 3.0, 6.0], init_kl_coef=0.1, target=6.0, horizon=100, batch_size=10)
    assert pytest.approx([0.1, 0.1 * 1.02, 0.1 * 1.02 * 0.98]) == betas


def test_sample_texts_show_the_first_and_last_snapshot():
    """sample_texts returns n replies of the first and the last kept step."""
    tracker = hacking.ProxyGoldTracker(W, keep_samples_every=2)
    for step in (1, 2, 3, 4):
        tracker.on_step({"step": step}, SAMPLES)
    table = hacking.sample_texts(tracker, n=2)
    assert [1, 1, 4, 4] == list(table["step"])
    assert [1, 2, 4] == sorted(tracker.snapshots)


def _records() -> list[RankingRecord]:
    """Ten items ranked by two labelers: the noisy one prefers helpful to rude, the other the reverse."""
    out = []
    for i, prompt in enumerate(W.prompts("train")[:10]):
        tips = W.topic(prompt.topic_id).tips
        texts = (f"{tips[0]} {tips[1]}", RUDE, "It depends on many things.")
        rankings = {"noisy_crowdworker": (("0",), ("2",), ("1",)), "careful": (("1",), ("2",), ("0",))}
        for labeler, ranking in rankings.items():
            out.append(
                RankingRecord(
                    item_id=f"it{i}",
                    prompt=prompt.text,
                    completion_ids=("0", "1", "2"),
                    completions=texts,
                    labeler=labeler,
                    criterion="helpfulness",
                    guideline_version="test",
                    ranking=ranking,
                )
            )
    return out


def test_noisy_reward_model_trains_on_few_items_of_one_persona(tmp_path):
    """The recipe keeps num_items items of the persona, trains only the top layer and head, and learns them."""
    from test_reward_model import make_tiny_bert

    from labkit import reward_model

    folder = make_tiny_bert(tmp_path / "bert")
    cfg = RewardModelConfig(
        backbone=str(folder),
        max_length=48,
        learning_rate=5e-3,
        epochs=8,
        batch_size=6,
        warmup_fraction=0.0,
        seed=0,
        device="cpu",
    )
    frozen_before = reward_model.load_backbone(cfg)[0].bert.encoder.layer[0].state_dict()
    reward, metrics = hacking.train_noisy_reward_model(num_items=6, records=_records(), cfg=cfg, trainable_layers=1)
    assert (6, 18) == (metrics["num_items"], metrics["num_pairs"])  # 3 pairs per item, only the noisy labeler's
    frozen_after = reward.model.bert.encoder.layer[0].state_dict()
    assert all(torch.equal(frozen_before[k], frozen_after[k]) for k in frozen_before)
    assert not torch.equal(reward_model.load_backbone(cfg)[0].classifier.weight, reward.model.classifier.weight)
    prompts = [p.text for p in W.prompts("train")[:10]]
    tips = [W.topic(p.topic_id).tips for p in W.prompts("train")[:10]]
    helpful = reward(prompts, [f"{t[0]} {t[1]}" for t in tips])
    rude = reward(prompts, [RUDE] * 10)
    assert bool((helpful > rude).float().mean() >= 0.8)


def test_noisy_reward_model_names_the_personas_it_has():
    """Asking for a persona without rankings lists the labelers there are."""
    with pytest.raises(ValueError, match="no rankings by 'nobody'.*careful"):
        hacking.train_noisy_reward_model(persona="nobody", records=_records())


def test_metrics_are_finite_numbers():
    """Every recorded value is a finite float (the figure and the JSON report need that)."""
    tracker = hacking.ProxyGoldTracker(W)
    tracker.on_step({"step": 1, "ppo/kl_coef": 0.0}, SAMPLES)
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in tracker.rows[0].values())


def test_ppo_config_is_the_preset_with_the_hacking_changes():
    """ppo_config starts from the preset's PPO settings, applies HACKING_PPO and kl_coef, then the overrides."""
    from labkit import presets

    preset = presets.load("tiny")
    cfg = hacking.ppo_config(preset, 0.0, seed=3)
    assert (0.0, 3, preset.max_new_tokens) == (cfg.kl_coef, cfg.seed, cfg.max_new_tokens)
    assert hacking.HACKING_PPO == {k: getattr(cfg, k) for k in hacking.HACKING_PPO}
    assert preset.stage_config("ppo", ppo.PPOConfig).learning_rate == cfg.learning_rate
    assert 7 == hacking.ppo_config(preset, 0.1, total_steps=7).total_steps


def test_ppo_config_keeps_another_presets_own_sizes():
    """On smol the hacking runs keep the preset's PPO sizes (and LAB_SETTINGS's changes to them), not HACKING_PPO."""
    from labkit import presets

    smol = presets.by_name("smol")
    own = smol.stages["ppo"]["total_steps"]
    assert own == hacking.ppo_config(smol, 0.01).total_steps != hacking.HACKING_PPO["total_steps"]
    cfg = hacking.ppo_config(presets.with_settings(smol, ["ppo.total_steps=3"]), 0.01)
    assert (3, 0.01) == (cfg.total_steps, cfg.kl_coef)
