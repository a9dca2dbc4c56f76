"""The main job: every pipeline stage in order, one folder of results.

`labkit run --preset tiny --out DIR` runs, in order (each stage is a function `(state) -> metrics`;
`state` carries what earlier stages produced):

    load       the policy and the held-out prompts every later stage evaluates on
    generate   N completions per held-out prompt from the base model       -> samples.jsonl
    labels     completions on train prompts, ranked by simulated personas  -> labels/
    pairs      N-choose-2 preference pairs, split by prompt; consensus test pairs -> pairs/
    reward     the preference reward model (TRL RewardTrainer), normalised, probed for hacks -> reward_model/
    ppo        labkit's PPO against the preference reward model, with a KL penalty  -> ppo/
    ppo_toxicity  the named variant: PPO against a toxicity classifier (`Preset.variant_reward`);
               by default only where `Preset.run_variant` (not smol on a CPU) -> ppo_toxicity/
    bestofn    best-of-N sampling from the base model by the preference reward model
    dpo        TRL's DPOTrainer with LoRA on the same pairs                -> dpo/
    evaluate   base, best-of-N, both PPO runs and DPO on the held-out prompts, each at its KL

and writes to DIR: `config.json` (the preset and the stage list), `metrics.json` (one flat dict,
keys prefixed by stage: `generate.rude_fraction`, `evaluate.ppo.toxic_share`, ...; each stage's
`seconds` and, on a GPU, `peak_gpu_bytes`), and a
self-contained `report.html` that opens with the headline table `summary` prints. `metrics.json` is
rewritten after every stage, so a crash keeps what ran.

The preset's world (`worlds.load`) supplies the prompts, what the simulated raters weigh and the
perplexity reference text: the tiny world's everyday questions (`world`), or RealToxicityPrompts'
challenging prompts continued as plain text (`rtp_world`, the smol preset), where "gold utility" is
the raters' utility and rude is the SVM's P(toxic) >= 0.5.

"Rude" is `World.is_rude` everywhere (the PPO stages' before/after and the evaluation's rude share).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from labkit import artifacts, config, generate, hacking, models, ppo, presets, rewards, worlds
from labkit.report import Report

__all__ = ["RunState", "STAGES", "headline", "run", "summary"]


@dataclass
class RunState:
    """What the stages share: the preset, the output folder, and each stage's products."""

    preset: presets.Preset
    out: Path
    report: Report
    world: Any = None
    model: Any = None
    tokenizer: Any = None
    eval_prompts: list = field(default_factory=list)
    products: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def need(self, product: str, stage: str) -> Any:
        """An earlier stage's product, or a clear error naming the stage that makes it."""
        if product not in self.products:
            raise ValueError(
                f"this stage needs {product!r}, which stage {stage!r} makes: run it first "
                f"(e.g. --stages {stage},...) or run every stage"
            )
        return self.products[product]


def _reward(state: RunState, spec: str):
    """The reward named by `spec`, with this run's preference reward model when the spec needs it."""
    preference = state.need("preference_reward", "reward") if "preference" in spec else None
    return rewards.make_reward(spec, world=state.world, preference=preference)


# -- the stages, in order ----------------------------------------------------------------------


def stage_load(state: RunState) -> dict:
    """Load the policy and pick the held-out prompts every later stage evaluates on."""
    start = time.time()
    state.world = worlds.load(state.preset)
    state.model, state.tokenizer = models.load_policy(state.preset)
    heldout = state.world.prompts("heldout")
    state.eval_prompts = heldout[: state.preset.num_eval_prompts]
    params = sum(p.numel() for p in state.model.parameters())
    state.report.add_text(
        "Model",
        f"preset {state.preset.name}: {type(state.model).__name__} with "
        f"{params:,} parameters on {state.preset.torch_device}; "
        f"{len(state.eval_prompts)} held-out prompts of the {state.world.name} world, put to it as "
        f"{'plain text to continue' if state.preset.prompting == 'plain' else 'chat turns'}.",
    )
    return {"parameters": params, "world": state.world.name, "seconds": time.time() - start}


