"""The main job: every pipeline stage in order, one folder of results.

`labkit run --preset tiny --out DIR` runs, in order (each stage is a function `(state) -> metrics`;
`state` carries what earlier stages produced):

    load       the policy and the held-out prompts every later stage evaluates on
    generate   N completions per held-out prompt from the base model       -> samples.jsonl
    labels     completions on train prompts, ranked by simulated personas  -> labels/
    pairs      N-choose-2 preference pairs, split by prompt; consensus test pairs -> pairs/
    reward     the preference reward model (TRL RewardTrainer)             -> reward_model/
    ppo        labkit's PPO against the preset's reward, with a KL penalty -> ppo/
    bestofn    best-of-N sampling from the base model by the same reward
    dpo        TRL's DPOTrainer with LoRA on the same pairs                -> dpo/
    evaluate   base, best-of-N, PPO and DPO on the held-out prompts, each at its KL

and writes to DIR: `config.json` (the preset and the stage list), `metrics.json` (one flat dict,
keys prefixed by stage: `generate.rude_fraction`, `evaluate.ppo.toxic_share`, ...), and a
self-contained `report.html`. `metrics.json` is rewritten after every stage, so a crash keeps what ran.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from labkit import artifacts, config, generate, hacking, models, presets, world as world_mod
from labkit.report import Report

__all__ = ["RunState", "STAGES", "make_reward", "run", "summary"]


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
            raise ValueError(f"this stage needs {product!r}, which stage {stage!r} makes: run it first "
                             f"(e.g. --stages {stage},...) or run every stage")
        return self.products[product]


def make_reward(spec: str, state: RunState | None = None):
    """The reward named by `spec`: "toxicity:logit", "toxicity:prob", "toxicity:binary", "gold", "preference"
    (the reward stage's model), or several joined by "+" (an equal-weight sum)."""
    from labkit import rewards

    parts = [p.strip() for p in spec.split("+")]
    built = []
    for part in parts:
        if part.startswith("toxicity"):
            kind = part.partition(":")[2] or "prob"
            built.append(rewards.ToxicityReward(kind))
        elif part == "gold":
            built.append(rewards.GoldReward(state.world if state else None))
        elif part == "preference":
            if state is None:
                raise ValueError("the 'preference' reward needs the reward stage's model: run the reward stage")
            built.append(state.need("preference_reward", "reward"))
        else:
            raise ValueError(f"unknown reward {part!r} in {spec!r}: use toxicity:binary, toxicity:prob, "
                             "toxicity:logit, gold, preference, or a sum such as 'toxicity:prob+preference'")
    return built[0] if len(built) == 1 else rewards.WeightedSum(built, [1.0] * len(built))


def _sample_eval(state: RunState, model, seed_offset: int = 0) -> list:
    p = state.preset
    return generate.generate(model, state.tokenizer, [q.text for q in state.eval_prompts],
                             n=p.completions_per_prompt, prompt_ids=[q.id for q in state.eval_prompts],
                             max_new_tokens=p.max_new_tokens, batch_size=p.batch_size, seed=p.seed + seed_offset,
                             progress=False)


# -- the stages, in order ----------------------------------------------------------------------

def stage_load(state: RunState) -> dict:
    """Load the policy and pick the held-out prompts every later stage evaluates on."""
    start = time.time()
    state.world = world_mod.load()
    state.model, state.tokenizer = models.load_policy(state.preset)
    heldout = state.world.prompts("heldout")
    state.eval_prompts = heldout[: state.preset.num_eval_prompts]
    params = sum(p.numel() for p in state.model.parameters())
    state.report.add_text("Model", f"preset {state.preset.name}: {type(state.model).__name__} with "
                          f"{params:,} parameters on {state.preset.torch_device}; "
                          f"{len(state.eval_prompts)} held-out prompts.")
    return {"parameters": params, "seconds": time.time() - start}


def stage_generate(state: RunState) -> dict:
    """Sample N completions per held-out prompt from the base model and score them by the world."""
    w = state.world
    samples = _sample_eval(state, state.model)
    generate.save_jsonl(samples, state.out / "samples.jsonl")
    state.products["base_samples"] = samples
    styles = [w.classify_style(s.prompt, s.text) for s in samples]
    stats = hacking.reply_stats(w, samples)
    shares = pd.Series([s or "unrecognised" for s in styles]).value_counts(normalize=True)
    state.report.add_table("Base model samples", pd.DataFrame(
        [{"prompt": s.prompt, "reply": s.text, "style": st or "?"} for s, st in zip(samples[:12], styles[:12])]),
        caption="First completions of the unaligned base model on held-out prompts.")
    state.report.add_table("Base model samples", shares.rename_axis("style").rename("share").reset_index(),
                           caption="Style shares recognised by the world.")
    return {"num_samples": len(samples), "rude_fraction": stats["rude_fraction"],
            "gold_utility_mean": stats["gold_utility"], "gold_helpfulness_mean": stats["gold_helpfulness"],
            "recognised_fraction": sum(s is not None for s in styles) / len(styles),
            "mean_tokens": sum(s.num_tokens for s in samples) / len(samples)}


def stage_labels(state: RunState) -> dict:
    """Completions on train prompts, ranked by every simulated persona (the shipped dataset's recipe)."""
    from labkit import agreement, shipped

    cfg = state.preset.stage_config("labels", shipped.RankingsConfig, seed=state.preset.seed)
    folder = shipped.build_rankings(state.out / "labels", cfg, model=state.model, tokenizer=state.tokenizer,
                                    world=state.world, progress=False)
    records = shipped.load_rankings(folder)
    state.products["records"] = records
    metrics = agreement.summary(records)
    state.report.add_figure("Human feedback", agreement.agreement_heatmap(agreement.agreement_matrix(records)),
                            caption="Kendall tau-b between the simulated labelers.")
    state.report.add_table("Human feedback", agreement.disputed_items(records, k=5).drop(columns=["rankings"]),
                           caption="The most disputed items (lowest mean tau between labelers).")
    return metrics


def stage_pairs(state: RunState) -> dict:
    """All labelers' rankings -> pairs split by prompt; the consensus rankings -> the fair test pairs."""
    from labkit import pairs

    records = state.need("records", "labels")
    dataset, metrics = pairs.pairs_stage(records, seed=state.preset.seed)
    consensus = pairs.build_pairs(pairs.consensus_records(records), seed=state.preset.seed)
    dataset.save_to_disk(str(state.out / "pairs"))
    state.products.update(pairs=dataset, consensus_test=consensus["test"])
    metrics["num_consensus_test"] = len(consensus["test"])
    return metrics


def stage_reward(state: RunState) -> dict:
    """Train the preference reward model; held-out accuracy against the labelers' consensus."""
    from labkit import reward_model

    dataset = state.need("pairs", "pairs")
    cfg = state.preset.stage_config("reward", reward_model.RewardModelConfig, seed=state.preset.seed)
    consensus_test = state.products.get("consensus_test")
    reward, metrics = reward_model.reward_stage(dataset, cfg, world=state.world, out_dir=state.out / "reward_model",
                                                eval_pairs=consensus_test)
    state.products["preference_reward"] = reward
    if consensus_test is not None and len(consensus_test):
        held = reward_model.evaluate_reward_model(reward.model, reward.tokenizer, consensus_test,
                                                  max_length=cfg.max_length)
        state.report.add_figure("Reward model", reward_model.calibration_plot(held["calibration"]),
                                caption="Predicted P(chosen beats rejected) against the observed rate, on the "
                                        "consensus test pairs.")
        state.report.add_figure("Reward model", reward_model.score_histogram(held["chosen_scores"],
                                                                             held["rejected_scores"]),
                                caption="Reward of the chosen and the rejected reply, consensus test pairs.")
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def stage_ppo(state: RunState) -> dict:
    """PPO from the base model against the preset's reward, under a KL penalty; before/after on held-out."""
    from labkit import ppo, ppo_plots

    p = state.preset
    cfg = p.stage_config("ppo", ppo.PPOConfig, seed=p.seed, output_dir=str(state.out / "ppo"), log_every=0,
                         sample_table_every=0, max_new_tokens=p.max_new_tokens)
    reward = make_reward(p.ppo_reward, state)
    policy, _ = models.load_policy(p)  # a fresh copy: the base model stays untouched for the other methods
    prompts = [q.text for q in state.world.prompts("train")]
    result, metrics = ppo.ppo_stage(policy, state.tokenizer, prompts, reward, cfg)
    state.products["ppo_policy"] = result.policy
    before = hacking.reply_stats(state.world, state.need("base_samples", "generate"))
    after = hacking.reply_stats(state.world, _sample_eval(state, result.policy))
    for key in ("rude_fraction", "gold_utility", "gold_helpfulness"):
        metrics[f"ppo.{key}_before"], metrics[f"ppo.{key}_after"] = before[key], after[key]
    state.report.add_figure("PPO", ppo_plots.plot_metrics(result.metrics),
                            caption=f"PPO against {getattr(reward, 'name', p.ppo_reward)}, one point per step.")
    state.report.add_table("PPO", ppo_plots.sample_table(result.samples[:6]),
                           caption="Last step's samples: query | response | score | kl.")
    return {k.removeprefix("ppo."): v for k, v in metrics.items()}


def stage_bestofn(state: RunState) -> dict:
    """Best-of-N from the base model by the same reward PPO optimised: k winners per held-out prompt."""
    from labkit import bestofn

    p = state.preset
    cfg = p.stage_config("bestofn", bestofn.BestOfNConfig, seed=p.seed + 7, max_new_tokens=p.max_new_tokens)
    reward = make_reward(p.ppo_reward, state)
    products, metrics = bestofn.bestofn_stage(state.model, state.tokenizer, state.eval_prompts, reward, cfg,
                                              k=p.completions_per_prompt, world=state.world)
    winners = products["samples"]
    # KL to the base: the analytic log n - (n-1)/n is exact only for a reward without ties; a pass/fail
    # reward ties a lot, and the tie-aware estimate is the KL best-of-n really moved.
    state.products.update(bestofn_samples=winners, bestofn_n=cfg.n, bestofn_kl=metrics["kl_discrete"])
    state.report.add_figure("Best-of-N", bestofn.plot_reward_vs_n(products["table"]),
                            caption="Reward (and gold utility) of best-of-n against n, from one pool per prompt.")
    return metrics


def stage_dpo(state: RunState) -> dict:
    """DPO with LoRA on the same pairs, from a fresh copy of the base model."""
    from labkit import dpo

    p = state.preset
    cfg = p.stage_config("dpo", dpo.LabDPOConfig, seed=p.seed, output_dir=str(state.out / "dpo"))
    policy, _ = models.load_policy(p)
    model, metrics = dpo.dpo_stage(policy, state.tokenizer, state.need("pairs", "pairs"), cfg)
    state.products["dpo_policy"] = model
    return metrics


def stage_evaluate(state: RunState) -> dict:
    """Every method on the same held-out prompts: toxicity by two judges, KL, perplexity, gold, win rates."""
    from labkit import eval_plots, evaluate

    p = state.preset
    cfg = p.stage_config("evaluate", evaluate.EvalConfig, seed=p.seed + 11, k=p.completions_per_prompt,
                         max_new_tokens=p.max_new_tokens, batch_size=p.batch_size)
    ref_texts = evaluate.heldout_reference_texts(state.world, n=cfg.reference_texts, seed=p.seed)
    common = dict(k=cfg.k, judges=cfg.judges, ref_texts=ref_texts, world=state.world, seed=cfg.seed,
                  max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, n_boot=cfg.n_bootstrap)
    preference = state.products.get("preference_reward")
    results = {"base": evaluate.evaluate_model(state.model, state.tokenizer, state.eval_prompts, reference=None,
                                               **common)}
    if "bestofn_samples" in state.products:
        winners = evaluate.evaluate_model(state.model, state.tokenizer, state.eval_prompts, reference=None,
                                          samples=state.products["bestofn_samples"], **common)
        results[f"best-of-{state.products['bestofn_n']}"] = evaluate.with_kl(winners, state.products["bestofn_kl"])
    for method in ("ppo", "dpo"):
        if f"{method}_policy" in state.products:
            results[method] = evaluate.evaluate_model(state.products[f"{method}_policy"], state.tokenizer,
                                                      state.eval_prompts, reference="disable_adapter", **common)
    results["base"] = evaluate.with_kl(results["base"], 0.0)
    metrics = {}
    for method, result in results.items():
        metrics.update(evaluate.to_flat_metrics(result, method.replace("-", "")))
        if method != "base":
            wins = evaluate.compare(results["base"], result, preference, n_boot=cfg.n_bootstrap, seed=cfg.seed)
            metrics.update(evaluate.to_flat_metrics(wins, method.replace("-", "")))
    state.products["eval_results"] = results
    heading = "Evaluation on held-out prompts"
    state.report.add_table(heading, evaluate.method_table(results),
                           caption=f"Each method at its KL; 95% bootstrap intervals over {len(state.eval_prompts)} "
                                   f"prompts x {cfg.k} samples. Toxicity by the independent judge "
                                   f"'{results['base'].judges[0]}' and by the reward classifier.")
    state.report.add_figure(heading, eval_plots.methods_vs_kl(results),
                            caption="Toxic share and gold utility against KL to the base model.")
    for metric in ("toxic_share", "gold_utility"):
        state.report.add_figure(heading, eval_plots.method_bars(results, metric))
    if "ppo" in results:
        state.report.add_figure(heading, eval_plots.toxicity_histograms(results["base"], results["ppo"]),
                                caption="P(toxic) per sample, base vs PPO, by each judge.")
        state.report.add_figure(heading, eval_plots.paired_scatter(results["base"], results["ppo"]))
        state.report.add_table(heading, eval_plots.example_table(results["base"], results["ppo"], n=6),
                               caption="The same held-out prompts before (base) and after (PPO).")
    return metrics


STAGES: dict[str, Callable[[RunState], dict]] = {
    "load": stage_load,
    "generate": stage_generate,
    "labels": stage_labels,
    "pairs": stage_pairs,
    "reward": stage_reward,
    "ppo": stage_ppo,
    "bestofn": stage_bestofn,
    "dpo": stage_dpo,
    "evaluate": stage_evaluate,
}


def run(preset: str | presets.Preset | None = "tiny", out: str | Path | None = None,
        stages: tuple[str, ...] | None = None, seed: int | None = None) -> RunState:
    """Run `stages` (default: all, in order) for `preset`, writing everything under `out`."""
    if not isinstance(preset, presets.Preset):
        preset = presets.load(preset)
    if seed is not None:
        preset.seed = seed
    stages = stages or tuple(STAGES)
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
    artifacts.write_json(out / "config.json", {"preset": preset.to_dict(), "stages": list(stages),
                                               "versions": artifacts.library_versions()})
    start = time.time()
    for name in stages:
        t0 = time.time()
        print(f"labkit run: {name} ...", flush=True)
        stage_metrics = STAGES[name](state)
        stage_metrics.setdefault("seconds", time.time() - t0)
        state.metrics.update({f"{name}.{k}": v for k, v in stage_metrics.items()})
        artifacts.write_json(out / "metrics.json", state.metrics)  # after every stage: a crash keeps what ran
        state.report.write(out / "report.html")
    state.metrics["run.wall_seconds"] = time.time() - start
    artifacts.write_json(out / "metrics.json", state.metrics)
    state.report.add_metrics("All metrics", state.metrics)
    state.report.write(out / "report.html")
    return state


def summary(state: RunState) -> str:
    """A few lines for the terminal: where the results are and the headline numbers."""
    m = state.metrics
    lines = [f"labkit run: preset {state.preset.name}, {m['run.wall_seconds']:.0f} s -> {state.out}/report.html"]
    for key in sorted(m):
        if key.endswith(("seconds", "parameters", ".n", ".ci_low", ".ci_high")):
            continue
        value = m[key]
        lines.append(f"  {key:48s} {value:.4g}" if isinstance(value, float) else f"  {key:48s} {value}")
    return "\n".join(lines)
