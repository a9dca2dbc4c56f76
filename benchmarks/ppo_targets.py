"""Benchmark: labkit PPO on the tiny preset against the issue's targets, over several seeds.

Each seed runs exactly what `labkit run`'s PPO stage runs (the tiny preset's PPOConfig and its
reward, a fresh base model, the world's train prompts) and measures the policy before and after
on the preset's held-out prompts (N samples each, temperature 1):

    rude share        the world's style recogniser (or its insult lexicon): target down >= 80% relative
    gold helpfulness  the world's helpfulness term (specific tips of the asked topic): not lower
    gold utility      the world's whole gold utility
    KL                mean per-reply KL to the reference over the last 5 steps: target <= 6 nats
    wall seconds      the PPO training loop on this CPU: target <= 300

    .venv/bin/python benchmarks/ppo_targets.py                 # seeds 0 1 2, writes results/ppo_targets.json
    .venv/bin/python benchmarks/ppo_targets.py --seeds 0 --set lam=0.95   # try a config change
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]

import torch  # noqa: E402

import numpy as np  # noqa: E402

from labkit import artifacts, evaluate, hacking, models, ppo, presets, run  # noqa: E402
from labkit import world as world_mod  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "ppo_targets.json"


def one_seed(preset: presets.Preset, seed: int, overrides: dict) -> dict:
    """Train PPO from the base model with `seed`; world statistics before and after on held-out prompts."""
    world = world_mod.load()
    state = run.RunState(preset=preset, out=Path("/dev/null"), report=None, world=world)
    state.eval_prompts = world.prompts("heldout")[:preset.num_eval_prompts]
    base, state.tokenizer = models.load_policy(preset)
    base_samples = run._sample_eval(state, base)
    before = hacking.reply_stats(world, base_samples)
    cfg = preset.stage_config("ppo", ppo.PPOConfig, seed=seed, log_every=0, sample_table_every=0,
                              max_new_tokens=preset.max_new_tokens, **overrides)
    policy, _ = models.load_policy(preset)
    start = time.perf_counter()
    result = ppo.train(policy, state.tokenizer, [p.text for p in world.prompts("train")],
                       run.make_reward(preset.ppo_reward, state), cfg)
    wall = time.perf_counter() - start
    after_samples = run._sample_eval(state, result.policy, seed_offset=1)
    after = hacking.reply_stats(world, after_samples)
    kl = statistics.fmean(m["objective/kl"] for m in result.metrics[-5:])
    help_change = paired_change(world, base_samples, after_samples, "helpfulness", seed)
    return {"seed": seed, "wall_seconds": wall, "kl_mean": kl, "steps": len(result.metrics),
            "gold_helpfulness_change": help_change.value, "gold_helpfulness_change_ci": [help_change.ci_low,
                                                                                        help_change.ci_high],
            **{f"{k}_before": v for k, v in before.items()}, **{f"{k}_after": v for k, v in after.items()},
            "rude_drop_relative": 1 - after["rude_fraction"] / before["rude_fraction"]}


def paired_change(world, before, after, term: str, seed: int) -> evaluate.Metric:
    """after - before of a gold term's per-prompt mean, with a 95% bootstrap interval over prompts."""
    def per_prompt(samples):
        by = {}
        for s in samples:
            by.setdefault(s.prompt_id, []).append(getattr(world.gold(s.prompt, s.text), term))
        return by

    b, a = per_prompt(before), per_prompt(after)
    ids = sorted(b)
    diff = np.array([np.mean(a[i]) - np.mean(b[i]) for i in ids])
    return evaluate.bootstrap(lambda idx: float(diff[idx].mean()), len(ids), seed=seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="override PPOConfig fields (JSON values), e.g. lam=0.95 kl_coef=0.2")
    parser.add_argument("--reward", default=None, help="override the preset's ppo_reward, e.g. toxicity:binary")
    parser.add_argument("--eval-prompts", type=int, default=144,
                        help="held-out prompts to measure on (all 144 by default, as the main job)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    preset = presets.load("tiny", num_eval_prompts=args.eval_prompts, **({"ppo_reward": args.reward} if args.reward else {}))
    rows = [one_seed(preset, seed, overrides) for seed in args.seeds]
    keys = ["rude_fraction", "gold_helpfulness", "gold_utility"]
    print("| seed | rude before -> after | drop | helpfulness before -> after | change [95% CI over prompts] "
          "| utility before -> after | KL | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r[k + '_before']:.3f} -> {r[k + '_after']:.3f}" for k in keys]
        low, high = r["gold_helpfulness_change_ci"]
        print(f"| {r['seed']} | {cells[0]} | {r['rude_drop_relative']:.0%} | {cells[1]} | "
              f"{r['gold_helpfulness_change']:+.3f} [{low:+.3f}, {high:+.3f}] | {cells[2]} | "
              f"{r['kl_mean']:.2f} | {r['wall_seconds']:.0f} |")
    mean = {k: statistics.fmean(r[k] for r in rows) for k in rows[0]
            if k not in ("seed", "gold_helpfulness_change_ci")}
    print(f"| mean | {mean['rude_fraction_before']:.3f} -> {mean['rude_fraction_after']:.3f} | "
          f"{mean['rude_drop_relative']:.0%} | {mean['gold_helpfulness_before']:.3f} -> "
          f"{mean['gold_helpfulness_after']:.3f} | {mean['gold_helpfulness_change']:+.3f} | "
          f"{mean['gold_utility_before']:.3f} -> {mean['gold_utility_after']:.3f} "
          f"| {mean['kl_mean']:.2f} | {mean['wall_seconds']:.0f} |")
    targets = {"rude_drop_at_least_80pct": all(r["rude_drop_relative"] >= 0.8 for r in rows),
               "helpfulness_not_lower": all(r["gold_helpfulness_after"] >= r["gold_helpfulness_before"] for r in rows),
               "kl_at_most_6": all(r["kl_mean"] <= 6 for r in rows),
               "wall_at_most_300s": all(r["wall_seconds"] <= 300 for r in rows)}
    print("targets met on every seed:", targets)
    cfg = presets.load("tiny").stage_config("ppo", ppo.PPOConfig, **overrides)
    report = {"command": "python benchmarks/ppo_targets.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.machine(),
              "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "versions": artifacts.library_versions(),
              "reward": preset.ppo_reward, "ppo_config": cfg, "eval_prompts": preset.num_eval_prompts,
              "samples_per_prompt": preset.completions_per_prompt, "seeds": rows, "mean": mean, "targets": targets}
    artifacts.write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
