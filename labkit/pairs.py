"""Preference pairs: rankings -> (prompt, chosen, rejected) comparisons.

Stage: pairs, between labelling and reward modelling. Inputs: ranking records (`labels.RankingRecord`,
or any object with the same attributes); only the current one per (labeler, item, criterion) counts,
the later one in the order given (`labels.latest_records`, the one rule the store and agreement use).
Output: a `datasets.DatasetDict` with "train" and "test" splits and the columns `prompt`, `chosen`,
`rejected` (plain strings: TRL's "standard" explicit-prompt preference format, read by RewardTrainer
and DPOTrainer), `margin`, `labeler`, `item_id` (and `count`).
`save_pairs` writes it to a folder (`save_to_disk` plus a manifest) that later chapters load.

Reference: InstructGPT (Ouyang et al. 2022, sec. 3.5) expands each ranking of K completions into its
K-choose-2 comparisons. Rules used here:
    1. a completion flagged "nonsensical" or "unsafe" ranks below every unflagged completion, whatever
       its position: flagged completions are taken out of their groups and placed after all the
       unflagged groups, keeping their own order (and ties) among themselves;
    2. every pair of completions in different groups gives one pair, the better one chosen; its
       margin is the distance between the two groups (1st vs 3rd group: margin 2);
    3. completions in the same group are a tie: no pair by default; with `keep_ties`, one pair in
       display order with margin `tie_margin`;
    4. a pair whose two texts are identical says nothing and is dropped;
    5. identical pairs from several labelers (same prompt, chosen, rejected) merge into one row
       (mean margin, labelers joined, `count` of merged rows);
    6. the split is BY PROMPT: a prompt's pairs all go to train or all to test, so the held-out
       accuracy measures generalisation to new prompts, not memorised ones.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit import agreement
from labkit.labels import RankingRecord, latest_records

__all__ = [
    "BAD_FLAGS",
    "CONSENSUS_LABELER",
    "Pair",
    "build_pairs",
    "consensus_records",
    "effective_ranking",
    "pairs_stage",
    "pairs_table",
    "ranking_pairs",
    "save_pairs",
    "split_dataset",
    "split_prompts",
]

BAD_FLAGS: tuple[str, ...] = ("nonsensical", "unsafe")
"""Flags that send a completion below every unflagged one."""
CONSENSUS_LABELER = "consensus"
"""Labeler id of the records `consensus_records` makes."""


@dataclass(frozen=True)
class Pair:
    """One comparison: `chosen` was preferred to `rejected` for `prompt`."""

    prompt: str
    chosen: str
    rejected: str
    margin: float  # distance between the two groups in the ranking (tie_margin for a kept tie)
    labeler: str
    item_id: str
    chosen_id: str
    rejected_id: str


def effective_ranking(record: Any) -> tuple[tuple[str, ...], ...]:
    """The record's ranking groups with flagged completions moved below all unflagged ones (rule 1)."""
    flags = getattr(record, "flags", None) or {}
    flagged = {cid for cid, fs in flags.items() if any(f in BAD_FLAGS for f in fs)}
    clean = [tuple(c for c in g if c not in flagged) for g in record.ranking]
    demoted = [tuple(c for c in g if c in flagged) for g in record.ranking]
    return tuple(g for g in clean + demoted if g)


def ranking_pairs(record: Any, keep_ties: bool = False, tie_margin: float = 0.0) -> list[Pair]:
    """All pairs of one ranking, preferred first (see the module docstring for the rules)."""
    texts = dict(zip(record.completion_ids, record.completions))
    groups = effective_ranking(record)
    missing = [c for g in groups for c in g if c not in texts]
    if missing:
        raise ValueError(
            f"record {record.item_id!r} ranks completion ids {missing} that are not among its "
            f"completion_ids {list(record.completion_ids)}: validate it with labels.validate"
        )

    def pair(a: str, b: str, margin: float) -> Pair:
        return Pair(record.prompt, texts[a], texts[b], float(margin), record.labeler, record.item_id, a, b)

    out = []
    for i, better in enumerate(groups):
        if keep_ties:
            out += [pair(a, b, tie_margin) for k, a in enumerate(better) for b in better[k + 1 :]]
        for j in range(i + 1, len(groups)):
            out += [pair(a, b, j - i) for a in better for b in groups[j]]
    return [p for p in out if p.chosen != p.rejected]


