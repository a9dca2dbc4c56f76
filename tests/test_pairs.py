"""Tests of the pairs stage: rankings -> preferred-first pairs, merged, split by prompt."""

from __future__ import annotations

import math

import pytest

from labkit import agreement, pairs
from labkit.labels import RankingRecord, RankingStore


def record(
    ranking,
    item_id="i1",
    labeler="ann",
    prompt=None,
    n=None,
    flags=None,
    timestamp="2025-01-01T00:00:00+00:00",
    criterion="helpfulness",
) -> RankingRecord:
    ids = sorted(c for g in ranking for c in g)
    return RankingRecord(
        item_id=item_id,
        prompt=prompt or f"prompt of {item_id}",
        completion_ids=tuple(ids),
        completions=tuple(f"reply {c} to {item_id}" for c in ids),
        labeler=labeler,
        criterion=criterion,
        guideline_version="1",
        ranking=tuple(tuple(g) for g in ranking),
        flags=flags or {},
        timestamp=timestamp,
    )


def ids(ps):
    return [(p.chosen_id, p.rejected_id) for p in ps]


def test_ranking_of_three_gives_three_pairs_preferred_first():
    """b > a > c gives (b,a), (b,c), (a,c) with margins 1, 2, 1."""
    ps = pairs.ranking_pairs(record([["b"], ["a"], ["c"]]))
    assert [("b", "a"), ("b", "c"), ("a", "c")] == ids(ps)
    assert [1.0, 2.0, 1.0] == [p.margin for p in ps]
    assert "reply b to i1" == ps[0].chosen and "reply a to i1" == ps[0].rejected


def test_ranking_of_four_gives_six_pairs():
    """A strict ranking of 4 gives 4 choose 2 = 6 pairs."""
    assert 6 == len(pairs.ranking_pairs(record([["d"], ["a"], ["c"], ["b"]])))


def test_tie_dropped_by_default_and_kept_on_request():
    """A tie in a ranking of 3 gives 2 pairs; keep_ties adds the tied pair with tie_margin."""
    rec = record([["b"], ["a", "c"]])
    assert [("b", "a"), ("b", "c")] == ids(pairs.ranking_pairs(rec))
    kept = pairs.ranking_pairs(rec, keep_ties=True, tie_margin=0.0)
    assert 3 == len(kept)
    assert [0.0] == [p.margin for p in kept if {p.chosen_id, p.rejected_id} == {"a", "c"}]


def test_flagged_completions_go_last():
    """A flagged completion ranked first is placed below every unflagged one."""
    rec = record([["a"], ["b"], ["c"]], flags={"a": ("nonsensical",)})
    assert (("b",), ("c",), ("a",)) == pairs.effective_ranking(rec)
    assert [("b", "c"), ("b", "a"), ("c", "a")] == ids(pairs.ranking_pairs(rec))


def test_flagged_keep_their_relative_order():
    """Two flagged completions keep their order among themselves, below the unflagged one."""
    rec = record([["a"], ["b"], ["c"]], flags={"a": ("unsafe",), "b": ("nonsensical",)})
    assert (("c",), ("a",), ("b",)) == pairs.effective_ranking(rec)


def test_pairs_table_lists_pairs_in_order():
    """pairs_table has one row per pair: ids, margin and texts, preferred first; no pairs gives an empty table."""
    table = pairs.pairs_table(pairs.ranking_pairs(record([["b"], ["a", "c"]])))
    assert ["chosen_id", "rejected_id", "margin", "chosen", "rejected"] == list(table.columns)
    assert [
        ("b", "a", 1.0, "reply b to i1", "reply a to i1"),
        ("b", "c", 1.0, "reply b to i1", "reply c to i1"),
    ] == list(table.itertuples(index=False, name=None))
    assert 0 == len(pairs.pairs_table([]))


