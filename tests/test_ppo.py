"""labkit's PPO loop on the tiny random fixture model, on CPU."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch
from conftest import LinearLengthReward, make_tiny_lm

from labkit import ppo, rewards
from labkit.models import sequence_logprobs
from labkit.ppo import METRIC_DOCS, AdaptiveKLController, FixedKLController, PPOConfig, PPOTrainer
from labkit.ppo_math import token_logprobs

PROMPTS = ["How do I keep my basil plant alive?", "What is a good way to sleep better?", "Hi there"]
TIMING_KEYS = {k for k in METRIC_DOCS if k.startswith("time/")} | {"samples_per_second"}


def peaky_lm(tokenizer, seed: int = 0):
    """The fixture Llama with embeddings scaled up x10 so its next-token distribution is far from uniform.

    A freshly initialised model has logits of size ~0.1 behind a final RMSNorm, so no adapter can
    move its (uniform) distribution much; scaled embeddings give LoRA something to steer.
    """
    model = make_tiny_lm(tokenizer, seed=seed)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(10.0)
    return model


def token_reward(tokenizer, token: str = "Ġthe"):
    """Reward = fraction of the response's tokens (re-tokenised from text) equal to `token`."""
    target = tokenizer.convert_tokens_to_ids(token)

    def reward(prompts, responses):
        ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in responses]
        return torch.tensor([sum(i == target for i in x) / max(len(x), 1) for x in ids])

    return reward


def small_cfg(**overrides) -> PPOConfig:
    base = dict(
        batch_size=16,
        mini_batch_size=8,
        max_new_tokens=16,
        learning_rate=1e-2,
        kl_coef=0.0,
        total_steps=3,
        log_every=0,
        sample_table_every=0,
        checkpoint_every=0,
    )
    return PPOConfig(**{**base, **overrides})


def mean(rows, key):
    return sum(r[key] for r in rows) / len(rows)


def test_all_names_exist():
    """Every name in __all__ is defined."""
    assert all(hasattr(ppo, name) for name in ppo.__all__)


def test_config_fields_all_documented_and_validated():
    """Every PPOConfig field has a docstring, and a bad combination raises a clear error."""
    import inspect

    source = inspect.getsource(PPOConfig)
    for f in ppo.dataclasses.fields(PPOConfig):
        assert f"{f.name}:" in source and '"""' in source.split(f"{f.name}:")[1].split("\n", 2)[1]
    with pytest.raises(ValueError, match="mini_batch_size \\(5\\) must divide batch_size \\(16\\)"):
        PPOConfig(batch_size=16, mini_batch_size=5)


def test_score_rises_with_a_token_reward(tiny_tokenizer):
    """Rewarding one token makes PPO produce more of it within twenty steps."""
    result = ppo.train(
        peaky_lm(tiny_tokenizer), tiny_tokenizer, PROMPTS, token_reward(tiny_tokenizer), small_cfg(total_steps=20)
    )
    first, last = mean(result.metrics[:3], "objective/scores"), mean(result.metrics[-3:], "objective/scores")
    assert last > first + 0.1