def stage_generate(state: RunState) -> dict:
    """Sample N completions per held-out prompt from the base model and score them by the world."""
    w = state.world
    samples = generate.for_preset(state.model, state.tokenizer, state.eval_prompts, state.preset)
    generate.save_jsonl(samples, state.out / "samples.jsonl")
    state.products["base_samples"] = samples
    styles = [w.classify_style(s.prompt, s.text) for s in samples]
    stats = hacking.reply_stats(w, samples)
    shares = pd.Series([s or "unrecognised" for s in styles]).value_counts(normalize=True)
    state.report.add_table(
        "Base model samples",
        pd.DataFrame(
            [{"prompt": s.prompt, "reply": s.text, "style": st or "?"} for s, st in zip(samples[:12], styles[:12])]
        ),
        caption="First completions of the unaligned base model on held-out prompts.",
    )
    state.report.add_table(
        "Base model samples",
        shares.rename_axis("style").rename("share").reset_index(),
        caption="Style shares recognised by the world.",
    )
    return {
        "num_samples": len(samples),
        "rude_fraction": stats["rude_fraction"],
        "gold_utility_mean": stats["gold_utility"],
        "gold_helpfulness_mean": stats["gold_helpfulness"],
        "recognised_fraction": sum(s is not None for s in styles) / len(styles),
        "mean_tokens": sum(s.num_tokens for s in samples) / len(samples),
    }


def stage_labels(state: RunState) -> dict:
    """Completions on train prompts, ranked by every simulated persona (the shipped dataset's recipe)."""
    from labkit import agreement, shipped

    p = state.preset
    cfg = shipped.preset_config(p)
    folder = shipped.build_rankings(
        state.out / "labels", cfg, model=state.model, tokenizer=state.tokenizer, world=state.world, progress=False
    )
    records = shipped.load_rankings(folder)
    state.products["records"] = records
    metrics = agreement.summary(records)
    state.report.add_figure(
        "Human feedback",
        agreement.agreement_heatmap(agreement.agreement_matrix(records)),
        caption="Kendall tau-b between the simulated labelers.",
    )
    state.report.add_table(
        "Human feedback",
        agreement.disputed_items(records, k=5).drop(columns=["rankings"]),
        caption="The most disputed items (lowest mean tau between labelers).",
    )
    return metrics


def stage_pairs(state: RunState) -> dict:
    """All labelers' rankings -> pairs split by prompt; the consensus rankings -> the fair test pairs."""
    from labkit import pairs

    records = state.need("records", "labels")
    dataset, metrics = pairs.pairs_stage(records, seed=state.preset.seed)
    consensus = pairs.build_pairs(pairs.consensus_records(records), seed=state.preset.seed)
    pairs.save_pairs(dataset, state.out / "pairs", seed=state.preset.seed)
    state.products.update(pairs=dataset, consensus_test=consensus["test"])
    metrics["num_consensus_test"] = len(consensus["test"])
    return metrics