def test_identical_texts_give_no_pair():
    """Two completion ids with the same text make no pair (it would say nothing)."""
    rec = RankingRecord(
        item_id="i",
        prompt="p",
        completion_ids=("a", "b"),
        completions=("same", "same"),
        labeler="x",
        criterion="helpfulness",
        guideline_version="1",
        ranking=(("a",), ("b",)),
    )
    assert [] == pairs.ranking_pairs(rec)


def test_dataset_pair_count_is_sum_of_n_choose_2():
    """Without ties and merging, the dataset holds sum over rankings of N choose 2 pairs."""
    recs = [record([["a"], ["b"], ["c"]], item_id=f"i{k}") for k in range(5)]
    recs += [record([["a"], ["b"], ["c"], ["d"]], item_id=f"j{k}") for k in range(5)]
    dd = pairs.build_pairs(recs, merge_duplicates=False)
    assert 5 * math.comb(3, 2) + 5 * math.comb(4, 2) == len(dd["train"]) + len(dd["test"])
    assert {"prompt", "chosen", "rejected", "margin", "labeler", "item_id"} == set(dd["train"].column_names)


def test_no_prompt_in_both_splits():
    """Train and test share no prompt, and the test split holds about test_fraction of the prompts."""
    recs = [record([["a"], ["b"], ["c"]], item_id=f"i{k}", labeler=lab) for k in range(20) for lab in ("x", "y")]
    dd = pairs.build_pairs(recs, test_fraction=0.25, seed=3, merge_duplicates=False)
    train, test = set(dd["train"]["prompt"]), set(dd["test"]["prompt"])
    assert set() == train & test
    assert 5 == len(test) and 15 == len(train)


def test_split_is_seeded():
    """The same seed gives the same split, another seed another one."""
    recs = [record([["a"], ["b"]], item_id=f"i{k}") for k in range(30)]
    a, b, c = (set(pairs.build_pairs(recs, seed=s)["test"]["prompt"]) for s in (0, 0, 1))
    assert a == b and a != c


def test_duplicates_across_labelers_merge():
    """Two labelers with the same ranking give one row per pair, with both names and a count of 2."""
    recs = [record([["a"], ["b"], ["c"]], labeler=lab) for lab in ("ann", "bob")]
    dd = pairs.build_pairs(recs, keep_counts=True, test_fraction=0.0)
    assert 3 == len(dd["train"]) and 0 == len(dd["test"])
    assert ["ann,bob"] * 3 == dd["train"]["labeler"]
    assert [2, 2, 2] == dd["train"]["count"]


def test_disagreeing_labelers_keep_both_directions():
    """Opposite preferences are not merged: the reward model sees the disagreement."""
    recs = [record([["a"], ["b"]], labeler="ann"), record([["b"], ["a"]], labeler="bob")]
    assert 2 == len(pairs.build_pairs(recs, test_fraction=0.0)["train"])


def test_only_the_latest_record_per_labeler_counts():
    """A corrected ranking (later in the records) replaces the labeler's older one, whatever the timestamps say."""
    old = record([["a"], ["b"]], timestamp="2025-01-02T00:00:00+00:00")
    new = record([["b"], ["a"]], timestamp="2025-01-01T00:00:00+00:00")  # later, from a laptop whose clock is behind
    dd = pairs.build_pairs([old, new], test_fraction=0.0)
    assert ["reply b to i1"] == dd["train"]["chosen"]


def test_store_agreement_and_pairs_keep_the_same_correction(tmp_path):
    """The store, agreement and pairs all take the later record in the file as the current ranking."""
    store = RankingStore(tmp_path / "r.jsonl")
    store.submit(record([["a"], ["b"], ["c"]], timestamp="2025-01-02T00:00:00+00:00"))
    store.submit(record([["c"], ["b"], ["a"]], timestamp="2025-01-01T00:00:00+00:00"))
    records = store.read()
    current = [r.ranking for r in store.latest()]
    assert [(("c",), ("b",), ("a",))] == current == [r.ranking for r in agreement.current(records)]
    dd, metrics = pairs.pairs_stage(records, test_fraction=0.0)
    assert (["reply c to i1", "reply c to i1", "reply b to i1"], 3) == (dd["train"]["chosen"], metrics["raw_pairs"])
    assert [(("c",), ("b",), ("a",))] == [r.ranking for r in pairs.consensus_records(records)]