def test_lora_changes_adapters_not_base(tiny_tokenizer):
    """With LoRA only the adapters (and value head) move; every base weight stays identical."""
    model = peaky_lm(tiny_tokenizer)
    base_before = {k: v.clone() for k, v in model.state_dict().items()}
    # Reply length varies in every batch (one token of "the" need not turn up in three): the value head has targets.
    by_length = lambda prompts, responses: torch.tensor([len(r) / 10 for r in responses])  # noqa: E731
    result = ppo.train(model, tiny_tokenizer, PROMPTS, by_length, small_cfg())
    after = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in result.policy.state_dict().items()
    }
    assert all(torch.equal(base_before[k], after[k]) for k in base_before)
    lora_b = [v for k, v in result.policy.state_dict().items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # lora_B starts at zero
    assert result.value_head.summary.weight.abs().sum() > 0


def test_reference_logprobs_are_the_base_model(tiny_tokenizer):
    """After training, the reference (adapters off) scores tokens exactly as the untouched base model."""
    model = peaky_lm(tiny_tokenizer)
    base = copy.deepcopy(model)
    trainer = PPOTrainer(model, tiny_tokenizer, PROMPTS, token_reward(tiny_tokenizer), small_cfg(total_steps=2))
    trainer.train()
    enc = tiny_tokenizer(trainer.rendered, return_tensors="pt", padding=True, add_special_tokens=False)
    ids = torch.cat([enc["input_ids"], enc["input_ids"][:, -4:]], dim=1)
    attn = torch.cat([enc["attention_mask"], torch.ones(3, 4, dtype=torch.long)], dim=1)
    response_mask = torch.tensor([[True] * 4, [True] * 4, [True, True, False, False]])
    with torch.no_grad():
        ref_logits, _ = trainer._forward(ids, attn, response_mask, reference=True)
        policy_logits, _ = trainer._forward(ids, attn, response_mask)
        expected = sequence_logprobs(base, ids, attn, ids.shape[1] - 4)[response_mask]
    tokens = ids[:, -4:][response_mask]  # the logits of the masked tokens only, row by row
    assert ref_logits.shape == (10, model.config.vocab_size)
    assert torch.allclose(token_logprobs(ref_logits, tokens), expected, atol=1e-5)
    assert not torch.allclose(token_logprobs(policy_logits, tokens), expected, atol=1e-3)


def test_large_kl_coef_keeps_kl_small(tiny_tokenizer):
    """A strong KL penalty keeps the policy closer to the reference than no penalty does."""
    runs = {}
    for coef in (0.0, 1.0):
        result = ppo.train(
            peaky_lm(tiny_tokenizer),
            tiny_tokenizer,
            PROMPTS,
            token_reward(tiny_tokenizer),
            small_cfg(total_steps=10, kl_coef=coef),
        )
        runs[coef] = mean(result.metrics[-4:], "objective/kl")
    assert runs[1.0] < 0.5 * runs[0.0]


def test_metrics_keys_file_and_callbacks(tiny_tokenizer, tmp_path):
    """Each step logs exactly the documented keys, to the callback and to metrics.jsonl."""
    seen = []
    result = ppo.train(
        make_tiny_lm(tiny_tokenizer),
        tiny_tokenizer,
        PROMPTS,
        token_reward(tiny_tokenizer),
        small_cfg(total_steps=2, output_dir=str(tmp_path)),
        callbacks=[lambda metrics, samples: seen.append((metrics, samples))],
    )
    assert [set(m) for m in result.metrics] == [set(METRIC_DOCS)] * 2
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == result.metrics
    assert [m for m, _ in seen] == result.metrics
    prompt, response, score, kl = seen[-1][1][0]
    assert prompt in PROMPTS and isinstance(response, str) and math.isfinite(score) and math.isfinite(kl)
    assert len(seen[-1][1]) == 16


def _comparable(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def test_resume_after_a_kill_matches_an_uninterrupted_run(tiny_tokenizer, tmp_path):
    """2 steps, a restart from a rebuilt model, 2 more steps == 4 uninterrupted steps, metric for metric."""
    reward = token_reward(tiny_tokenizer)
    cfg = dict(total_steps=4, checkpoint_every=2, adaptive_kl=True, kl_coef=0.1, target_kl=0.5, kl_horizon=50)
    full = ppo.train(
        peaky_lm(tiny_tokenizer), tiny_tokenizer, PROMPTS, reward, small_cfg(**cfg, output_dir=str(tmp_path / "a"))
    )
    ppo.train(
        peaky_lm(tiny_tokenizer),
        tiny_tokenizer,
        PROMPTS,
        reward,
        small_cfg(**{**cfg, "total_steps": 2}, output_dir=str(tmp_path / "b")),
    )
    torch.manual_seed(1234)  # the "new process" starts from different global RNG state
    resumed = ppo.train(
        peaky_lm(tiny_tokenizer),
        tiny_tokenizer,
        PROMPTS,
        reward,
        small_cfg(**cfg, output_dir=str(tmp_path / "b")),
        resume=True,
    )
    assert len(resumed.metrics) == 4
    for a, b in zip(_comparable(full.metrics), _comparable(resumed.metrics)):
        assert a.keys() == b.keys()
        assert all(abs(a[k] - b[k]) <= 1e-6 for k in a), {k: (a[k], b[k]) for k in a if abs(a[k] - b[k]) > 1e-6}
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]


def test_fresh_run_refuses_to_overwrite_a_checkpoint(tiny_tokenizer, tmp_path):
    """resume=False on a folder with a checkpoint raises and leaves the saved files untouched."""
    reward = token_reward(tiny_tokenizer)
    ppo.train(
        make_tiny_lm(tiny_tokenizer),
        tiny_tokenizer,
        PROMPTS,
        reward,
        small_cfg(total_steps=1, output_dir=str(tmp_path)),
    )
    saved = [tmp_path / "metrics.jsonl", *sorted((tmp_path / "checkpoint").iterdir())]
    before = {p.name: p.read_bytes() for p in saved}
    with pytest.raises(ValueError, match="already holds a PPO checkpoint.*resume=True"):
        ppo.train(
            make_tiny_lm(tiny_tokenizer),
            tiny_tokenizer,
            PROMPTS,
            reward,
            small_cfg(total_steps=1, output_dir=str(tmp_path)),
            resume=False,
        )
    with pytest.raises(ValueError, match="different config.*learning_rate"):
        ppo.train(
            make_tiny_lm(tiny_tokenizer),
            tiny_tokenizer,
            PROMPTS,
            reward,
            small_cfg(total_steps=2, learning_rate=0.5, output_dir=str(tmp_path)),
        )
    after = {p.name: p.read_bytes() for p in saved}
    assert before == after


def test_a_checkpoint_resumes_only_against_the_reward_it_trained_on(tiny_tokenizer, tmp_path):
    """A reward model retrained since (other weights) is refused with the way out, and nothing is changed; the
    same weights in a new object resume; `labkit run`'s check and `set_aside` agree and keep the old run."""
    out = tmp_path / "ppo"
    ppo.train(
        make_tiny_lm(tiny_tokenizer), tiny_tokenizer, PROMPTS, LinearLengthReward(0), small_cfg(output_dir=str(out))
    )
    saved = [out / "metrics.jsonl", *sorted((out / "checkpoint").iterdir())]
    before = {p.name: p.read_bytes() for p in saved}
    assert ppo.checkpoint_reward(out)["name"] == "linear_length"
    retrained = LinearLengthReward(1)
    with pytest.raises(ValueError, match="trained against another reward.*new output_dir"):
        ppo.train(make_tiny_lm(tiny_tokenizer), tiny_tokenizer, PROMPTS, retrained, small_cfg(output_dir=str(out)))
    assert before == {p.name: p.read_bytes() for p in saved}

    same = ppo.train(
        make_tiny_lm(tiny_tokenizer), tiny_tokenizer, PROMPTS, LinearLengthReward(0), small_cfg(output_dir=str(out))
    )
    assert [1, 2, 3] == [row["step"] for row in same.metrics]  # resumed as finished: nothing to train
    assert ppo.trained_against_other(out, rewards.fingerprint(retrained))
    assert not ppo.trained_against_other(out, rewards.fingerprint(LinearLengthReward(0)))
    assert not ppo.trained_against_other(out, rewards.fingerprint(lambda p, r: torch.zeros(len(r))))
    assert not ppo.trained_against_other(tmp_path / "nothing", rewards.fingerprint(retrained))

    aside = ppo.set_aside(out)
    assert (aside.name, out.exists()) == ("ppo.old-1", False)
    assert before == {p.name: (aside / p.relative_to(out)).read_bytes() for p in saved}
    out.mkdir()
    assert "ppo.old-2" == ppo.set_aside(out).name


def test_a_run_of_other_settings_or_another_reward_is_set_aside_and_an_unreadable_one_left(tiny_tokenizer, tmp_path):
    """`set_aside_if_stale` moves a run it could not resume (another reward, another seed) and says why; a longer
    run of the same settings resumes, so it stays; a damaged checkpoint stays for the trainer to report."""
    out = tmp_path / "ppo"
    cfg = small_cfg(output_dir=str(out))
    ppo.train(make_tiny_lm(tiny_tokenizer), tiny_tokenizer, PROMPTS, LinearLengthReward(0), cfg)
    same = rewards.fingerprint(LinearLengthReward(0))
    assert ppo.set_aside_if_stale(out, same, dataclasses.replace(cfg, total_steps=9, log_every=2)) is None
    assert ppo.set_aside_if_stale(out, same) is None and out.is_dir()
    moved, why = ppo.set_aside_if_stale(out, same, dataclasses.replace(cfg, seed=1))
    assert (moved.name, why, out.exists()) == ("ppo.old-1", "with other settings (seed: 0 -> 1)", False)
    moved, why = ppo.set_aside_if_stale(moved, rewards.fingerprint(LinearLengthReward(1)), cfg)
    assert (moved.name, why) == ("ppo.old-1.old-1", "against another reward")
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "state.json").write_text("{not json")
    assert ppo.set_aside_if_stale(out, same, dataclasses.replace(cfg, seed=1)) is None and out.is_dir()