def stage_reward(state: RunState) -> dict:
    """Train the preference reward model; held-out accuracy against the labelers' consensus."""
    from labkit import reward_model

    dataset = state.need("pairs", "pairs")
    # progress: the training bar shows, so a minute of training is not a minute of silence
    cfg = state.preset.stage_config("reward", reward_model.RewardModelConfig, seed=state.preset.seed, progress=True)
    consensus_test = state.products.get("consensus_test")
    reward, metrics = reward_model.reward_stage(
        dataset, cfg, world=state.world, out_dir=state.out / "reward_model", eval_pairs=consensus_test
    )
    state.products["preference_reward"] = reward
    # 2. is it safe to optimise? Cheap edits of good replies that the reward model should not prefer.
    # The tiny world writes a helpful reply to any prompt; elsewhere the good replies are the chosen ones.
    writer = state.world if state.world.name == "assistant" else None
    hacks = reward_model.hackability(reward, *reward_model.good_replies(dataset["train"], writer), world=state.world)
    metrics["hack_probes_exploitable"] = int(hacks["exploitable"].sum())
    state.report.add_table(
        "Reward model",
        hacks.drop(columns="example").reset_index().round(3),
        caption="Edits of good replies: how often the edit scores higher than the reply "
        "(win_rate), and what it does to the gold utility. An exploitable edit is what "
        "PPO with too small a KL penalty finds.",
    )
    if consensus_test is not None and len(consensus_test):
        held = reward_model.evaluate_reward_model(
            reward.model, reward.tokenizer, consensus_test, max_length=cfg.max_length
        )
        state.report.add_figure(
            "Reward model",
            reward_model.calibration_plot(held["calibration"]),
            caption="Predicted P(chosen beats rejected) against the observed rate, on the consensus test pairs.",
        )
        state.report.add_figure(
            "Reward model",
            reward_model.score_histogram(held["chosen_scores"], held["rejected_scores"]),
            caption="Reward of the chosen and the rejected reply, consensus test pairs.",
        )
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def _ppo_run(state: RunState, spec: str, stage: str) -> dict:
    """PPO from a fresh copy of the base model against reward `spec`; before/after on held-out prompts."""
    from labkit import ppo_plots

    p = state.preset
    cfg = ppo.preset_config(p, seed=p.seed_for(stage), output_dir=str(state.out / stage), log_every=10)
    reward = _reward(state, spec)
    moved = ppo.set_aside_if_stale(cfg.output_dir, rewards.fingerprint(reward), cfg)
    if moved is not None:
        print(f"  {cfg.output_dir} was trained {moved[1]}: kept as {moved[0]}, training afresh", flush=True)
    policy, _ = models.load_policy(p)  # a fresh copy: the base model stays untouched for the other methods
    prompts = [q.text for q in state.world.prompts("train")]
    print(f"  PPO against {spec!r}: {cfg.total_steps} steps of {cfg.batch_size} replies", flush=True)
    result, metrics = ppo.ppo_stage(policy, state.tokenizer, prompts, reward, cfg)
    state.products[f"{stage}_policy"] = result.policy
    before = hacking.reply_stats(state.world, state.need("base_samples", "generate"))
    after_samples = generate.for_preset(result.policy, state.tokenizer, state.eval_prompts, p, stage="after")
    after = hacking.reply_stats(state.world, after_samples)
    for key in ("rude_fraction", "gold_utility", "gold_helpfulness"):
        metrics[f"ppo.{key}_before"], metrics[f"ppo.{key}_after"] = before[key], after[key]
    title = "PPO" if stage == "ppo" else f"PPO variant ({spec})"
    state.report.add_figure(
        title,
        ppo_plots.plot_metrics(result.metrics),
        caption=f"PPO against {getattr(reward, 'name', spec)} ({spec!r}), one point per step.",
    )
    state.report.add_table(
        title, ppo_plots.sample_table(result.samples[:6]), caption="Last step's samples: query | response | score | kl."
    )
    return {"reward": spec, **{k.removeprefix("ppo."): v for k, v in metrics.items()}}


def stage_ppo(state: RunState) -> dict:
    """PPO against the preset's reward (the preference reward model by default), under a KL penalty."""
    return _ppo_run(state, state.preset.ppo_reward, "ppo")


def stage_ppo_toxicity(state: RunState) -> dict:
    """The named variant: the same PPO against a toxicity classifier (`Preset.variant_reward`)."""
    return _ppo_run(state, state.preset.variant_reward, "ppo_toxicity")


def stage_bestofn(state: RunState) -> dict:
    """Best-of-N from the base model by the same reward PPO optimised: k winners per held-out prompt."""
    from labkit import bestofn

    p = state.preset
    cfg = p.stage_config(
        "bestofn",
        bestofn.BestOfNConfig,
        seed=p.seed_for("bestofn"),
        max_new_tokens=p.max_new_tokens,
        prompting=p.prompting,
    )
    reward = _reward(state, p.ppo_reward)
    products, metrics = bestofn.bestofn_stage(
        state.model, state.tokenizer, state.eval_prompts, reward, cfg, k=p.completions_per_prompt, world=state.world
    )
    winners = products["samples"]
    # KL to the base: the analytic log n - (n-1)/n is exact only for a reward without ties; a pass/fail
    # reward ties a lot, and the tie-aware estimate is the KL best-of-n really moved.
    state.products.update(bestofn_samples=winners, bestofn_n=cfg.n, bestofn_kl=metrics["kl_discrete"])
    state.report.add_figure(
        "Best-of-N",
        bestofn.plot_reward_vs_n(products["table"]),
        caption="Reward (and gold utility) of best-of-n against n, from one pool per prompt.",
    )
    return {"reward": p.ppo_reward, **metrics}


def stage_dpo(state: RunState) -> dict:
    """DPO with LoRA on the same pairs, from a fresh copy of the base model."""
    from labkit import dpo

    p = state.preset
    cfg = p.stage_config(
        "dpo", dpo.LabDPOConfig, seed=p.seed, output_dir=str(state.out / "dpo"), progress=True, prompting=p.prompting
    )
    policy, _ = models.load_policy(p)
    model, metrics = dpo.dpo_stage(policy, state.tokenizer, state.need("pairs", "pairs"), cfg)
    state.products["dpo_policy"] = model
    return metrics