def pairs_table(pairs: Iterable[Pair]):
    """Pairs as a pandas DataFrame, one row each in order: chosen_id, rejected_id, margin, chosen, rejected."""
    import pandas as pd

    columns = ["chosen_id", "rejected_id", "margin", "chosen", "rejected"]
    return pd.DataFrame([{c: getattr(p, c) for c in columns} for p in pairs], columns=columns)


def consensus_records(records: Iterable[Any], method: str = "borda", criterion: str | None = None) -> list:
    """One `labels.RankingRecord` per item holding the labelers' consensus ranking (labeler "consensus").

    The consensus rule is `agreement.consensus` (mean Borda points or mean rank; completions a
    majority flagged go last, with the majority's flags). `build_pairs` on these records gives
    the consensus pairs, the fairest test set for a reward model: one vote per item, not one per
    labeler, so a noisy labeler's random answers do not count as ground truth.
    """
    records = list(records)
    agreed = agreement.consensus(records, method=method, criterion=criterion)
    shown = {r.item_id: r for r in agreement.current(records, criterion)}
    out = []
    for item_id, c in agreed.items():
        first = shown[item_id]
        out.append(
            RankingRecord(
                item_id=item_id,
                prompt=first.prompt,
                completion_ids=first.completion_ids,
                completions=first.completions,
                labeler=CONSENSUS_LABELER,
                criterion=first.criterion,
                guideline_version=f"consensus-{method}",
                ranking=c.ranking,
                flags=dict(c.flags),
            )
        )
    return out


def _merge(pairs: list[Pair]) -> list[dict]:
    """One row per (prompt, chosen, rejected): mean margin, labelers joined, count (rule 5)."""
    rows: dict[tuple[str, str, str], dict] = {}
    for p in pairs:
        key = (p.prompt, p.chosen, p.rejected)
        if key not in rows:
            rows[key] = {
                "prompt": p.prompt,
                "chosen": p.chosen,
                "rejected": p.rejected,
                "margins": [],
                "labelers": [],
                "item_id": p.item_id,
            }
        rows[key]["margins"].append(p.margin)
        rows[key]["labelers"].append(p.labeler)
    return [
        {
            "prompt": r["prompt"],
            "chosen": r["chosen"],
            "rejected": r["rejected"],
            "margin": sum(r["margins"]) / len(r["margins"]),
            "labeler": ",".join(sorted(set(r["labelers"]))),
            "item_id": r["item_id"],
            "count": len(r["margins"]),
        }
        for r in rows.values()
    ]


def split_prompts(prompts: list[str], test_fraction: float, seed: int) -> set[str]:
    """The prompts of the test split: a seeded shuffle of the distinct prompts, the first ceil(f * n)."""
    unique = sorted(set(prompts))
    random.Random(seed).shuffle(unique)
    n_test = math.ceil(test_fraction * len(unique)) if len(unique) > 1 else 0
    return set(unique[: min(n_test, len(unique) - 1)])  # keep at least one prompt for training