def test_bad_reward_shape_is_a_clear_error(tiny_tokenizer):
    """A reward function that returns the wrong number of scores is named in the error."""
    with pytest.raises(ValueError, match="reward_fn returned \\(3,\\) for 16 responses"):
        ppo.train(
            make_tiny_lm(tiny_tokenizer), tiny_tokenizer, PROMPTS, lambda p, r: torch.zeros(3), small_cfg(total_steps=1)
        )


def test_full_finetune_keeps_a_frozen_reference(tiny_tokenizer):
    """lora=False trains every weight and scores the reference with an untouched frozen copy."""
    model = peaky_lm(tiny_tokenizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = PPOTrainer(
        model,
        tiny_tokenizer,
        PROMPTS,
        token_reward(tiny_tokenizer),
        small_cfg(lora=False, learning_rate=1e-3, total_steps=2),
    )
    trainer.train()
    assert any(not torch.equal(before[k], v) for k, v in trainer.policy.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in trainer.ref_model.state_dict().items())


def test_separate_value_model_runs_and_trains(tiny_tokenizer):
    """value_head="separate" trains a critic copy whose adapters move independently of the policy."""
    trainer = PPOTrainer(
        peaky_lm(tiny_tokenizer),
        tiny_tokenizer,
        PROMPTS,
        token_reward(tiny_tokenizer),
        small_cfg(value_head="separate", total_steps=2),
    )
    result = trainer.train()
    assert set(result.metrics[-1]) == set(METRIC_DOCS)
    assert trainer.value_model is not None and trainer.value_model is not trainer.policy


def test_kl_controllers():
    """The adaptive controller moves beta by the clipped proportional error; both round-trip their state."""
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=100)
    ctl.update(current_kl=12.0, n_steps=10)  # error 1.0 clipped to 0.2
    assert math.isclose(ctl.value, 0.1 * (1 + 0.2 * 10 / 100))
    ctl.update(current_kl=5.4, n_steps=10)  # error -0.1
    assert math.isclose(ctl.value, 0.1 * 1.02 * (1 - 0.1 * 10 / 100))
    other = AdaptiveKLController(1.0, 6.0, 100)
    other.load_state_dict(ctl.state_dict())
    assert other.value == ctl.value
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 10)
    assert fixed.value == 0.05


