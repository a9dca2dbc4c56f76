"""Human feedback data: agreement between labelers and a consensus ranking per item.

Stage: labelling, after the rankings are in. Inputs: `labels.RankingRecord`s (from a store, a
merged class file, or simulated labelers). Outputs: agreement numbers and matrices (pandas),
a consensus ranking per item, the most disputed items, one item side by side across labelers
(`item_table`), and a heatmap Figure.

Every function first keeps the current record per (labeler, item, criterion), the later one in the
order given (`labels.latest_records`, the rule the store and pairs use), then splits an item id
shown with different texts into one item per version (`labels.split_item_versions`, with a
warning): two labelers' rankings are compared only when both ranked the same prompt and texts.

Metrics:
    pairwise agreement  over the items two labelers both ranked and every completion pair where
                        BOTH state a strict preference: the share where they prefer the same one.
                        For scale: InstructGPT's training labelers agreed with each other 72.6
                        +- 1.5% of the time (Ouyang et al. 2022).
    Kendall's tau       tau-b (tie-aware, `scipy.stats.kendalltau`) between two labelers' rank
                        positions, per item, averaged over the items both ranked (items where
                        either ranking is all one tie have no tau and are left out).
    Krippendorff alpha  ordinal, over all labelers at once (the maintained `krippendorff`
                        package); a unit is one (item, completion), its values are the rank
                        positions the labelers gave it (ties share the mean position). 1 is
                        perfect agreement, 0 is chance, below 0 systematic disagreement.

Consensus rule (`consensus`):
    1. each labeler's ranking gives each completion a position (tied completions share the mean
       of the positions they occupy) and Borda points (the number of completions strictly below it);
    2. the score is the mean over labelers of Borda points (method "borda", higher is better) or of
       positions (method "mean_rank", lower is better); equal scores are a tie in the consensus;
    3. a completion that a strict majority of the labelers who saw it flagged (with any flag) is
       placed below every unflagged completion, whatever its score; flagged completions are
       ordered among themselves by the same score. The flags reported are those that a majority
       gave.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import kendalltau

from labkit.labels import FLAGS, RankingRecord, format_ranking, latest_records, split_item_versions

__all__ = [
    "ConsensusRanking",
    "agreement_heatmap",
    "agreement_matrix",
    "borda_points",
    "consensus",
    "current",
    "disputed_items",
    "item_table",
    "kendall_tau",
    "krippendorff_alpha",
    "labelers",
    "pairwise_agreement",
    "summary",
]


def current(records: list[RankingRecord], criterion: str | None = None) -> list[RankingRecord]:
    """The latest record per (labeler, item, criterion) (`labels.latest_records`), for one criterion,
    with each item id shown with different texts split into one item per version (warned about).

    ValueError if the records mix criteria and `criterion` is None: agreement on "helpfulness"
    and on "harmlessness" are different questions.
    """
    records = latest_records(records)
    if criterion is not None:
        records = [r for r in records if r.criterion == criterion]
    criteria = sorted({r.criterion for r in records})
    if len(criteria) > 1:
        raise ValueError(f"records mix criteria {criteria}: pass criterion= one of them")
    records, mismatches = split_item_versions(records)
    if mismatches:
        warnings.warn(
            f"{len(mismatches)} item id(s) were shown with different texts; each version is a separate "
            "item, so rankings of different texts are not compared: " + "; ".join(str(m) for m in mismatches[:3]),
            stacklevel=2,
        )
    return records


def labelers(records: list[RankingRecord]) -> list[str]:
    """The labeler names in `records`, sorted."""
    return sorted({r.labeler for r in records})


def borda_points(record: RankingRecord) -> dict[str, int]:
    """Number of completions strictly below each completion in `record`'s ranking."""
    out, below = {}, len(record.completion_ids)
    for group in record.ranking:
        below -= len(group)
        out.update({cid: below for cid in group})
    return out