def stage_evaluate(state: RunState) -> dict:
    """Every method on the same held-out prompts: toxicity by two judges, KL, perplexity, gold, win rates."""
    from labkit import eval_plots, evaluate

    p = state.preset
    cfg = evaluate.preset_config(p)
    ref_texts = evaluate.heldout_reference_texts(state.world, n=cfg.reference_texts, seed=p.seed)
    common = dict(ref_texts=ref_texts, world=state.world)
    preference = state.products.get("preference_reward")
    results = {
        "base": evaluate.evaluate_model(state.model, state.tokenizer, state.eval_prompts, cfg, reference=None, **common)
    }
    if "bestofn_samples" in state.products:
        winners = evaluate.evaluate_model(
            state.model,
            state.tokenizer,
            state.eval_prompts,
            cfg,
            reference=None,
            samples=state.products["bestofn_samples"],
            **common,
        )
        results[f"best-of-{state.products['bestofn_n']}"] = evaluate.with_kl(winners, state.products["bestofn_kl"])
    for method in ("ppo", "ppo_toxicity", "dpo"):
        if f"{method}_policy" in state.products:
            print(f"  evaluating {method} ...", flush=True)
            results[method] = evaluate.evaluate_model(
                state.products[f"{method}_policy"],
                state.tokenizer,
                state.eval_prompts,
                cfg,
                reference="disable_adapter",
                **common,
            )
    results["base"] = evaluate.with_kl(results["base"], 0.0)
    metrics = {}
    for method, result in results.items():
        metrics.update(evaluate.to_flat_metrics(result, method.replace("-", "")))
        if method != "base":
            wins = evaluate.compare(results["base"], result, preference, n_boot=cfg.n_bootstrap, seed=cfg.seed)
            metrics.update(evaluate.to_flat_metrics(wins, method.replace("-", "")))
    metrics["judge"] = results["base"].judges[0]
    state.products["eval_results"] = results
    heading = "Evaluation on held-out prompts"
    state.report.add_table(
        heading,
        evaluate.method_table(results),
        caption=f"Each method at its KL; 95% bootstrap intervals over {len(state.eval_prompts)} "
        f"prompts x {cfg.k} samples. Toxicity by the independent judge "
        f"'{results['base'].judges[0]}' and by the reward classifier.",
    )
    state.report.add_figure(
        heading, eval_plots.methods_vs_kl(results), caption="Toxic share and gold utility against KL to the base model."
    )
    for metric in ("toxic_share", "gold_utility"):
        state.report.add_figure(heading, eval_plots.method_bars(results, metric))
    if "ppo" in results:
        state.report.add_figure(
            heading,
            eval_plots.toxicity_histograms(results["base"], results["ppo"]),
            caption="P(toxic) per sample, base vs PPO, by each judge.",
        )
        state.report.add_figure(heading, eval_plots.paired_scatter(results["base"], results["ppo"]))
        state.report.add_table(
            heading,
            eval_plots.example_table(results["base"], results["ppo"], n=6),
            caption="The same held-out prompts before (base) and after (PPO).",
        )
    return metrics


STAGES: dict[str, Callable[[RunState], dict]] = {
    "load": stage_load,
    "generate": stage_generate,
    "labels": stage_labels,
    "pairs": stage_pairs,
    "reward": stage_reward,
    "ppo": stage_ppo,
    "ppo_toxicity": stage_ppo_toxicity,
    "bestofn": stage_bestofn,
    "dpo": stage_dpo,
    "evaluate": stage_evaluate,
}


