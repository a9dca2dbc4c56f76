"""Benchmark: labkit PPO on the tiny preset against issue 10's targets, for both rewards, over seeds.

Each run is what `labkit run`'s PPO stages run (`ppo.preset_config`, a fresh base model, the world's
train prompts), against
    preference       the preference reward model trained on the shipped rankings (the default), and
    toxicity:binary  the toxicity-classifier variant (`Preset.variant_reward`),
and measures the policy before and after on every held-out prompt x N samples (`generate.for_preset`):

    rude share        `World.is_rude`, the lab's one rule: target down >= 80% relative
    gold utility      paired per-prompt change, 95% bootstrap interval: target excludes zero, above it
    gold helpfulness  paired per-prompt change with its interval: target not lower
    KL                mean per-reply KL to the reference over the last 5 steps: target <= 3 nats
    wall seconds      the PPO training loop on this CPU: target <= 120

    .venv/bin/python benchmarks/ppo_targets.py                         # seeds 0 1 2, both rewards
    .venv/bin/python benchmarks/ppo_targets.py --seeds 0 --rewards preference --set kl_coef=0.05
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from labkit import (
    artifacts,
    config,
    evaluate,
    generate,
    hacking,
    models,
    pairs,
    ppo,
    presets,
    reward_model,
    rewards,
    shipped,
)  # noqa: E402
from labkit import world as world_mod  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "ppo_targets.json"
TARGETS = {"rude_drop": 0.8, "kl": 3.0, "wall_seconds": 120.0}


def paired_change(world, before, after, term: str, seed: int) -> evaluate.Metric:
    """after - before of a gold term's per-prompt mean, with a 95% bootstrap interval over prompts."""

    def per_prompt(samples):
        by: dict[str, list[float]] = {}
        for s in samples:
            by.setdefault(s.prompt_id, []).append(getattr(world.gold(s.prompt, s.text), term))
        return by

    b, a = per_prompt(before), per_prompt(after)
    ids = sorted(b)
    diff = np.array([np.mean(a[i]) - np.mean(b[i]) for i in ids])
    return evaluate.bootstrap(lambda idx: float(diff[idx].mean()), len(ids), seed=seed)


def one_run(preset, world, tokenizer, base_samples, reward, spec: str, seed: int, overrides: dict) -> dict:
    """PPO from the base model with `seed` against `reward`; world statistics before and after."""
    heldout = world.prompts("heldout")[: preset.num_eval_prompts]
    cfg = ppo.preset_config(preset, seed=seed, **overrides)
    policy, _ = models.load_policy(preset)
    start = time.perf_counter()
    result = ppo.train(policy, tokenizer, [p.text for p in world.prompts("train")], reward, cfg)
    wall = time.perf_counter() - start
    after_samples = generate.for_preset(result.policy, tokenizer, heldout, preset, stage="after")
    before, after = hacking.reply_stats(world, base_samples), hacking.reply_stats(world, after_samples)
    row = {
        "reward": spec,
        "seed": seed,
        "wall_seconds": wall,
        "steps": len(result.metrics),
        "kl_mean": statistics.fmean(m["objective/kl"] for m in result.metrics[-5:]),
        "time_generate": statistics.fmean(m["time/generate"] for m in result.metrics),
        "time_score": statistics.fmean(m["time/score"] for m in result.metrics),
        **{f"{k}_before": v for k, v in before.items()},
        **{f"{k}_after": v for k, v in after.items()},
        "rude_drop_relative": 1 - after["rude_fraction"] / before["rude_fraction"],
    }
    for term in ("utility", "helpfulness"):
        change = paired_change(world, base_samples, after_samples, term, seed)
        row[f"gold_{term}_change"], row[f"gold_{term}_change_ci"] = change.value, [change.ci_low, change.ci_high]
    return row


def meets(row: dict) -> dict[str, bool]:
    return {
        "rude_drop_at_least_80pct": row["rude_drop_relative"] >= TARGETS["rude_drop"],
        "utility_up_ci_excludes_zero": row["gold_utility_change_ci"][0] > 0,
        "helpfulness_not_lower": row["gold_helpfulness_change"] >= 0,
        "kl_at_most_3": row["kl_mean"] <= TARGETS["kl"],
        "wall_at_most_120s": row["wall_seconds"] <= TARGETS["wall_seconds"],
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| reward | seed | rude before -> after | drop | utility change [95% CI] | helpfulness change [95% CI] "
        "| KL | PPO wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        u, h = r["gold_utility_change_ci"], r["gold_helpfulness_change_ci"]
        lines.append(
            f"| {r['reward']} | {r['seed']} | {r['rude_fraction_before']:.3f} -> {r['rude_fraction_after']:.3f} "
            f"| {r['rude_drop_relative']:.0%} | {r['gold_utility_change']:+.3f} [{u[0]:+.3f}, {u[1]:+.3f}] "
            f"| {r['gold_helpfulness_change']:+.3f} [{h[0]:+.3f}, {h[1]:+.3f}] | {r['kl_mean']:.2f} "
            f"| {r['wall_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rewards", nargs="+", default=["preference", "toxicity:binary"])
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="override PPOConfig fields (JSON values), e.g. lam=0.95 kl_coef=0.2",
    )
    parser.add_argument(
        "--eval-prompts",
        type=int,
        default=144,
        help="held-out prompts to measure on (all 144 by default, as the main job)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = config.parse_settings(args.set)
    preset = presets.load("tiny", num_eval_prompts=args.eval_prompts)
    world = world_mod.load()
    base, tokenizer = models.load_policy(preset)
    base_samples = generate.for_preset(base, tokenizer, world.prompts("heldout")[: preset.num_eval_prompts], preset)
    preference = None
    if any("preference" in spec for spec in args.rewards):
        start = time.perf_counter()
        shipped_pairs = pairs.build_pairs(shipped.load_rankings(), seed=preset.seed)  # no learner's file: repeatable
        preference, where = reward_model.load_or_train(preset, pairs=shipped_pairs)
        print(f"preference reward model {where} in {time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    for spec in args.rewards:
        reward = rewards.make_reward(spec, world=world, preference=preference)
        for seed in args.seeds:
            rows.append(one_run(preset, world, tokenizer, base_samples, reward, spec, seed, overrides))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    targets = {
        spec: {name: all(meets(r)[name] for r in rows if r["reward"] == spec) for name in meets(rows[0])}
        for spec in args.rewards
    }
    print("targets met on every seed:", json.dumps(targets, indent=1))
    report = {
        **artifacts.provenance("benchmarks/ppo_targets.py", argv),
        "targets_wanted": TARGETS,
        "ppo_config": ppo.preset_config(preset, **overrides),
        "eval_prompts": preset.num_eval_prompts,
        "samples_per_prompt": preset.completions_per_prompt,
        "runs": rows,
        "targets": targets,
    }
    artifacts.write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
