"""Tests of the ranking store: validation, durability, concurrency, resume, export and merge."""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import warnings

import pytest

from labkit import labels
from labkit.labels import RankingRecord, RankingStore


def make_record(item_id="i1", labeler="ann", ranking=(("b",), ("a", "c")), **kw) -> RankingRecord:
    fields = dict(item_id=item_id, prompt="How do I water basil?", completion_ids=("a", "b", "c"),
                  completions=("Water it.", "Water when the top inch is dry.", "<b>no</b>"),
                  labeler=labeler, criterion="helpfulness", guideline_version="1", ranking=ranking,
                  flags={}, timestamp="2025-01-01T00:00:00+00:00")
    fields.update(kw)
    return RankingRecord(**fields)


def test_round_trip(tmp_path):
    """A submitted record reads back equal, with tuples restored and the schema version stored."""
    store = RankingStore(tmp_path / "r.jsonl")
    rec = make_record(flags={"c": ("nonsensical",)})
    store.submit(rec)
    assert [rec] == store.read()
    line = json.loads((tmp_path / "r.jsonl").read_text())
    assert labels.SCHEMA_VERSION == line["schema_version"]
    assert [["b"], ["a", "c"]] == line["ranking"]
    assert rec == RankingRecord.from_json(rec.to_json())


def test_positions_average_ties():
    """Tied completions share the mean of the positions they occupy."""
    assert {"b": 1.0, "a": 2.5, "c": 2.5} == make_record().positions()


BAD = [
    ("ranking", dict(ranking="b>a>c")),
    ("ranking", dict(ranking=())),
    ("ranking group 1", dict(ranking=(("b",), (), ("a", "c")))),
    ("ranking group 0", dict(ranking=("b", ("a", "c")))),
    ("unknown completion id", dict(ranking=(("b",), ("a", "c", "z")))),
    ("more than once", dict(ranking=(("b",), ("a", "b", "c")))),
    ("unranked", dict(ranking=(("b",), ("a",)))),
    ("flags", dict(flags={"a": ("boring",)})),
    ("flags", dict(flags={"zz": ("unsafe",)})),
    ("flags", dict(flags={"a": "unsafe"})),
    ("completions", dict(completions=("one", "two"))),
    ("completion_ids", dict(completion_ids=("a", "a", "c"))),
    ("labeler", dict(labeler="")),
    ("labeler", dict(labeler=None)),
    ("item_id", dict(item_id=3)),
    ("criterion", dict(criterion="")),
    ("timestamp", dict(timestamp="yesterday")),
]


@pytest.mark.parametrize("field_name,change", BAD, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD)])
def test_invalid_record_raises_and_writes_nothing(tmp_path, field_name, change):
    """Each malformed record raises ValueError naming the field, and the file stays byte-identical."""
    path = tmp_path / "r.jsonl"
    store = RankingStore(path)
    store.submit(make_record(item_id="good"))
    before = path.read_bytes()
    with pytest.raises(ValueError, match=field_name):
        store.submit(make_record(**change))
    assert before == path.read_bytes()


def test_truncated_last_line_is_reported_and_next_submit_works(tmp_path):
    """Half a JSON line (a killed write) is skipped and reported; complete records and later submits survive."""
    path = tmp_path / "r.jsonl"
    store = RankingStore(path)
    store.submit(make_record(item_id="i1"))
    store.submit(make_record(item_id="i2"))
    half = json.dumps(make_record(item_id="i3").to_json())[:40]
    with open(path, "a") as f:
        f.write(half)
    with pytest.warns(UserWarning, match="truncated"):
        got = store.read()
    assert ["i1", "i2"] == [r.item_id for r in got]
    assert 1 == len(store.last_read_problems) and "line 3" in store.last_read_problems[0]

    store.submit(make_record(item_id="i4"))
    with pytest.warns(UserWarning, match="corrupt"):  # the half line is now a middle line
        got = store.read()
    assert ["i1", "i2", "i4"] == [r.item_id for r in got]