def test_sampler_top_p_and_seed(tiny_tokenizer):
    """A tiny top_p samples greedily; the same generator seed gives the same responses."""
    model = peaky_lm(tiny_tokenizer)
    enc = tiny_tokenizer(["<s><|user|>Hi<|assistant|>"] * 2, return_tensors="pt", add_special_tokens=False)
    args = (model, enc["input_ids"], enc["attention_mask"], 6, None, tiny_tokenizer.pad_token_id)
    greedy = model.generate(**enc, do_sample=False, max_new_tokens=6, min_new_tokens=6)[:, enc["input_ids"].shape[1] :]
    nucleus = ppo.sample_responses(*args, top_p=1e-6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(nucleus, greedy)
    one = ppo.sample_responses(*args, generator=torch.Generator().manual_seed(3))
    two = ppo.sample_responses(*args, generator=torch.Generator().manual_seed(3))
    assert torch.equal(one, two)


def test_sampler_draws_from_the_softmax_and_never_a_masked_token():
    """Inverse transform sampling from one stream: frequencies follow softmax(logits); a token whose logit
    is -inf (cut by top-p) has probability 0 and is never drawn, at either end of the vocabulary."""
    logits = torch.tensor([[float("-inf"), 2.0, 1.0, 0.0, -1.0, float("-inf")]]).repeat(20000, 1)
    drawn = ppo._draw(logits, torch.Generator().manual_seed(0))
    counts = torch.bincount(drawn, minlength=6).float() / len(drawn)
    torch.testing.assert_close(counts, torch.softmax(logits[0], -1), atol=0.01, rtol=0)
    assert counts[0] == 0 and counts[5] == 0


def test_sampler_states_are_a_forward_pass(tiny_tokenizer):
    """with_states returns each sampled token's log-prob and the hidden state that chose it: what one forward
    pass over prompt + reply gives (the rollout uses them instead of that pass), to float rounding."""
    model = peaky_lm(tiny_tokenizer)
    enc = tiny_tokenizer(
        ["<s><|user|>Hi<|assistant|>", "<s><|user|>Tell me more<|assistant|>"],
        return_tensors="pt",
        padding=True,
        padding_side="left",
        add_special_tokens=False,
    )
    args = (model, enc["input_ids"], enc["attention_mask"], 6, None, tiny_tokenizer.pad_token_id, 0.7)
    ids, logprobs, hidden = ppo.sample_responses(*args, generator=torch.Generator().manual_seed(1), with_states=True)
    assert torch.equal(ids, ppo.sample_responses(*args, generator=torch.Generator().manual_seed(1)))
    full_ids = torch.cat([enc["input_ids"], ids], 1)
    full_mask = torch.cat([enc["attention_mask"], torch.ones_like(ids)], 1)
    with torch.no_grad():
        out = model(
            input_ids=full_ids,
            attention_mask=full_mask,
            position_ids=ppo.position_ids(full_mask),
            output_hidden_states=True,
        )
    logits = out.logits[:, -7:-1] / 0.7
    want = torch.log_softmax(logits, -1).gather(-1, ids[..., None]).squeeze(-1)
    torch.testing.assert_close(logprobs, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(hidden, out.hidden_states[-1][:, -7:-1], atol=1e-4, rtol=1e-4)


def test_ppo_stage_metrics_and_artifact(tiny_tokenizer, tmp_path):
    """ppo_stage returns the run's summary metrics and leaves a policy, value head and manifest."""
    result, metrics = ppo.ppo_stage(
        make_tiny_lm(tiny_tokenizer),
        tiny_tokenizer,
        PROMPTS,
        token_reward(tiny_tokenizer),
        small_cfg(total_steps=2, output_dir=str(tmp_path)),
    )
    assert {"ppo.kl_mean", "ppo.wall_seconds"} <= set(metrics)
    assert metrics["ppo.steps"] == 2 and math.isfinite(metrics["ppo.kl_mean"])
    assert (tmp_path / "manifest.json").is_file() and (tmp_path / "value_head.safetensors").is_file()
    assert (tmp_path / "policy" / "adapter_config.json").is_file()


# -- plots ---------------------------------------------------------------------------------------
FAKE = [{"step": i + 1, **{k: float(i * 10 + j) for j, k in enumerate(METRIC_DOCS) if k != "step"}} for i in range(3)]


def _lines(fig):
    return {
        line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for ax in fig.axes for line in ax.get_lines()
    }


def test_plot_metrics_draws_every_panel_key(tmp_path):
    """plot_metrics draws one line per panel key with x = step, from dicts or from metrics.jsonl."""
    from labkit.ppo_plots import PANELS, plot_metrics

    lines = _lines(plot_metrics(FAKE))
    for _, keys in PANELS:
        for key in keys:
            assert lines[key] == ([1, 2, 3], [m[key] for m in FAKE])
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in FAKE))
    assert _lines(plot_metrics(tmp_path / "metrics.jsonl")) == lines
    assert _lines(plot_metrics(tmp_path)) == lines