def build_pairs(
    records: Iterable[Any],
    keep_ties: bool = False,
    merge_duplicates: bool = True,
    keep_counts: bool = False,
    test_fraction: float = 0.2,
    seed: int = 0,
    *,
    tie_margin: float = 0.0,
    criterion: str | None = None,
):
    """Every record's pairs as a DatasetDict with "train" and "test" splits, split by prompt.

    Only the current record per (labeler, item, criterion) counts: the later one in `records`
    (`labels.latest_records`; give a store's records in file order, or `labels.merge` files first).
    Records that mix criteria need `criterion=`: preferences for helpfulness and for harmlessness
    are different targets.
    """
    from datasets import Features, Value

    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}: e.g. 0.2 holds out 20% of the prompts")
    records = list(records)
    if criterion is not None:
        records = [r for r in records if getattr(r, "criterion", None) == criterion]
    criteria = sorted({getattr(r, "criterion", "") for r in records})
    if len(criteria) > 1:
        raise ValueError(f"records mix criteria {criteria}: pass criterion= one of them")
    pairs = [p for r in latest_records(records) for p in ranking_pairs(r, keep_ties=keep_ties, tie_margin=tie_margin)]
    if not pairs:
        raise ValueError(
            f"{len(records)} record(s) gave no pairs: every ranking was one tie or had identical "
            "texts; rank the completions (or pass keep_ties=True)"
        )
    if merge_duplicates:
        rows = _merge(pairs)
    else:
        rows = [
            {
                "prompt": p.prompt,
                "chosen": p.chosen,
                "rejected": p.rejected,
                "margin": p.margin,
                "labeler": p.labeler,
                "item_id": p.item_id,
                "count": 1,
            }
            for p in pairs
        ]
    columns = {
        "prompt": Value("string"),
        "chosen": Value("string"),
        "rejected": Value("string"),
        "margin": Value("float64"),
        "labeler": Value("string"),
        "item_id": Value("string"),
    }
    if keep_counts:
        columns["count"] = Value("int64")
    return split_dataset(rows, Features(columns), test_fraction, seed)


def split_dataset(rows: list[dict], features, test_fraction: float, seed: int):
    """Pair rows as a DatasetDict "train"/"test" split BY PROMPT (`split_prompts`), with `features`' columns."""
    from datasets import Dataset, DatasetDict

    test_prompts = split_prompts([r["prompt"] for r in rows], test_fraction, seed)

    def dataset(selected: list[dict]) -> Dataset:
        return Dataset.from_dict({c: [r[c] for r in selected] for c in features}, features=features)

    return DatasetDict(
        {
            "train": dataset([r for r in rows if r["prompt"] not in test_prompts]),
            "test": dataset([r for r in rows if r["prompt"] in test_prompts]),
        }
    )


def save_pairs(
    dataset, folder: str | os.PathLike, *, seed: int | None = None, inputs: dict[str, str] | None = None, **config: Any
) -> Path:
    """Save a pairs DatasetDict to `folder` with a manifest; `datasets.load_from_disk(folder)` reads it back.

    The manifest (`artifacts.write_manifest`, stage "pairs") records `config` (the `build_pairs`
    options used), `seed`, `inputs` (e.g. a hash of the rankings file) and the size of each split.
    The dataset's progress bars stay quiet: saving a few thousand rows takes well under a second.
    """
    import datasets

    from labkit import artifacts

    folder = Path(folder)
    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        dataset.save_to_disk(str(folder))
    finally:
        if not quiet:
            datasets.enable_progress_bars()
    artifacts.write_manifest(
        folder, "pairs", config=config, seed=seed, inputs=inputs, sizes={split: len(d) for split, d in dataset.items()}
    )
    return folder


def pairs_stage(records: Iterable[Any], seed: int = 0, **options: Any):
    """The main job's pairs stage: (DatasetDict, metrics); `labkit run` prefixes the keys with "pairs.".

    `options` go to `build_pairs`. Metrics: num_train, num_test (pairs), num_prompts_train,
    num_prompts_test, num_records, raw_pairs (before merging), mean_margin.
    """
    records = list(records)
    pairs = build_pairs(records, seed=seed, **options)
    train, test = pairs["train"], pairs["test"]
    wanted = options.get("criterion")
    raw = sum(
        len(ranking_pairs(r, keep_ties=options.get("keep_ties", False)))
        for r in latest_records(records)
        if wanted is None or getattr(r, "criterion", None) == wanted
    )
    margins = list(train["margin"]) + list(test["margin"])
    return pairs, {
        "num_train": len(train),
        "num_test": len(test),
        "num_prompts_train": len(set(train["prompt"])),
        "num_prompts_test": len(set(test["prompt"])),
        "num_records": len(records),
        "raw_pairs": raw,
        "mean_margin": sum(margins) / len(margins),
    }