def test_clean_read_has_no_problems(tmp_path):
    """A clean file reads without warnings; a missing file reads as empty."""
    store = RankingStore(tmp_path / "none.jsonl")
    assert [] == store.read()
    store.submit(make_record())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert 1 == len(store.read())
    assert [] == store.last_read_problems


def _writer(path, worker, n):
    store = RankingStore(path)
    for k in range(n):
        store.submit(make_record(item_id=f"w{worker}-{k}", labeler=f"w{worker}", prompt="x" * 3000))


def test_concurrent_appends_do_not_interleave(tmp_path):
    """Two processes x 50 submits give 100 valid, whole records."""
    path = str(tmp_path / "r.jsonl")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, w, 50)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [0, 0] == [p.exitcode for p in procs]
    store = RankingStore(path)
    records = store.read()
    assert [] == store.last_read_problems
    assert 100 == len(records)
    assert {f"w{w}-{k}" for w in range(2) for k in range(50)} == {r.item_id for r in records}


def test_resume_next_unranked(tmp_path):
    """next_unranked returns the first item this labeler has not ranked; None when all are done."""
    store = RankingStore(tmp_path / "r.jsonl")
    items = [{"item_id": "i1"}, {"item_id": "i2"}, labels.Item("i3", "p", ("a", "b"), ("x", "y"))]
    assert "i1" == store.next_unranked(items, "ann")["item_id"]
    store.submit(make_record(item_id="i1"))
    store.submit(make_record(item_id="i2", labeler="bob"))
    assert "i2" == store.next_unranked(items, "ann")["item_id"]
    assert {"i1"} == store.ranked_ids("ann")
    store.submit(make_record(item_id="i2"))
    assert "i3" == store.next_unranked(items, "ann").item_id
    store.submit(make_record(item_id="i3", prompt="p", completion_ids=("a", "b"), completions=("x", "y"),
                             ranking=(("a",), ("b",))))
    assert store.next_unranked(items, "ann") is None
    assert store.next_unranked(items, "ann", criterion="harmlessness")["item_id"] == "i1"


def test_latest_keeps_newest_per_key(tmp_path):
    """A resubmission replaces the earlier record in latest(), keeping the item's place."""
    store = RankingStore(tmp_path / "r.jsonl")
    store.submit(make_record(item_id="i1"))
    store.submit(make_record(item_id="i2"))
    store.submit(make_record(item_id="i1", ranking=(("a",), ("b",), ("c",))))
    latest = store.latest()
    assert [("i1", "a > b > c"), ("i2", "b > a = c")] == [(r.item_id, labels.format_ranking(r.ranking)) for r in latest]
    assert 3 == len(store.read())


def test_items_from_samples():
    """Samples group by prompt id into items with string completion ids."""
    samples = [{"prompt_id": "p1", "prompt": "q1", "completion_id": i, "text": f"t{i}"} for i in range(2)]
    samples.append({"prompt_id": "p2", "prompt": "q2", "completion_id": 0, "text": "u"})
    items = labels.items_from_samples(samples)
    assert [labels.Item("p1", "q1", ("0", "1"), ("t0", "t1")), labels.Item("p2", "q2", ("0",), ("u",))] == items


def test_export_drops_bad_lines(tmp_path):
    """export writes the valid records to a clean file (latest_only keeps one per key)."""
    store = RankingStore(tmp_path / "r.jsonl")
    store.submit(make_record(item_id="i1"))
    store.submit(make_record(item_id="i1", ranking=(("a", "b", "c"),)))
    with open(store.path, "a") as f:
        f.write('{"item_id": "broken"')
    with pytest.warns(UserWarning):
        assert 2 == labels.export(store, tmp_path / "all.jsonl")
    with pytest.warns(UserWarning):
        assert 1 == labels.export(store.path, tmp_path / "latest.jsonl", latest_only=True)
    assert (("a", "b", "c"),) == RankingStore(tmp_path / "latest.jsonl").read()[0].ranking


