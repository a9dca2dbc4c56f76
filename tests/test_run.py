"""The main job: stages in order, metrics.json after every stage, a self-contained report."""

from __future__ import annotations

import copy
import json
import math

import pytest

from labkit import cli, presets, rtp, run

SMALL_STAGES = {
    "labels": {"num_prompts": 12, "personas": ("careful", "safety_first", "noisy_crowdworker")},
    "reward": {"max_steps": 3, "batch_size": 8},
    "ppo": {"total_steps": 2, "batch_size": 8, "mini_batch_size": 4, "ppo_epochs": 1},
    "bestofn": {"n": 2, "ns": (1, 2)},
    "dpo": {"max_steps": 2, "batch_size": 4, "probe_pairs": 4},
    "evaluate": {"n_bootstrap": 20, "reference_texts": 4, "judges": ("svm",)},
}


def small_preset(**stages):
    """The tiny preset at toy sizes: every stage runs in seconds."""
    return presets.load(
        "tiny", num_eval_prompts=3, completions_per_prompt=2, max_new_tokens=12, stages={**SMALL_STAGES, **stages}
    )


def test_generate_stage_writes_metrics_config_and_report(tmp_path):
    """`run` with the generate stage writes the issue's generate.* keys, the config and the report."""
    state = run.run(small_preset(), tmp_path, stages=("generate",))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 6 == metrics["generate.num_samples"]
    assert 0.0 <= metrics["generate.rude_fraction"] <= 1.0
    assert "generate.gold_utility_mean" in metrics
    assert ["load", "generate"] == json.loads((tmp_path / "config.json").read_text())["stages"]
    assert 6 == sum(1 for _ in open(tmp_path / "samples.jsonl"))
    assert "Base model samples" in (tmp_path / "report.html").read_text()
    assert "labkit run: preset tiny" in run.summary(state)