def _by_item(records: list[RankingRecord], labeler: str) -> dict[str, RankingRecord]:
    return {r.item_id: r for r in records if r.labeler == labeler}


def _pair_counts(ra: RankingRecord, rb: RankingRecord) -> tuple[int, int]:
    """(agreeing, counted) completion pairs where both records state a strict preference."""
    pa, pb = ra.positions(), rb.positions()
    common = [c for c in ra.completion_ids if c in pb]
    agree = total = 0
    for x, y in itertools.combinations(common, 2):
        da, db = pa[x] - pa[y], pb[x] - pb[y]
        if da != 0 and db != 0:
            total += 1
            agree += (da > 0) == (db > 0)
    return agree, total


def pairwise_agreement(records: list[RankingRecord], a: str, b: str, criterion: str | None = None) -> float:
    """Share of completion pairs, over items both ranked, where `a` and `b` prefer the same one (NaN if none)."""
    records = current(records, criterion)
    ra, rb = _by_item(records, a), _by_item(records, b)
    agree = total = 0
    for item in ra.keys() & rb.keys():
        x, n = _pair_counts(ra[item], rb[item])
        agree, total = agree + x, total + n
    return agree / total if total else math.nan


def _item_tau(ra: RankingRecord, rb: RankingRecord) -> float:
    pa, pb = ra.positions(), rb.positions()
    common = [c for c in ra.completion_ids if c in pb]
    xs, ys = [pa[c] for c in common], [pb[c] for c in common]
    if len(common) < 2 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return math.nan  # an all-tie ranking has no order to correlate with
    return float(kendalltau(xs, ys).statistic)  # scipy's default variant is tau-b


def kendall_tau(records: list[RankingRecord], a: str, b: str, criterion: str | None = None) -> float:
    """Mean over the items both ranked of Kendall's tau-b between `a`'s and `b`'s positions (NaN if none)."""
    records = current(records, criterion)
    ra, rb = _by_item(records, a), _by_item(records, b)
    taus = [_item_tau(ra[i], rb[i]) for i in ra.keys() & rb.keys()]
    taus = [t for t in taus if not math.isnan(t)]
    return float(np.mean(taus)) if taus else math.nan


def krippendorff_alpha(records: list[RankingRecord], criterion: str | None = None) -> float:
    """Ordinal Krippendorff's alpha over all labelers; units are (item, completion), values rank positions.

    NaN when fewer than two labelers or no unit was ranked by two of them.
    """
    import krippendorff

    records = current(records, criterion)
    names = labelers(records)
    units = sorted({(r.item_id, c) for r in records for c in r.completion_ids})
    if len(names) < 2 or not units:
        return math.nan
    row, col = {n: i for i, n in enumerate(names)}, {u: j for j, u in enumerate(units)}
    data = np.full((len(names), len(units)), np.nan)  # (labelers, units); NaN = not ranked by this labeler
    for r in records:
        for cid, pos in r.positions().items():
            data[row[r.labeler], col[(r.item_id, cid)]] = pos
    pairable = (~np.isnan(data)).sum(axis=0) >= 2
    if not pairable.any() or len(np.unique(data[:, pairable][~np.isnan(data[:, pairable])])) < 2:
        return math.nan  # alpha is undefined when every pairable value is the same
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal"))


def agreement_matrix(records: list[RankingRecord], metric: str = "tau", criterion: str | None = None) -> pd.DataFrame:
    """Labeler x labeler matrix of `metric` ("tau" or "agreement"); the diagonal is 1."""
    funcs = {"tau": kendall_tau, "agreement": pairwise_agreement}
    if metric not in funcs:
        raise ValueError(f"metric must be one of {list(funcs)}, got {metric!r}")
    records = current(records, criterion)
    names = labelers(records)
    m = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for a, b in itertools.combinations(names, 2):
        m.loc[a, b] = m.loc[b, a] = funcs[metric](records, a, b)
    m.index.name, m.columns.name = "labeler", "labeler"
    return m


