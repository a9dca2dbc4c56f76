"""Tests of agreement metrics, consensus and the agreement heatmap, on hand-written rankings."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections import defaultdict

import numpy as np
import pytest

from labkit import agreement, labels
from labkit.labels import RankingRecord

IDS = ("a", "b", "c", "d")


def rec(labeler, item_id, ranking, flags=None, criterion="helpfulness", ids=IDS):
    return RankingRecord(
        item_id=item_id,
        prompt=f"prompt {item_id}",
        completion_ids=ids,
        completions=tuple(f"text {c}" for c in ids),
        labeler=labeler,
        criterion=criterion,
        guideline_version="1",
        ranking=tuple(tuple(g) for g in ranking),
        flags=flags or {},
        timestamp="2025-01-01T00:00:00+00:00",
    )


def strict(order):
    return [[c] for c in order]


FORWARD = {"i1": "abcd", "i2": "dbca", "i3": "cadb"}


def test_identical_labelers_agree_perfectly():
    """Two labelers with the same rankings: agreement 1, tau 1, alpha 1."""
    records = [rec(who, i, strict(o)) for who in ("x", "y") for i, o in FORWARD.items()]
    assert 1.0 == agreement.pairwise_agreement(records, "x", "y")
    assert 1.0 == pytest.approx(agreement.kendall_tau(records, "x", "y"))
    assert 1.0 == pytest.approx(agreement.krippendorff_alpha(records))


def test_reversed_labelers_disagree_completely():
    """A labeler who reverses every ranking: agreement 0, tau -1, alpha below 0."""
    records = [rec("x", i, strict(o)) for i, o in FORWARD.items()]
    records += [rec("y", i, strict(o[::-1])) for i, o in FORWARD.items()]
    assert 0.0 == agreement.pairwise_agreement(records, "x", "y")
    assert -1.0 == pytest.approx(agreement.kendall_tau(records, "x", "y"))
    assert agreement.krippendorff_alpha(records) < 0


def test_alpha_hand_computed():
    """x: a>b>c, y: a>c>b gives ordinal alpha 7/12, computed by hand below.

    Units a (1,1), b (2,3), c (3,2): coincidences o11=2, o23=o32=2; n1=n2=n3=2, n=6.
    Ordinal distances d12=d23=(4-2)^2=4, d13=(6-2)^2=16. Observed sum o*d = 16; expected
    sum over c!=k of n_c n_k d = 2*(16+16+64) = 192. alpha = 1 - (n-1)*16/192 = 7/12.
    """
    ids = ("a", "b", "c")
    records = [rec("x", "i1", strict("abc"), ids=ids), rec("y", "i1", strict("acb"), ids=ids)]
    assert 7 / 12 == pytest.approx(agreement.krippendorff_alpha(records), abs=1e-6)


def _alpha_by_coincidences(records):
    """Ordinal alpha from Krippendorff's (2011) coincidence-matrix recipe, written independently."""
    units = defaultdict(list)
    for r in records:
        for cid, pos in r.positions().items():
            units[(r.item_id, cid)].append(pos)
    o = defaultdict(float)
    for values in units.values():
        if len(values) < 2:
            continue
        for i, j in itertools.permutations(range(len(values)), 2):
            o[(values[i], values[j])] += 1 / (len(values) - 1)
    cats = sorted({c for c, _ in o})
    n_c = {c: sum(v for (a, _), v in o.items() if a == c) for c in cats}
    n = sum(n_c.values())

    def delta(c, k):
        lo, hi = min(c, k), max(c, k)
        return (sum(n_c[g] for g in cats if lo <= g <= hi) - (n_c[c] + n_c[k]) / 2) ** 2

    observed = sum(v * delta(c, k) for (c, k), v in o.items())
    expected = sum(n_c[c] * n_c[k] * delta(c, k) for c in cats for k in cats)
    return 1 - (n - 1) * observed / expected


