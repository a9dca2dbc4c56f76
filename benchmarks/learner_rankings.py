"""Benchmark: how many of a learner's rankings it takes to change the reward model, measurably.

A simulated learner with a taste of their own (the `brevity` persona with a stronger dislike of
length: every extra word costs) ranks n items of the shipped samples on training-split prompts. The
reward model of chapter 03 is trained on the shipped rankings plus those rankings, each learner pair
repeated `learner.LEARNER_WEIGHT` times (`learner.training_pairs`), for several n, and measured on:

    learner accuracy    pairwise accuracy on the learner's OWN rankings of held-out items (test-split
                        prompts, never trained on): does the model now predict what the learner prefers?
    consensus accuracy  the usual yardstick, the shipped labelers' consensus test pairs: did it get worse?
    short - long        reward of a short helpful reply minus the same reply said three times, averaged
                        over held-out prompts (normalised units): the learner's taste made visible

n = 0 is the shipped-only model. One reward-model training per n (about a minute each on 2 cores).

    .venv/bin/python benchmarks/learner_rankings.py                     # n = 0 12 24 48
    .venv/bin/python benchmarks/learner_rankings.py --items 0 24 --weight 8
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from labkit import artifacts, labelers, labels, learner, pairs, presets, reward_model, shipped, world  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "learner_rankings.json"
LEARNER = dataclasses.replace(
    labelers.PERSONAS["brevity"], name="learner", weights={**labelers.PERSONAS["brevity"].weights, "length": -2.0}
)
"""The simulated learner: brevity's values, with twice its dislike of long replies."""


def shown_items(samples) -> list[labels.Item]:
    """The shipped samples as the items a learner is shown: one prompt and 4 replies (the shipped data
    hold 2 rounds of 4 per prompt; `labels.items_from_samples` alone would make items of 8)."""
    k = presets.load("tiny").completions_per_prompt
    keyed = [dataclasses.replace(s, prompt_id=f"{s.prompt_id}~{s.completion_id // k}") for s in samples]
    return labels.items_from_samples(keyed)


def learner_rankings(items: list[labels.Item], seed: int) -> list[labels.RankingRecord]:
    return labelers.simulate(items, [LEARNER], None, seed=seed)


def short_minus_long(reward, w, prompts) -> float:
    """Mean reward of a helpful reply minus the same reply said three times, over `prompts`."""
    replies = [w.reply(p, "helpful", random.Random(i)) for i, p in enumerate(prompts)]
    texts = [p.text for p in prompts]
    short = np.asarray(reward(texts, replies), dtype=float)
    long = np.asarray(reward(texts, [" ".join([r] * 3) for r in replies]), dtype=float)
    return float((short - long).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[0, 12, 24, 48])
    parser.add_argument("--weight", type=int, default=learner.LEARNER_WEIGHT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    preset = presets.load("tiny", seed=args.seed)
    w = world.load()
    records = shipped.load_rankings()
    split = pairs.build_pairs(records, seed=args.seed)
    consensus_test = pairs.build_pairs(pairs.consensus_records(records), seed=args.seed)["test"]
    train_prompts, test_prompts = set(split["train"]["prompt"]), set(split["test"]["prompt"])
    items = shown_items(shipped.load_samples())
    random.Random(args.seed).shuffle(items)
    learner_train = [it for it in items if it.prompt in train_prompts]
    learner_test = pairs.build_pairs(
        learner_rankings([it for it in items if it.prompt in test_prompts], args.seed), test_fraction=0.0
    )["train"]
    probe_prompts = [p for p in w.prompts("train") if p.text in test_prompts][:48]
    cfg = preset.stage_config("reward", reward_model.RewardModelConfig, seed=args.seed)
    rows = []
    for n in args.items:
        mine = learner_rankings(learner_train[:n], args.seed) if n else []
        dataset, info = learner.training_pairs(records, mine, weight=args.weight, seed=args.seed)
        start = time.perf_counter()
        model, tokenizer, _ = reward_model.train_reward_model(dataset, cfg)
        seconds = time.perf_counter() - start
        reward = reward_model.PreferenceReward.fit(model, tokenizer, dataset["train"], cfg)
        row = {
            "items": n,
            "learner_pairs": info["learner_pairs"],
            "weight": args.weight,
            "train_seconds": seconds,
            "learner_accuracy": reward_model.evaluate_reward_model(
                model, tokenizer, learner_test, max_length=cfg.max_length
            )["accuracy"],
            "consensus_accuracy": reward_model.evaluate_reward_model(
                model, tokenizer, consensus_test, max_length=cfg.max_length
            )["accuracy"],
            "short_minus_long": short_minus_long(reward, w, probe_prompts),
        }
        rows.append(row)
        print(
            f"| {n} | {row['learner_pairs']} | {row['learner_accuracy']:.3f} | {row['consensus_accuracy']:.3f} "
            f"| {row['short_minus_long']:+.3f} | {seconds:.0f} |",
            flush=True,
        )
    print("| learner items | learner pairs (x weight) | learner accuracy | consensus accuracy | short - long | s |")
    report = {
        **artifacts.provenance("benchmarks/learner_rankings.py", argv),
        "learner": dataclasses.asdict(LEARNER),
        "learner_test_pairs": len(learner_test),
        "consensus_test_pairs": len(consensus_test),
        "probe_prompts": len(probe_prompts),
        "rows": rows,
    }
    artifacts.write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