def test_live_plot_updates_in_place():
    """LivePlot redraws the same figure with every step it is given."""
    from labkit.ppo_plots import LivePlot

    live = LivePlot()
    figure = live.figure
    for m in FAKE[:2]:
        live.on_step(m, [])
    assert _lines(live.figure)["objective/kl"] == ([1, 2], [m["objective/kl"] for m in FAKE[:2]])
    live(FAKE[2], [])
    assert live.figure is figure
    assert _lines(live.figure)["objective/scores"] == ([1, 2, 3], [m["objective/scores"] for m in FAKE])


def test_sample_table_columns():
    """sample_table turns (prompt, response, score, kl) tuples into a query | response | score | kl frame."""
    from labkit.ppo_plots import sample_table

    table = sample_table([("Hi", "Hello", 0.5, 0.1), ("Yo", "", -1.0, 0.0)])
    assert list(table.columns) == ["query", "response", "score", "kl"]
    assert table.values.tolist() == [["Hi", "Hello", 0.5, 0.1], ["Yo", "", -1.0, 0.0]]


def test_missing_metrics_file_is_a_clear_error(tmp_path):
    """Plotting a folder without metrics.jsonl says where it looked."""
    from labkit.ppo_plots import plot_metrics

    with pytest.raises(FileNotFoundError, match="no PPO metrics at"):
        plot_metrics(tmp_path)


