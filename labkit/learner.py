"""The learner's own rankings: which items to rank, where they are kept, and what they change.

Stage: human feedback, between the widget (chapter 01) and the reward model (chapter 03).
Inputs: the base model's samples, the learner's ranking store (`my_rankings.jsonl`) and a class's
merged file (`class_merged.jsonl`), both in chapter 01's folder. Outputs: the items worth ranking,
the learner's records, and the reward model's training pairs with the learner's pairs folded in
at a stated weight.

Items worth ranking: an item whose four replies are all word salad teaches nothing, and neither
does ranking it. `pick_items` keeps items whose replies span styles: on the tiny preset by the
world's style labels (a helpful reply and at least `min_styles` styles among the N), elsewhere by
the spread of a reward across the replies. The choice is seeded and depends only on the preset,
so every learner of a class gets the same items and their rankings can be compared.

Weight: the shipped rankings hold thousands of pairs; a learner ranks perhaps twenty items (120
pairs). `training_pairs` repeats each learner pair `weight` times in the training split (never in
the test split, which stays the consensus of the shipped labelers), so the learner's taste is
visible in the reward model without drowning the data it learnt the basics from.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labkit import labels, pairs, presets

__all__ = [
    "CLASS_FILE",
    "ItemChoice",
    "LEARNER_FILE",
    "LEARNER_WEIGHT",
    "learner_records",
    "pick_items",
    "rankings_files",
    "train_prompts",
    "training_pairs",
]

LEARNER_FILE = "my_rankings.jsonl"
"""The learner's store in chapter 01's folder (`presets.workdir("01")`)."""
CLASS_FILE = "class_merged.jsonl"
"""A class's merged rankings (`labels.merge` of every learner's file), in the same folder."""
LEARNER_WEIGHT = 4
"""How many times each learner pair is repeated in the reward model's training split (see the module
docstring; benchmarks/learner_rankings.py measures what it changes)."""


@dataclass
class ItemChoice:
    """The items picked for ranking and why."""

    items: list[labels.Item]
    """The items, in the order to show them."""
    rule: str
    """How they were picked, in one sentence for the learner."""
    candidates: int
    """Items the choice was made from."""


def _spread_by_world(item: labels.Item, world) -> tuple[int, bool, float]:
    styles = [world.classify_style(item.prompt, text) for text in item.completions]
    gold = [world.gold(item.prompt, text).utility for text in item.completions]
    return len({s for s in styles if s}), "helpful" in styles, float(np.ptp(gold))


def pick_items(
    samples: Sequence[Any], k: int, *, world=None, reward: Callable | None = None, min_styles: int = 3, seed: int = 0
) -> ItemChoice:
    """`k` items (one prompt and its N completions each) whose replies differ in a way worth ranking.

    With `world` (tiny preset): items with a helpful reply and at least `min_styles` distinct styles
    come first, then by the spread of gold utility; ties broken by a seeded shuffle; one item per
    prompt. Without a world, `reward(prompts, replies)` ranks items by the spread (max - min) of
    its scores. With neither, a seeded random choice.
    """
    items = labels.items_from_samples(samples)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not items:
        raise ValueError("no samples to pick items from: generate completions first")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    if world is not None:
        keys = {i: _spread_by_world(items[i], world) for i in order}

        def good(i):
            styles, helpful, _ = keys[i]
            return helpful and styles >= min_styles

        ranked = sorted(order, key=lambda i: (not good(i), -keys[i][0], -keys[i][2]))
        rule = (
            f"items with a helpful reply and at least {min_styles} different reply styles first (the world's "
            f"style labels), then by the spread of gold utility; {sum(good(i) for i in order)} of "
            f"{len(items)} qualify"
        )
    elif reward is not None:
        spread = {}
        for i in order:
            item = items[i]
            scores = np.asarray(reward([item.prompt] * len(item.completions), list(item.completions)), dtype=float)
            spread[i] = float(np.ptp(scores))
        ranked = sorted(order, key=lambda i: -spread[i])
        rule = f"items whose replies' rewards ({getattr(reward, 'name', 'reward')}) spread the most"
    else:
        ranked = order
        rule = f"a random choice (seed {seed}): pass world= or reward= to pick items worth ranking"
    chosen, prompts_seen = [], set()
    for i in ranked:
        if items[i].prompt in prompts_seen:
            continue
        chosen.append(items[i])
        prompts_seen.add(items[i].prompt)
        if len(chosen) == k:
            break
    return ItemChoice(chosen, rule, len(items))


def rankings_files(folder: str | Path | None = None) -> list[Path]:
    """The learner's and the class's ranking files that exist in `folder` (default: chapter 01's)."""
    folder = Path(folder) if folder is not None else presets.workdir("01")
    return [folder / name for name in (LEARNER_FILE, CLASS_FILE) if (folder / name).is_file()]


def learner_records(
    folder: str | Path | None = None, criterion: str | None = "helpfulness", files: Sequence[str | Path] | None = None
) -> list[labels.RankingRecord]:
    """The current records of the learner's file and the class's merged file (empty if neither exists).

    One record per (labeler, item, criterion) by the store's one rule (`labels.latest_records`, the
    later record wins), reading the class file first and the learner's own file last: it may hold
    corrections made after the merge. Bad lines are skipped and warned about; nothing is rewritten.
    """
    paths = list(files) if files is not None else rankings_files(folder)
    records = [r for path in reversed(paths) for r in labels.RankingStore(path).read()]  # the learner's file last
    return [r for r in labels.latest_records(records) if criterion is None or r.criterion == criterion]


def train_prompts(shipped_records: Sequence[Any], seed: int = 0) -> set[str]:
    """The prompts of the shipped rankings' training split (`pairs.build_pairs`, same seed): the ones a
    learner's rankings may use without leaking into the reward model's test pairs."""
    return set(pairs.build_pairs(list(shipped_records), seed=seed)["train"]["prompt"])


def training_pairs(
    shipped_records: Sequence[Any], learner: Sequence[Any] = (), *, weight: int = LEARNER_WEIGHT, seed: int = 0
):
    """(pairs DatasetDict, info): the shipped rankings' pairs split by prompt, plus the learner's pairs,
    each repeated `weight` times, in the training split only.

    Learner pairs on a prompt of the test split are dropped (the test pairs must stay unseen); `info`
    says how many learner items and pairs went in and how many were dropped.
    """
    from datasets import concatenate_datasets

    if weight < 0:
        raise ValueError(f"weight must be >= 0 (0 ignores the learner's rankings), got {weight}")
    dataset = pairs.build_pairs(list(shipped_records), seed=seed)
    info = {
        "learner_items": len({r.item_id for r in learner}),
        "learner_pairs": 0,
        "learner_pairs_dropped": 0,
        "weight": weight,
        "shipped_train_pairs": len(dataset["train"]),
    }
    if not learner or weight == 0:
        return dataset, info
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mine = pairs.build_pairs(list(learner), test_fraction=0.0, seed=seed)["train"]
    test_prompts = set(dataset["test"]["prompt"])
    kept = mine.filter(lambda row: row["prompt"] not in test_prompts)
    info.update(learner_pairs=len(kept), learner_pairs_dropped=len(mine) - len(kept))
    if len(kept):
        dataset["train"] = concatenate_datasets([dataset["train"], *[kept] * weight]).shuffle(seed=seed)
    return dataset, info