def test_alpha_matches_independent_computation():
    """On random rankings with ties and missing labelers, alpha equals the coincidence-matrix recipe."""
    rng = random.Random(3)
    records = []
    for item in range(8):
        for who in ("x", "y", "z"):
            if rng.random() < 0.2:
                continue  # this labeler skipped the item
            order = list(IDS)
            rng.shuffle(order)
            groups, g = [], []
            for c in order:
                g.append(c)
                if rng.random() < 0.7:
                    groups.append(g)
                    g = []
            if g:
                groups.append(g)
            records.append(rec(who, f"i{item}", groups))
    assert _alpha_by_coincidences(records) == pytest.approx(agreement.krippendorff_alpha(records), abs=1e-6)


def test_agreement_ignores_ties_and_uses_latest():
    """Pairs tied by either labeler are not counted; a resubmission replaces the earlier ranking."""
    records = [
        rec("x", "i1", [["a"], ["b", "c"], ["d"]]),
        rec("y", "i1", strict("dcba")),
        rec("y", "i1", strict("abdc")),
    ]
    # pairs strict for both: ab, ac, ad, bd, cd -> y (latest: a>b>d>c) agrees on ab, ac, ad, bd; not cd
    assert 4 / 5 == pytest.approx(agreement.pairwise_agreement(records, "x", "y"))


def test_mixed_criteria_need_a_choice():
    """Records for two criteria raise unless criterion= picks one."""
    records = [rec("x", "i1", strict("abcd")), rec("y", "i1", strict("abcd"), criterion="harmlessness")]
    with pytest.raises(ValueError, match="criterion"):
        agreement.agreement_matrix(records)
    assert ["x"] == list(agreement.agreement_matrix(records, criterion="helpfulness").index)


def test_agreement_matrix_and_heatmap():
    """The matrix is symmetric with a unit diagonal, and the heatmap's image holds exactly its values."""
    records = [rec("x", i, strict(o)) for i, o in FORWARD.items()]
    records += [rec("y", i, strict(o)) for i, o in FORWARD.items()]
    records += [rec("z", i, strict(o[::-1])) for i, o in FORWARD.items()]
    m = agreement.agreement_matrix(records, metric="tau")
    expected = np.array([[1, 1, -1], [1, 1, -1], [-1, -1, 1]], dtype=float)
    assert ["x", "y", "z"] == list(m.index) == list(m.columns)
    np.testing.assert_allclose(m.to_numpy(), expected)
    fig = agreement.agreement_heatmap(m)
    np.testing.assert_allclose(np.asarray(fig.axes[0].images[0].get_array()), expected)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert 9 == len(texts) and "-1.00" in texts
    a = agreement.agreement_matrix(records, metric="agreement")
    assert 0.0 == a.loc["x", "z"] and 1.0 == a.loc["x", "y"]
    with pytest.raises(ValueError, match="metric"):
        agreement.agreement_matrix(records, metric="kappa")


def test_consensus_borda_and_mean_rank_with_ties():
    """Borda sums completions strictly below; tied completions share a consensus group."""
    records = [rec("x", "i1", strict("abcd")), rec("y", "i1", [["b"], ["a"], ["c", "d"]])]
    c = agreement.consensus(records, method="borda")["i1"]
    # x: a3 b2 c1 d0; y: b3 a2 c0 d0 -> means a 2.5, b 2.5, c 0.5, d 0
    assert {"a": 2.5, "b": 2.5, "c": 0.5, "d": 0.0} == c.scores
    assert (("a", "b"), ("c",), ("d",)) == c.ranking
    m = agreement.consensus(records, method="mean_rank")["i1"]
    # positions x: 1 2 3 4; y: a2 b1 c3.5 d3.5 -> a 1.5, b 1.5, c 3.25, d 3.75
    assert {"a": 1.5, "b": 1.5, "c": 3.25, "d": 3.75} == m.scores
    assert (("a", "b"), ("c",), ("d",)) == m.ranking