def test_bad_inputs_raise_clear_errors():
    """A bad test_fraction, mixed criteria, or all-tie rankings raise ValueError naming the problem."""
    recs = [record([["a"], ["b"]])]
    with pytest.raises(ValueError, match="test_fraction"):
        pairs.build_pairs(recs, test_fraction=1.0)
    with pytest.raises(ValueError, match="criteria"):
        pairs.build_pairs(recs + [record([["a"], ["b"]], criterion="harmlessness")])
    with pytest.raises(ValueError, match="no pairs"):
        pairs.build_pairs([record([["a", "b"]])])


def test_pairs_stage_metrics():
    """pairs_stage returns the DatasetDict and the train/test pair counts."""
    recs = [record([["a"], ["b"], ["c"]], item_id=f"i{k}") for k in range(10)]
    dd, metrics = pairs.pairs_stage(recs, seed=0)
    assert len(dd["train"]) == metrics["num_train"] and len(dd["test"]) == metrics["num_test"]
    assert 30 == metrics["num_train"] + metrics["num_test"] == metrics["raw_pairs"]


def test_consensus_records_give_one_ranking_per_item():
    """Two labelers agreeing on b > a > c and one saying c > a > b: the consensus is b > a > c, 3 pairs."""
    recs = [
        record([["b"], ["a"], ["c"]], labeler="ann"),
        record([["b"], ["a"], ["c"]], labeler="bob"),
        record([["c"], ["a"], ["b"]], labeler="cy"),
    ]
    agreed = pairs.consensus_records(recs)
    assert 1 == len(agreed)
    assert pairs.CONSENSUS_LABELER == agreed[0].labeler
    assert (("b",), ("a",), ("c",)) == agreed[0].ranking
    assert [("b", "a"), ("b", "c"), ("a", "c")] == ids(pairs.ranking_pairs(agreed[0]))


def test_consensus_pairs_split_like_labeler_pairs():
    """Consensus pairs and labeler pairs of the same items put the same prompts in test (same seed)."""
    recs = [record([["a"], ["b"]], item_id=f"i{i}", labeler=name) for i in range(10) for name in ("ann", "bob")]
    by_labelers = pairs.build_pairs(recs, test_fraction=0.3, seed=1)
    by_consensus = pairs.build_pairs(pairs.consensus_records(recs), test_fraction=0.3, seed=1)
    assert set(by_labelers["test"]["prompt"]) == set(by_consensus["test"]["prompt"])


def test_save_pairs_writes_dataset_and_manifest(tmp_path):
    """save_pairs writes a folder load_from_disk reads back row for row, with a "pairs" manifest."""
    from datasets import load_from_disk

    from labkit import artifacts

    built = pairs.build_pairs([record([["a"], ["b"], ["c"]], item_id=f"i{k}") for k in range(5)], seed=0)
    folder = pairs.save_pairs(built, tmp_path / "pairs", seed=0, inputs={"rankings": "abc"}, keep_ties=False)
    loaded = load_from_disk(str(folder))
    assert {s: built[s].to_list() for s in built} == {s: loaded[s].to_list() for s in loaded}
    manifest = artifacts.read_manifest(folder)
    assert ("pairs", 0, {"keep_ties": False}, {"rankings": "abc"}) == (
        manifest["stage"],
        manifest["seed"],
        manifest["config"],
        manifest["inputs"],
    )
    assert {"train": 12, "test": 3} == manifest["sizes"]