@pytest.mark.slow
def test_ppo_runs_on_smollm2(smol):
    """Two PPO steps on the real SmolLM2 policy (CPU): LoRA weights move, every metric is finite."""
    model, tok = smol
    model = copy.deepcopy(model)  # PPO adds LoRA adapters in place; the session's model stays clean
    result = ppo.train(
        model,
        tok,
        PROMPTS[:2],
        lambda p, r: torch.tensor([float(len(x)) / 100 for x in r]),
        small_cfg(batch_size=2, mini_batch_size=2, max_new_tokens=8, total_steps=2, kl_coef=0.1, learning_rate=1e-4),
    )
    assert 2 == len(result.metrics)
    assert all(math.isfinite(v) for m in result.metrics for v in m.values())
    lora_b = [v for k, v in result.policy.state_dict().items() if "lora_B" in k]
    assert any(v.abs().sum() > 0 for v in lora_b)


def test_token_table_lists_unmasked_tokens_with_k1_and_k3(tiny_tokenizer):
    """token_table has one row per unmasked token, with k1 = logp - ref_logp and k3 = (r - 1) - log r."""
    from labkit.ppo_plots import token_table

    ids = torch.tensor(tiny_tokenizer("Keep the bedroom cool", add_special_tokens=False)["input_ids"] + [0])
    logp = torch.linspace(-1.0, -2.0, len(ids))
    ref_logp = torch.full((len(ids),), -1.5)
    mask = torch.ones(len(ids))
    mask[-1] = 0
    table = token_table(tiny_tokenizer, ids, logp, ref_logp, mask)
    n = len(ids) - 1
    assert ["token", "logp_policy", "logp_ref", "k1", "k3"] == list(table.columns)
    assert tiny_tokenizer.convert_ids_to_tokens(ids[:n].tolist()) == table["token"].tolist()
    assert pytest.approx((logp[:n] - ref_logp[:n]).tolist()) == table["k1"].tolist()
    log_r = (ref_logp[:n] - logp[:n]).double()
    assert pytest.approx((log_r.exp() - 1 - log_r).tolist()) == table["k3"].tolist()
    assert (table["k1"] < 0).any() and (table["k3"] >= 0).all()