def test_consensus_demotes_majority_flagged():
    """A completion flagged by a majority goes below every unflagged one; a minority flag does not."""
    records = [
        rec("x", "i1", strict("abcd"), flags={"a": ("unsafe",), "b": ("nonsensical",)}),
        rec("y", "i1", strict("abcd"), flags={"a": ("unsafe", "nonsensical")}),
        rec("z", "i1", strict("abcd")),
    ]
    c = agreement.consensus(records)["i1"]
    assert (("b",), ("c",), ("d",), ("a",)) == c.ranking
    assert ("a",) == c.demoted
    assert {"a": ("unsafe",)} == c.flags


def test_disputed_items_sorted_by_tau():
    """The item where labelers disagree most comes first, with its rankings as text."""
    records = [
        rec("x", "calm", strict("abcd")),
        rec("y", "calm", strict("abcd")),
        rec("x", "fight", strict("abcd")),
        rec("y", "fight", strict("dcba")),
        rec("x", "solo", strict("abcd")),
    ]
    df = agreement.disputed_items(records, k=5)
    assert ["fight", "calm"] == list(df["item_id"])
    assert [-1.0, 1.0] == pytest.approx(list(df["mean_tau"]))
    assert {"x": "a > b > c > d", "y": "d > c > b > a"} == df.loc[0, "rankings"]


def test_item_table_puts_labelers_side_by_side():
    """One row per completion: its text, each labeler's position (ties share the mean) and flag counts."""
    records = [
        rec("y", "i1", [["b"], ["a", "c"], ["d"]], flags={"d": ("unsafe",)}),
        rec("x", "i1", strict("abcd"), flags={"d": ("unsafe", "nonsensical")}),
        rec("x", "i2", strict("dcba")),
    ]
    table = agreement.item_table(records, "i1")
    assert ["a", "b", "c", "d"] == list(table.index)
    assert ["completion", "y", "x", "flags"] == list(table.columns)
    assert "text a" == table.loc["a", "completion"]
    assert [2.5, 1.0, 2.5, 4.0] == list(table["y"])
    assert [1.0, 2.0, 3.0, 4.0] == list(table["x"])
    assert ["", "", "", "nonsensical 1/2, unsafe 2/2"] == list(table["flags"])
    with pytest.raises(ValueError, match="no record ranks item 'i9'"):
        agreement.item_table(records, "i9")


def test_summary_and_degenerate_cases():
    """One labeler gives NaN alpha; summary counts items, labelers and records."""
    one = [rec("x", "i1", strict("abcd"))]
    assert math.isnan(agreement.krippendorff_alpha(one))
    assert math.isnan(agreement.pairwise_agreement(one, "x", "y"))
    s = agreement.summary(one + [rec("y", "i1", strict("abcd"))])
    assert (1, 2, 2, 1.0) == (s["num_items"], s["num_labelers"], s["num_records"], s["krippendorff_alpha"])


def test_rankings_of_different_texts_are_not_compared():
    """Two labelers who agree on every text agree fully, even where one item id showed them different texts."""
    same = [rec(who, "i1", strict("abcd")) for who in ("x", "y")]
    x_i2 = RankingRecord(
        item_id="i2",
        prompt="p",
        completion_ids=("a", "b"),
        completions=("good", "bad"),
        labeler="x",
        criterion="helpfulness",
        guideline_version="1",
        ranking=(("a",), ("b",)),
    )
    y_i2 = dataclasses.replace(x_i2, labeler="y", completions=("bad", "good"), ranking=(("b",), ("a",)))
    records = same + [x_i2, y_i2]
    with pytest.warns(UserWarning, match="different texts"):
        assert 1.0 == agreement.pairwise_agreement(records, "x", "y")
    with pytest.warns(UserWarning, match="different texts"):
        assert 1.0 == pytest.approx(agreement.kendall_tau(records, "x", "y"))
    with pytest.warns(UserWarning, match="different texts"):
        assert math.isnan(agreement.pairwise_agreement([x_i2, y_i2], "x", "y"))
    with pytest.warns(UserWarning, match="different texts"):
        agreed = agreement.consensus(records)
    assert [("i1", ("x", "y")), ("i2", ("x",)), (labels.split_item_versions([x_i2, y_i2])[0][1].item_id, ("y",))] == [
        (item_id, c.labelers) for item_id, c in agreed.items()
    ]