@dataclass(frozen=True)
class ConsensusRanking:
    """The consensus of several labelers on one item (see the module docstring for the rule)."""

    item_id: str
    prompt: str
    ranking: tuple[tuple[str, ...], ...]  # groups of completion ids, best first; a group is a tie
    scores: dict[str, float]  # mean Borda points (higher better) or mean position (lower better)
    flags: dict[str, tuple[str, ...]]  # flags a majority of the labelers gave
    demoted: tuple[str, ...]  # completions placed last because a majority flagged them
    labelers: tuple[str, ...]
    method: str


def consensus(
    records: list[RankingRecord], method: str = "borda", criterion: str | None = None
) -> dict[str, ConsensusRanking]:
    """One `ConsensusRanking` per item, by mean Borda points or mean rank, majority-flagged completions last."""
    if method not in ("borda", "mean_rank"):
        raise ValueError(f"method must be 'borda' or 'mean_rank', got {method!r}")
    by_item: dict[str, list[RankingRecord]] = defaultdict(list)
    for r in current(records, criterion):
        by_item[r.item_id].append(r)
    out = {}
    for item_id, recs in by_item.items():
        ids = list(dict.fromkeys(c for r in recs for c in r.completion_ids))
        values: dict[str, list[float]] = defaultdict(list)
        seen: dict[str, int] = defaultdict(int)
        flag_votes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        any_flag: dict[str, int] = defaultdict(int)
        for r in recs:
            per = borda_points(r) if method == "borda" else r.positions()
            for cid in r.completion_ids:
                values[cid].append(per[cid])
                seen[cid] += 1
                given = r.flags.get(cid, ())
                any_flag[cid] += bool(given)
                for f in given:
                    flag_votes[cid][f] += 1
        scores = {c: float(np.mean(values[c])) for c in ids}
        demoted = tuple(c for c in ids if any_flag[c] * 2 > seen[c])
        flags = {c: tuple(f for f in FLAGS if flag_votes[c][f] * 2 > seen[c]) for c in ids}
        sign = -1.0 if method == "borda" else 1.0  # sort ascending by sign * score: best first
        order = sorted(ids, key=lambda c: (c in demoted, sign * scores[c]))
        groups: list[list[str]] = []
        for c in order:
            prev = groups[-1][-1] if groups else None
            if prev is not None and (prev in demoted) == (c in demoted) and math.isclose(scores[prev], scores[c]):
                groups[-1].append(c)
            else:
                groups.append([c])
        out[item_id] = ConsensusRanking(
            item_id,
            recs[0].prompt,
            tuple(tuple(g) for g in groups),
            scores,
            {c: f for c, f in flags.items() if f},
            demoted,
            tuple(sorted(r.labeler for r in recs)),
            method,
        )
    return out


def disputed_items(records: list[RankingRecord], k: int = 10, criterion: str | None = None) -> pd.DataFrame:
    """The `k` items with the lowest mean pairwise Kendall tau between their labelers.

    Columns: item_id, prompt, mean_tau, num_labelers, rankings (labeler -> "b > a = c"). Items
    ranked by fewer than two labelers are left out; items without any tau sort last.
    """
    by_item: dict[str, list[RankingRecord]] = defaultdict(list)
    for r in current(records, criterion):
        by_item[r.item_id].append(r)
    rows = []
    for item_id, recs in by_item.items():
        if len(recs) < 2:
            continue
        taus = [_item_tau(x, y) for x, y in itertools.combinations(recs, 2)]
        taus = [t for t in taus if not math.isnan(t)]
        rows.append(
            {
                "item_id": item_id,
                "prompt": recs[0].prompt,
                "mean_tau": float(np.mean(taus)) if taus else math.nan,
                "num_labelers": len(recs),
                "rankings": {r.labeler: format_ranking(r.ranking) for r in sorted(recs, key=lambda r: r.labeler)},
            }
        )
    columns = ["item_id", "prompt", "mean_tau", "num_labelers", "rankings"]
    if not rows:
        return pd.DataFrame(columns=columns)
    df = pd.DataFrame(rows, columns=columns)
    return df.sort_values(["mean_tau", "item_id"], na_position="last").head(k).reset_index(drop=True)