class _Boom:
    """Unpickling this writes a marker file: the proof that a load ran code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_checkpoint_is_refused_and_runs_nothing(tiny_tokenizer, tmp_path):
    """A crafted state.pt (an old-format or hostile checkpoint) is refused with a clear error; its code never runs."""
    import pickle

    marker = tmp_path / "pwned"
    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    (tmp_path / "run" / "checkpoint" / "state.pt").write_bytes(pickle.dumps({"step": _Boom(marker)}))
    with pytest.raises(ValueError, match="pickled checkpoint.*not loaded.*Nothing was run"):
        ppo.train(
            make_tiny_lm(tiny_tokenizer),
            tiny_tokenizer,
            PROMPTS,
            token_reward(tiny_tokenizer),
            small_cfg(total_steps=1, output_dir=str(tmp_path / "run")),
        )
    assert not marker.exists()
    assert ["state.pt"] == sorted(p.name for p in (tmp_path / "run" / "checkpoint").iterdir())


def test_checkpoints_hold_no_pickle_and_a_damaged_one_is_a_clear_error(tiny_tokenizer, tmp_path):
    """A checkpoint is safetensors + JSON only; a damaged weights file raises naming the folder, runs nothing."""
    ppo.train(
        make_tiny_lm(tiny_tokenizer),
        tiny_tokenizer,
        PROMPTS,
        token_reward(tiny_tokenizer),
        small_cfg(total_steps=1, output_dir=str(tmp_path)),
    )
    files = sorted(p.name for p in (tmp_path / "checkpoint").iterdir())
    assert ["optimizer.safetensors", "rng.safetensors", "state.json", "weights.safetensors"] == files
    assert 1 == ppo.read_checkpoint_step(tmp_path)
    (tmp_path / "checkpoint" / "weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="incomplete or damaged"):
        ppo.train(
            make_tiny_lm(tiny_tokenizer),
            tiny_tokenizer,
            PROMPTS,
            token_reward(tiny_tokenizer),
            small_cfg(total_steps=2, output_dir=str(tmp_path)),
        )


def test_plain_prompting_puts_the_prompt_as_text_to_continue(tiny_lm):
    """PPOConfig(prompting="plain"): the rollout samples a continuation of the prompt itself, no chat turn."""
    model, tok = tiny_lm
    cfg = PPOConfig(batch_size=2, mini_batch_size=2, max_new_tokens=4, total_steps=1, prompting="plain", log_every=0)
    trainer = PPOTrainer(model, tok, ["You are a", "The river"], lambda q, r: torch.zeros(len(r)), cfg)
    assert ["You are a", "The river"] == trainer.rendered
    assert math.isfinite(trainer.step()["objective/kl"])
    with pytest.raises(ValueError, match="prompting must be 'chat' or 'plain'"):
        PPOConfig(prompting="shout")


def test_length_pieces_cover_every_row_once_and_only_its_columns():
    """Rows go into pieces of similar length; each piece's columns hold all of its rows' tokens."""
    prompt_len = torch.tensor([3, 5, 2, 4, 5, 1] * 2)
    reply_len = torch.tensor([1, 30, 2, 29, 3, 30] * 2)
    query_mask = torch.arange(6)[None] >= 6 - prompt_len[:, None]  # left padded to 6
    response_mask = torch.arange(30)[None] < reply_len[:, None]  # right padded to 30
    rows = torch.arange(12)
    pieces = ppo._length_pieces(rows, query_mask.long(), response_mask)
    assert sorted(int(r) for piece, _, _ in pieces for r in piece) == list(range(12))
    for piece, first, t in pieces:
        assert (6 - first) >= prompt_len[piece].max() and t >= reply_len[piece].max()
        assert query_mask[piece, :first].sum() == 0 and response_mask[piece, t:].sum() == 0
    assert sorted(reply_len[piece].max().item() for piece, _, _ in pieces) == [3, 30]  # short apart from long
    padded = sum(len(piece) * (6 - first + t) for piece, first, t in pieces)
    assert padded < 12 * (6 + 30) - ppo.PIECE_OVERHEAD_TOKENS  # the split pays for its extra pass
    assert len(ppo._length_pieces(rows[:6], query_mask.long(), response_mask)) == 1  # too few rows to pay
    same = torch.ones(4, 8, dtype=torch.bool)  # rows of one length: splitting saves nothing
    assert len(ppo._length_pieces(torch.arange(4), same.long(), same)) == 1


def test_a_minibatch_in_length_pieces_makes_the_update_of_one_piece(tiny_tokenizer, monkeypatch):
    """Forward passes over rows of similar length, each on its own columns, change nothing but float rounding:
    the same metrics and the same adapters as one pass over the whole padded minibatch."""
    prompts = ["Hi", "What is a good way to sleep better at night?", "Tell me about basil", "Yo"]

    def run():
        cfg = small_cfg(max_new_tokens=12, total_steps=2, kl_coef=0.05)
        return PPOTrainer(peaky_lm(tiny_tokenizer), tiny_tokenizer, prompts, LinearLengthReward(3), cfg).train()

    splits = []
    real = ppo._length_pieces

    def recorded(*args):
        splits.append(real(*args))
        return splits[-1]

    monkeypatch.setattr(ppo, "_length_pieces", recorded)
    pieces = run()
    assert any(len(split) > 1 for split in splits)  # the fixture's replies do differ in length
    monkeypatch.setattr(ppo, "_length_pieces", lambda rows, q, r: [(rows, 0, r.shape[1])])
    whole = run()
    for a, b in zip(whole.metrics, pieces.metrics):
        for key in a.keys() - TIMING_KEYS:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    a, b = dict(whole.policy.named_parameters()), dict(pieces.policy.named_parameters())
    for name, p in a.items():
        if p.requires_grad:
            torch.testing.assert_close(b[name], p, rtol=1e-4, atol=1e-5)