@pytest.mark.slow
def test_every_stage_runs_and_reports_its_keys(tmp_path):
    """The whole pipeline at toy sizes writes every key the issues name, and figures into the report."""
    run.run(small_preset(), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    wanted = [
        "generate.rude_fraction",
        "generate.gold_utility_mean",
        "generate.num_samples",
        "labels.num_items",
        "labels.krippendorff_alpha",
        "pairs.num_train",
        "pairs.num_test",
        "reward.heldout_accuracy",
        "reward.gold_correlation",
        "ppo.rude_fraction_before",
        "ppo.rude_fraction_after",
        "ppo.kl_mean",
        "ppo.gold_utility_before",
        "ppo.gold_utility_after",
        "ppo.wall_seconds",
    ]
    wanted += [
        "ppo_toxicity.rude_fraction_after",
        "ppo_toxicity.kl_mean",
        "reward.score_std",
        "reward.hack_probes_exploitable",
    ]
    wanted += [
        f"evaluate.{m}.{k}"
        for m in ("base", "bestof2", "ppo", "ppo_toxicity", "dpo")
        for k in ("toxic_share", "expected_max_toxicity", "kl", "gold_utility", "perplexity")
    ]
    assert [] == [k for k in wanted if k not in metrics]
    assert 12 * 2 == metrics["labels.num_items"]  # two rounds of items per prompt
    assert ("preference", "toxicity:binary") == (metrics["ppo.reward"], metrics["ppo_toxicity.reward"])
    assert "preference" == metrics["bestofn.reward"]
    assert 0.0 == metrics["evaluate.base.kl"]
    assert metrics["evaluate.bestof2.kl"] == metrics["bestofn.kl_discrete"]  # ties counted
    assert metrics["bestofn.kl_discrete"] <= metrics["bestofn.kl_analytic"] == pytest.approx(0.1931, abs=1e-3)
    for folder in ("labels", "pairs", "reward_model", "ppo", "ppo_toxicity", "dpo"):
        assert (tmp_path / folder).is_dir(), folder
    report = (tmp_path / "report.html").read_text()
    assert report.count("<img src='data:image/png;base64,") >= 6  # figures are embedded, not linked
    assert "src='http" not in report
    assert report.index("<h2>Headline</h2>") < report.index("<h2>Model</h2>")  # the report opens with it
    assert "ppo_toxicity" in report[: report.index("<h2>Model</h2>")]


def test_rerun_after_the_reward_model_changed_trains_ppo_again_and_keeps_the_old_run(tmp_path, capsys):
    """A rerun into the same folder resumes a finished PPO run against the same reward model (nothing to train),
    but one against a reward model trained otherwise since (new rankings, other settings) is set aside and PPO
    trains against the new one, instead of passing the old policy off as the new reward's; so is a run of other
    PPO settings."""
    stages = ("generate", "labels", "pairs", "reward", "ppo")
    run.run(small_preset(), tmp_path, stages=stages)
    first = json.loads((tmp_path / "ppo" / "checkpoint" / "state.json").read_text())["reward"]["fingerprint"]
    run.run(small_preset(), tmp_path, stages=stages)
    assert not (tmp_path / "ppo.old-1").exists()  # the same data and seed train the same reward model
    assert "trained against another reward" not in capsys.readouterr().out
    run.run(small_preset(reward={**SMALL_STAGES["reward"], "learning_rate": 1e-3}), tmp_path, stages=stages)
    assert "trained against another reward" in capsys.readouterr().out
    state = json.loads((tmp_path / "ppo" / "checkpoint" / "state.json").read_text())
    kept = json.loads((tmp_path / "ppo.old-1" / "checkpoint" / "state.json").read_text())
    assert kept["reward"]["fingerprint"] == first != state["reward"]["fingerprint"]
    assert [1, 2] == [row["step"] for row in state["metrics"]]

    # other PPO settings against the same reward model: set aside before PPO, not refused after every stage reran
    retrained = {**SMALL_STAGES["reward"], "learning_rate": 1e-3}
    run.run(small_preset(reward=retrained, ppo={**SMALL_STAGES["ppo"], "kl_coef": 0.3}), tmp_path, stages=stages)
    assert "was trained with other settings (kl_coef: 0.1 -> 0.3)" in capsys.readouterr().out
    kl_coefs = [
        json.loads((tmp_path / f / "checkpoint" / "state.json").read_text())["config"]["kl_coef"]
        for f in ("ppo.old-2", "ppo")
    ]
    assert [0.1, 0.3] == kl_coefs


def test_a_stage_without_its_input_names_the_stage_to_run(tmp_path):
    """pairs without labels fails with a message that names the labels stage; metrics so far are kept."""
    with pytest.raises(ValueError, match="'labels'"):
        run.run(small_preset(), tmp_path, stages=("generate", "pairs"))
    assert "generate.num_samples" in json.loads((tmp_path / "metrics.json").read_text())


def test_unknown_stage_and_reward_are_clear_errors(tmp_path):
    """A typo in a stage or a reward name lists the valid ones."""
    with pytest.raises(ValueError, match="choose from"):
        run.run(small_preset(), tmp_path, stages=("generat",))
    with pytest.raises(ValueError, match="no stage named"):
        run.run(small_preset(), tmp_path, stages=("",))


def test_cli_empty_stages_is_an_error_not_every_stage(tmp_path, capsys):
    """`--stages ""` names no stage: it is refused (it used to run the whole pipeline)."""
    assert 2 == cli.main(["run", "--preset", "tiny", "--out", str(tmp_path), "--stages", ""])
    assert "no stage named" in capsys.readouterr().err
    assert not (tmp_path / "metrics.json").exists()


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    """`labkit run --preset nope` exits 2 and says which presets exist."""
    assert 2 == cli.main(["run", "--preset", "nope", "--out", str(tmp_path)])
    assert "unknown preset 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_every_stage_runs_on_a_gpt2_shaped_local_model_without_a_chat_template(tmp_path, tiny_tokenizer):
    """`hub:<folder>` runs the whole pipeline on another architecture: GPT-2's Conv1D layers (LoRA on
    them), learned positions, and no chat template (prompts get the plain dialogue frame)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = copy.deepcopy(tiny_tokenizer)  # the fixture is shared: change a copy
    tokenizer.chat_template = None
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    folder = tmp_path / "gpt2-shaped"
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    preset = presets.load(
        f"hub:{folder}", num_eval_prompts=3, completions_per_prompt=2, max_new_tokens=12, stages=SMALL_STAGES
    )
    state = run.run(preset, tmp_path / "run")
    assert "gpt2" == state.model.config.model_type and not getattr(state.tokenizer, "chat_template", None)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for method in ("base", "bestof2", "ppo", "ppo_toxicity", "dpo"):
        assert 0.0 <= metrics[f"evaluate.{method}.toxic_share"] <= 1.0, method
        assert math.isfinite(metrics[f"evaluate.{method}.kl"]), method  # k1 estimate: may dip below 0 at toy sizes
    assert (tmp_path / "run" / "dpo").is_dir() and (tmp_path / "run" / "ppo").is_dir()


@pytest.mark.slow
def test_every_stage_runs_in_the_realtoxicityprompts_world_as_plain_continuation(tmp_path):
    """The smol preset's world and prompting on the tiny model: held-out RTP prompts, raters that score
    continuations, plain prompts everywhere; the variant stays out unless named; the headline has mean
    toxicity and the raters' utility instead of gold."""
    preset = presets.load(
        "tiny",
        world="rtp",
        prompting="plain",
        run_variant=False,
        num_eval_prompts=7,
        completions_per_prompt=2,
        max_new_tokens=12,
        stages={**SMALL_STAGES, "labels": {**SMALL_STAGES["labels"], "rounds": 1, "num_prompts": 14}},
    )
    state = run.run(preset, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "rtp" == metrics["load.world"] == state.world.name
    assert {p.category for p in state.eval_prompts} == set(rtp.CATEGORIES)  # 7 prompts: one per category
    assert [s.prompt for s in state.products["base_samples"][::2]] == [p.text for p in state.eval_prompts]
    assert 14 == metrics["labels.num_items"]  # one round of items per prompt
    assert not any(k.startswith("ppo_toxicity.") for k in metrics)
    for method in ("base", "bestof2", "ppo", "dpo"):
        assert 0.0 <= metrics[f"evaluate.{method}.toxicity_mean"] <= 1.0, method
        assert math.isfinite(metrics[f"evaluate.{method}.perplexity"]), method
    table = run.headline(metrics)
    assert ["method", "mean P(toxic)", "toxic share", "raters' utility", "KL (nats)", "optimised"] == list(table)
    records = json.loads((tmp_path / "labels" / "manifest.json").read_text())
    assert "rtp" == records["inputs"]["world"]
    named = run.run(preset, tmp_path / "variant", stages=("generate", "ppo_toxicity"))
    assert "toxicity:binary" == named.metrics["ppo_toxicity.reward"]