def item_table(records: list[RankingRecord], item_id: str, criterion: str | None = None) -> pd.DataFrame:
    """One item as each labeler ranked it, side by side.

    One row per completion (index: completion id) with its text ("completion"), then one column per
    labeler, in the order they first appear in `records`, holding the position that labeler gave it
    (1 is best; tied completions share the mean position), then "flags": each flag given to it and
    by how many of the labelers, e.g. "unsafe 4/5". A consensus record (`pairs.consensus_records`)
    is one more column.
    """
    recs = [r for r in current(records, criterion) if r.item_id == item_id]
    if not recs:
        raise ValueError(
            f"no record ranks item {item_id!r}; the item ids are like {sorted({r.item_id for r in records})[:3]}"
        )
    texts: dict[str, str] = {}
    for r in recs:
        for cid, text in zip(r.completion_ids, r.completions):
            texts.setdefault(cid, text)
    ids = list(texts)
    table = pd.DataFrame({"completion": list(texts.values())}, index=pd.Index(ids, name="completion_id"))
    for r in recs:
        positions = r.positions()
        table[r.labeler] = [positions.get(c, math.nan) for c in ids]
    votes = {c: {f: sum(f in r.flags.get(c, ()) for r in recs) for f in FLAGS} for c in ids}
    table["flags"] = [", ".join(f"{f} {n}/{len(recs)}" for f, n in votes[c].items() if n) for c in ids]
    return table


def summary(records: list[RankingRecord], criterion: str | None = None) -> dict[str, float]:
    """Headline numbers: items, labelers, records, Krippendorff's alpha, mean pairwise tau and agreement."""
    records = current(records, criterion)
    names = labelers(records)
    pairs = list(itertools.combinations(names, 2))
    taus = [t for t in (kendall_tau(records, a, b) for a, b in pairs) if not math.isnan(t)]
    agree = [x for x in (pairwise_agreement(records, a, b) for a, b in pairs) if not math.isnan(x)]
    return {
        "num_items": len({r.item_id for r in records}),
        "num_labelers": len(names),
        "num_records": len(records),
        "krippendorff_alpha": krippendorff_alpha(records),
        "mean_kendall_tau": float(np.mean(taus)) if taus else math.nan,
        "mean_pairwise_agreement": float(np.mean(agree)) if agree else math.nan,
    }


def agreement_heatmap(matrix: pd.DataFrame, title: str | None = None) -> Figure:
    """Heatmap of a labeler x labeler matrix (from `agreement_matrix`), each cell annotated with its value."""
    values = matrix.to_numpy(dtype=float)
    n = len(matrix)
    fig = Figure(figsize=(1.2 + 0.9 * n, 0.9 + 0.8 * n), layout="constrained")
    ax = fig.subplots()
    lo = -1.0 if np.nanmin(values, initial=0.0) < 0 else 0.0  # tau spans [-1, 1], agreement [0, 1]
    im = ax.imshow(values, cmap="RdBu" if lo < 0 else "Blues", vmin=lo, vmax=1.0)
    ax.set_xticks(range(n), labels=[str(c) for c in matrix.columns], rotation=45, ha="right")
    ax.set_yticks(range(n), labels=[str(i) for i in matrix.index])
    for i in range(n):
        for j in range(n):
            v = values[i, j]
            dark = not math.isnan(v) and abs(v) > 0.6
            ax.text(
                j,
                i,
                "n/a" if math.isnan(v) else f"{v:.2f}",
                ha="center",
                va="center",
                color="white" if dark else "black",
                fontsize=9,
            )
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title or "Agreement between labelers")
    return fig