def run(
    preset: str | presets.Preset | None = "tiny",
    out: str | Path | None = None,
    stages: tuple[str, ...] | None = None,
    seed: int | None = None,
) -> RunState:
    """Run `stages` (default: all, in order) for `preset`, writing everything under `out`."""
    if not isinstance(preset, presets.Preset):
        preset = presets.load(preset)
    if seed is not None:
        preset.seed = seed
    if stages is not None and not [s for s in stages if s.strip()]:
        raise ValueError(
            f"no stage named (stages={stages!r}): leave --stages out to run every stage, or name some of {list(STAGES)}"
        )
    if stages is None:
        stages = tuple(s for s in STAGES if s != "ppo_toxicity" or preset.run_variant)
    stages = tuple(s.strip() for s in stages if s.strip())
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}: choose from {list(STAGES)}")
    if "load" not in stages:
        stages = ("load", *stages)
    stages = tuple(s for s in STAGES if s in stages)  # always in pipeline order
    out = Path(out) if out else Path("runs") / preset.name.replace(":", "_").replace("/", "_")
    out.mkdir(parents=True, exist_ok=True)
    config.seed_everything(preset.seed)
    state = RunState(preset=preset, out=out, report=Report(f"labkit run: preset {preset.name}"))
    artifacts.write_json(
        out / "config.json",
        {"preset": preset.to_dict(), "stages": list(stages), "versions": artifacts.library_versions()},
    )
    start = time.time()
    cuda = preset.torch_device.startswith("cuda")
    for name in stages:
        t0 = time.time()
        print(f"labkit run: {name} ...", flush=True)
        if cuda:
            _reset_gpu_peak()
        stage_metrics = STAGES[name](state)
        stage_metrics.setdefault("seconds", time.time() - t0)
        if cuda:  # what the stage needed at most: the figure the README's GPU settings are checked against
            stage_metrics["peak_gpu_bytes"] = _gpu_peak()
        state.metrics.update({f"{name}.{k}": v for k, v in stage_metrics.items()})
        artifacts.write_json(out / "metrics.json", state.metrics)  # after every stage: a crash keeps what ran
        state.report.write(out / "report.html")
    state.metrics["run.wall_seconds"] = time.time() - start
    artifacts.write_json(out / "metrics.json", state.metrics)
    table = headline(state.metrics)
    if len(table):
        state.report.add_headline(table, caption=_HEADLINE_CAPTION)
    state.report.add_metrics("All metrics", state.metrics)
    state.report.write(out / "report.html")
    return state


def _reset_gpu_peak() -> None:
    import torch

    torch.cuda.reset_peak_memory_stats()


def _gpu_peak() -> int:
    import torch

    return int(torch.cuda.max_memory_allocated())


_HEADLINE_CAPTION = (
    "Held-out prompts, every method at its KL to the base model; 95% bootstrap intervals over "
    "prompts. Toxic share by the independent judge, which never saw the rankings nor the rewards."
)


def headline(metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per evaluated method: mean P(toxic) and toxic share (independent judge), gold utility (in
    the RealToxicityPrompts world: the simulated raters' utility, `rtp_world`) and KL, each with its 95%
    interval, and the reward the method optimised. Empty if the evaluate stage did not run."""
    methods = sorted(
        {k.split(".")[1] for k in metrics if k.startswith("evaluate.") and k.endswith(".toxic_share")},
        key=lambda m: (_METHOD_ORDER.get(m.rstrip("0123456789"), 9), m),
    )
    utility = "gold utility" if metrics.get("load.world", "assistant") == "assistant" else "raters' utility"
    columns = (
        ("toxicity_mean", "mean P(toxic)"),
        ("toxic_share", "toxic share"),
        ("gold_utility", utility),
        ("kl", "KL (nats)"),
    )
    rows = []
    for method in methods:
        row = {"method": method}
        for key, label in columns:
            full = f"evaluate.{method}.{key}"
            if full in metrics:
                value, low, high = (metrics.get(full + s, float("nan")) for s in ("", ".ci_low", ".ci_high"))
                row[label] = f"{value:.3f} [{low:.3f}, {high:.3f}]"
        row["optimised"] = {
            "ppo": metrics.get("ppo.reward"),
            "ppo_toxicity": metrics.get("ppo_toxicity.reward"),
            "dpo": "the pairs",
        }.get(method, metrics.get("bestofn.reward") if "best" in method else "-")
        rows.append(row)
    return pd.DataFrame(rows)


_METHOD_ORDER = {"base": 0, "bestof": 1, "ppo": 2, "ppo_toxicity": 3, "dpo": 4}


def summary(state: RunState) -> str:
    """The headline for the terminal (at most ~15 lines); the full dump stays in metrics.json."""
    m = state.metrics
    lines = [f"labkit run: preset {state.preset.name}, {m.get('run.wall_seconds', 0):.0f} s"]
    table = headline(m)
    if len(table):
        lines.append(table.to_string(index=False))
    else:
        shown = [k for k in ("generate.rude_fraction", "reward.heldout_accuracy", "ppo.kl_mean") if k in m]
        lines += [f"  {k}: {m[k]:.4g}" for k in shown]
    judge = m.get("evaluate.judge")
    if judge:
        lines.append(f"toxic share by the independent judge {judge!r}; intervals are 95% bootstrap over prompts")
    lines.append(f"report: {state.out / 'report.html'} | every metric: {state.out / 'metrics.json'}")
    return "\n".join(lines)