def _class_files(tmp_path):
    a, b = RankingStore(tmp_path / "a.jsonl"), RankingStore(tmp_path / "b.jsonl")
    a.submit(make_record(item_id="i1", timestamp="2025-01-01T10:00:00+00:00"))
    a.submit(make_record(item_id="i2", timestamp="2025-01-01T10:00:00+00:00"))
    # b holds an identical copy of i2 (tie order differs) and a different, older ranking of i1
    b.submit(make_record(item_id="i2", ranking=(("b",), ("c", "a")), timestamp="2025-01-02T00:00:00+00:00"))
    b.submit(make_record(item_id="i1", ranking=(("a",), ("b",), ("c",)), timestamp="2024-12-31T00:00:00+00:00"))
    b.submit(make_record(item_id="i3", labeler="bob"))
    return a, b


def test_merge_prefer_latest(tmp_path):
    """Conflicts are reported; 'latest' keeps the newer timestamp; identical duplicates collapse."""
    a, b = _class_files(tmp_path)
    report = labels.merge([a, b.path], tmp_path / "m.jsonl", prefer="latest")
    assert 1 == len(report.conflicts) and ("ann", "i1", "helpfulness") == report.conflicts[0].key
    assert 1 == report.duplicates
    merged = {r.key: r for r in RankingStore(tmp_path / "m.jsonl").read()}
    assert 3 == len(merged)
    assert (("b",), ("a", "c")) == merged[("ann", "i1", "helpfulness")].ranking


def test_merge_prefer_first(tmp_path):
    """'first' keeps the record of the earliest source even when it is older."""
    a, b = _class_files(tmp_path)
    labels.merge([b, a], tmp_path / "m.jsonl", prefer="first")
    merged = {r.key: r for r in RankingStore(tmp_path / "m.jsonl").read()}
    assert (("a",), ("b",), ("c",)) == merged[("ann", "i1", "helpfulness")].ranking


def test_merge_prefer_error(tmp_path):
    """'error' raises listing the conflict and writes no output."""
    a, b = _class_files(tmp_path)
    with pytest.raises(ValueError, match="item='i1'"):
        labels.merge([a, b], tmp_path / "m.jsonl", prefer="error")
    assert not (tmp_path / "m.jsonl").exists()
    with pytest.raises(ValueError, match="prefer"):
        labels.merge([a, b], tmp_path / "m.jsonl", prefer="newest")


def test_record_is_frozen():
    """Records are immutable: a correction is a new record, never an edit."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        make_record().labeler = "eve"


def test_parse_ranking_inverts_format_ranking():
    """"b > a = c > d" parses into groups best first, and formats back to the same text."""
    groups = labels.parse_ranking(" b>a = c > d ")
    assert (("b",), ("a", "c"), ("d",)) == groups
    assert "b > a = c > d" == labels.format_ranking(groups)
    with pytest.raises(ValueError, match="group 1 has an empty id"):
        labels.parse_ranking("b > > a")


def test_hand_record_is_a_valid_record():
    """hand_record shows the ranking's ids in sorted order with default texts, and rejects a bad flag."""
    rec = labels.hand_record("b > a = c", labeler="ann", flags={"c": ["unsafe"]}, texts={"b": "Water it."})
    assert ("a", "b", "c") == rec.completion_ids
    assert ("reply a", "Water it.", "reply c") == rec.completions
    assert (("b",), ("a", "c")) == rec.ranking
    assert {"c": ("unsafe",)} == rec.flags
    assert ("ann", "example", "helpfulness") == rec.key
    assert {"a": ("nonsensical",)} == labels.hand_record("b > a", flags={"a": "nonsensical"}).flags
    with pytest.raises(ValueError, match="flags"):
        labels.hand_record("a > b", flags={"a": ["boring"]})


def test_a_ranking_of_other_texts_is_stale(tmp_path):
    """An item whose completions changed since it was ranked (same id) is offered again."""
    store = RankingStore(tmp_path / "r.jsonl")
    record = make_record(item_id="i1")
    store.submit(record)
    same = labels.Item("i1", record.prompt, record.completion_ids, record.completions)
    changed = labels.Item("i1", record.prompt, record.completion_ids, tuple(t + " (new sample)" for t in record.completions))
    assert store.next_unranked([same], "ann") is None
    assert changed == store.next_unranked([changed], "ann")
    assert {"i1"} == store.ranked_ids("ann")  # without items, the id alone counts
