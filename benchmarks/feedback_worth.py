"""Benchmark: what an hour of users' thumbs is worth against an hour of rankings, for the reward model.

Chapter 08 turns users' thumbs into preference pairs (`feedback.feedback_pairs`). This measures what
those pairs buy, with the simulated labelers standing in for people:

    rankings   a labeler ranks the 4 replies of an item (`labelers.simulate`), one item per ranking,
               the five personas in turn; every ranking gives up to 6 pairs (`pairs.build_pairs`)
    thumbs     a user (the same five personas) reads one reply to a train prompt, drawn at random
               from the shipped samples, and presses up when its noisy score beats the persona's
               median score over all those replies, down otherwise (a persona's flip rate answers at
               random); a prompt gives pairs only when it has an up reply and a down reply

For each labelling budget (hours), the same time buys `hours x 3600 / seconds_per_ranking` rankings or
`hours x 3600 / seconds_per_thumb` thumbs. Both times are ASSUMPTIONS (`cost.CostInputs` and
`feedback.pairs_per_hour` defaults: 60 s per ranking of 4 replies, 5 s per thumb); everything else is
measured: the pairs each budget yields and the accuracy of a reward model trained on those pairs alone
(chapter 03's recipe, the preset's reward config) on the consensus test pairs of the shipped rankings
(held-out prompts, never trained on), with a Wilson 95% interval over the test pairs.

    .venv/bin/python benchmarks/feedback_worth.py                        # budgets 0.25 0.5 1 2 h
    .venv/bin/python benchmarks/feedback_worth.py --hours 1 --seconds-per-thumb 10
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from labkit import (  # noqa: E402
    artifacts,
    cost,
    feedback,
    labelers,
    labels,
    monitoring,
    pairs,
    presets,
    reward_model,
    shipped,
    world,
)

RESULTS = Path(__file__).resolve().parent / "results" / "feedback_worth.json"
SECONDS_PER_THUMB = 5.0
"""ASSUMED: the click only (`feedback.pairs_per_hour`'s default); the user was reading the reply anyway."""


def shown_items(samples, k: int) -> list[labels.Item]:
    """The shipped samples as items of `k` replies (they hold 2 rounds of k per prompt)."""
    keyed = [dataclasses.replace(s, prompt_id=f"{s.prompt_id}~{s.completion_id // k}") for s in samples]
    return labels.items_from_samples(keyed)


def persona_score(persona: labelers.Persona, terms: dict) -> float:
    """The persona's noiseless score of one reply: its weights times the reply's terms."""
    return sum(w * terms.get(k, 0.0) for k, w in persona.weights.items())


def thumbs(replies: list[tuple[str, str]], n: int, seed: int, scorer) -> list[feedback.Feedback]:
    """`n` thumbs on replies drawn at random, the personas in turn as users (see the module docstring)."""
    personas = list(labelers.PERSONAS.values())
    terms = {r: labelers.terms_with_length(scorer(*r), r[1]) for r in set(replies)}
    median = {p.name: statistics.median(persona_score(p, t) for t in terms.values()) for p in personas}
    rng = random.Random(seed)
    out = []
    for i in range(n):
        persona = personas[i % len(personas)]
        prompt, reply = rng.choice(replies)
        logistic = math.log(u := rng.random() or 1e-12) - math.log1p(-u)  # difference of two Gumbels
        up = persona_score(persona, terms[(prompt, reply)]) + persona.noise * logistic > median[persona.name]
        if persona.flip_rate and rng.random() < persona.flip_rate:
            up = rng.random() < 0.5
        user = feedback.pseudonymise(persona.name, "benchmark")
        out.append(feedback.Feedback(prompt=prompt, reply=reply, thumb="up" if up else "down", user=user))
    return out


def rankings(items: list[labels.Item], n: int, seed: int) -> list[labels.RankingRecord]:
    """`n` rankings: the first n items, one labeler each, the personas in turn."""
    personas = list(labelers.PERSONAS.values())
    out = []
    for i, item in enumerate(items[:n]):
        out += labelers.simulate([item], [personas[i % len(personas)]], None, seed=seed)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--seconds-per-ranking", type=float, default=cost.CostInputs.seconds_per_ranking)
    parser.add_argument("--seconds-per-thumb", type=float, default=SECONDS_PER_THUMB)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    preset = presets.load("tiny", seed=args.seed)
    w = world.load()
    scorer = labelers.world_scorer(w)

    # 1. the yardstick: consensus test pairs of the shipped rankings, on prompts no budget draws from
    records = shipped.load_rankings()
    consensus_test = pairs.build_pairs(pairs.consensus_records(records), seed=args.seed)["test"]
    test_prompts = set(consensus_test["prompt"])
    samples = [s for s in shipped.load_samples() if s.prompt not in test_prompts]
    items = shown_items(samples, preset.completions_per_prompt)
    random.Random(args.seed).shuffle(items)
    replies = [(s.prompt, s.text) for s in samples]
    cfg = preset.stage_config("reward", reward_model.RewardModelConfig, seed=args.seed)

    # 2. per budget and kind: the pairs the time buys, a reward model on them alone, its test accuracy
    rows = []
    for hours in args.hours:
        n_rankings = int(hours * 3600 / args.seconds_per_ranking)
        n_thumbs = int(hours * 3600 / args.seconds_per_thumb)
        if n_rankings > len(items):
            raise SystemExit(f"{hours} h buys {n_rankings} rankings but only {len(items)} items exist: lower --hours")
        made = {
            "rankings": (n_rankings, pairs.build_pairs(rankings(items, n_rankings, args.seed), test_fraction=0.0)),
            "thumbs": (n_thumbs, None),
        }
        fb = feedback.feedback_pairs(thumbs(replies, n_thumbs, args.seed, scorer))
        if fb:
            made["thumbs"] = (n_thumbs, feedback.to_dataset(fb, seed=args.seed, test_fraction=0.0))
        for kind, (labels_made, dataset) in made.items():
            row = {
                "hours": hours,
                "kind": kind,
                "labels": labels_made,
                "pairs": len(dataset["train"]) if dataset else 0,
            }
            row["pairs_per_hour"] = row["pairs"] / hours
            if dataset is not None:
                start = time.perf_counter()
                model, tokenizer, _ = reward_model.train_reward_model(dataset, cfg)
                row["train_seconds"] = time.perf_counter() - start
                acc = reward_model.evaluate_reward_model(model, tokenizer, consensus_test, max_length=cfg.max_length)
                correct = round(acc["accuracy"] * len(consensus_test))
                low, high = monitoring.wilson_interval(correct, len(consensus_test))
                row["accuracy"] = {"value": acc["accuracy"], "ci_low": low, "ci_high": high}
            rows.append(row)
            shown = (
                f"{row['accuracy']['value']:.3f} [{row['accuracy']['ci_low']:.3f}, {row['accuracy']['ci_high']:.3f}]"
            )
            print(
                f"| {hours} | {kind} | {labels_made} | {row['pairs']} | {shown if 'accuracy' in row else 'no pair'} |",
                flush=True,
            )
    print("| hours | kind | labels | pairs | consensus accuracy [95%] |")
    report = {
        **artifacts.provenance("benchmarks/feedback_worth.py", argv),
        "threads": torch.get_num_threads(),
        "assumed": {"seconds_per_ranking": args.seconds_per_ranking, "seconds_per_thumb": args.seconds_per_thumb},
        "replies_per_ranking": preset.completions_per_prompt,
        "train_items": len(items),
        "consensus_test_pairs": len(consensus_test),
        "rows": rows,
    }
    artifacts.write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
