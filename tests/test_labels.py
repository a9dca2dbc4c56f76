"""Tests of the ranking store: validation, durability, concurrency, resume, export and merge."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import time
import warnings
from pathlib import Path

import pytest
from filelock import FileLock

from labkit import labels
from labkit.labels import RankingRecord, RankingStore


def make_record(item_id="i1", labeler="ann", ranking=(("b",), ("a", "c")), **kw) -> RankingRecord:
    fields = dict(
        item_id=item_id,
        prompt="How do I water basil?",
        completion_ids=("a", "b", "c"),
        completions=("Water it.", "Water when the top inch is dry.", "<b>no</b>"),
        labeler=labeler,
        criterion="helpfulness",
        guideline_version="1",
        ranking=ranking,
        flags={},
        timestamp="2025-01-01T00:00:00+00:00",
    )
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
    store.submit(
        make_record(
            item_id="i3", prompt="p", completion_ids=("a", "b"), completions=("x", "y"), ranking=(("a",), ("b",))
        )
    )
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
    """ "b > a = c > d" parses into groups best first, and formats back to the same text."""
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
    changed = labels.Item(
        "i1", record.prompt, record.completion_ids, tuple(t + " (new sample)" for t in record.completions)
    )
    assert store.next_unranked([same], "ann") is None
    assert changed == store.next_unranked([changed], "ann")
    assert {"i1"} == store.ranked_ids("ann")  # without items, the id alone counts


# ---------------------------------------------------------------- issue 15: a trustworthy store


def _append(path, n, prefix):
    store = RankingStore(path)
    for k in range(n):
        store.submit(make_record(item_id=f"{prefix}{k}"))


def _rewrite_while_appending(tmp_path, rewrite) -> tuple[set[str], set[str], int]:
    """Run `rewrite()` again and again while another process appends 150 records to r.jsonl;
    returns (ids appended, ids in the file afterwards, number of rewrites that ran meanwhile)."""
    path = tmp_path / "r.jsonl"
    RankingStore(path).submit(make_record(item_id="before"))
    writer = mp.get_context("fork").Process(target=_append, args=(str(path), 150, "w"))
    writer.start()
    rewrites = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while writer.is_alive():
            rewrite()
            rewrites += 1
    writer.join(timeout=60)
    assert 0 == writer.exitcode
    return {"before"} | {f"w{k}" for k in range(150)}, {r.item_id for r in RankingStore(path).read()}, rewrites


def test_export_in_place_while_another_process_appends_loses_nothing(tmp_path):
    """Exporting a store onto itself while another process submits keeps every confirmed record."""
    path = tmp_path / "r.jsonl"
    appended, kept, rewrites = _rewrite_while_appending(tmp_path, lambda: labels.export(path, path))
    assert rewrites > 1
    assert appended == kept


def test_merge_into_a_source_while_another_process_appends_loses_nothing(tmp_path):
    """Merging [other, r] into r while another process submits to r keeps every confirmed record of both."""
    path, other = tmp_path / "r.jsonl", RankingStore(tmp_path / "other.jsonl")
    other.submit(make_record(item_id="from-other", labeler="bob"))
    appended, kept, rewrites = _rewrite_while_appending(tmp_path, lambda: labels.merge([other, path], path))
    assert rewrites > 1
    assert appended | {"from-other"} == kept


def test_rewritten_files_keep_their_mode(tmp_path):
    """export and merge keep the mode of the file they replace; a new file gets the umask's default."""
    old_umask = os.umask(0o022)
    try:
        store = RankingStore(tmp_path / "r.jsonl")
        store.submit(make_record())
        os.chmod(store.path, 0o640)
        labels.export(store, store.path)
        merged = tmp_path / "m.jsonl"
        labels.merge([store], merged)
        new_mode = merged.stat().st_mode & 0o777
        os.chmod(merged, 0o664)
        labels.merge([store], merged)
        assert (0o640, 0o644, 0o664) == (store.path.stat().st_mode & 0o777, new_mode, merged.stat().st_mode & 0o777)
    finally:
        os.umask(old_umask)


BAD_LINES = {
    "nested too deep": "[" * 100_000 + "]" * 100_000,
    "longer than MAX_LINE_BYTES": '{"prompt": "' + "x" * (labels.MAX_LINE_BYTES + 10) + '"}',
    "not an object": "[1, 2]",
    "not UTF-8": b"\xff\xfe{}".decode("latin-1"),
    "wrong field types": json.dumps({**make_record().to_json(), "ranking": [[["b"]], ["a", "c"]]}),
}


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_any_bad_line_is_skipped_and_reported_and_merge_goes_on(tmp_path, kind):
    """A bad middle line of any kind is skipped and reported; the records around it and a merge survive."""
    path = tmp_path / "r.jsonl"
    store = RankingStore(path)
    store.submit(make_record(item_id="i1"))
    with open(path, "a", encoding="latin-1") as f:
        f.write(BAD_LINES[kind] + "\n")
    store.submit(make_record(item_id="i3"))
    with pytest.warns(UserWarning, match="skipped 1 bad line"):
        got = store.read()
    assert ["i1", "i3"] == [r.item_id for r in got]
    assert [2] == [int(p.split(":")[0].removeprefix("line ")) for p in store.last_read_problems]
    report = labels.merge([store], tmp_path / "m.jsonl")
    assert (2, 1) == (len(report.records), len(report.problems))


def test_over_long_line_is_skipped_unparsed(tmp_path):
    """A line longer than MAX_LINE_BYTES is reported with its length and never parsed."""
    path = tmp_path / "r.jsonl"
    path.write_text("x" * (labels.MAX_LINE_BYTES + 1) + "\n" + json.dumps(make_record().to_json()) + "\n")
    store = RankingStore(path)
    with pytest.warns(UserWarning, match="MAX_LINE_BYTES"):
        assert 1 == len(store.read())
    assert [
        f"line 1: {labels.MAX_LINE_BYTES + 1:,} bytes, longer than MAX_LINE_BYTES={labels.MAX_LINE_BYTES:,}, "
        "skipped unparsed"
    ] == store.last_read_problems


def test_utf8_byte_order_mark_is_read(tmp_path):
    """A file saved with a UTF-8 byte order mark (some Windows editors) reads cleanly."""
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(make_record().to_json()) + "\n").encode("utf-8"))
    store = RankingStore(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [make_record()] == store.read()
    assert [] == store.last_read_problems


def _slow_append(path, line, halfway):
    """Append `line` in two writes 1 s apart under the store's lock: a submit caught mid-write."""
    with RankingStore(path).lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.write(fd, line[:40])
        halfway.set()
        time.sleep(1.0)
        os.write(fd, line[40:])
        os.close(fd)


def test_read_during_an_append_reports_no_truncated_line(tmp_path):
    """A read while another process is halfway through writing a line waits for it: no false problem."""
    path = tmp_path / "r.jsonl"
    store = RankingStore(path)
    store.submit(make_record(item_id="i1"))
    ctx = mp.get_context("fork")
    halfway = ctx.Event()
    line = (json.dumps(make_record(item_id="i2").to_json()) + "\n").encode("utf-8")
    writer = ctx.Process(target=_slow_append, args=(str(path), line, halfway))
    writer.start()
    assert halfway.wait(timeout=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = store.read()
    writer.join(timeout=30)
    assert (["i1", "i2"], []) == ([r.item_id for r in got], store.last_read_problems)


def test_lock_is_named_from_the_resolved_path(tmp_path, monkeypatch):
    """Every spelling of one file (absolute, "..", a symlinked folder, relative) shares one lock file."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "sub", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    spellings = [
        tmp_path / "sub" / "r.jsonl",
        tmp_path / "sub" / ".." / "sub" / "r.jsonl",
        tmp_path / "link" / "r.jsonl",
        Path("sub/r.jsonl"),
    ]
    expected = str((tmp_path / "sub" / "r.jsonl").resolve()) + ".lock"
    assert [expected] * 4 == [RankingStore(p).lock.lock_file for p in spellings]
    assert expected == labels.file_lock("link/r.jsonl").lock_file


def test_merge_reports_missing_sources(tmp_path):
    """A source that does not exist is listed in missing and problems, warned about, and the rest is merged."""
    a, b = _class_files(tmp_path)
    gone = tmp_path / "gone.jsonl"
    with pytest.warns(UserWarning, match="do not exist"):
        report = labels.merge([a, gone, b], tmp_path / "m.jsonl")
    assert [str(gone)] == report.missing
    assert [f"{gone}: no such file, skipped (check the path, or the file was not handed in yet)"] == report.problems
    assert 3 == len(RankingStore(tmp_path / "m.jsonl").read())


def test_merge_keeps_other_texts_of_an_item_apart(tmp_path):
    """The same item id shown with other texts in another file is kept under its own id and reported."""
    other_texts = ("Water it.", "Water when the top inch is dry.", "Never water it.")
    a, b = RankingStore(tmp_path / "a.jsonl"), RankingStore(tmp_path / "b.jsonl")
    a.submit(make_record(item_id="i1", labeler="ann"))
    b.submit(make_record(item_id="i1", labeler="bob", completions=other_texts, ranking=(("a",), ("b",), ("c",))))
    b.submit(make_record(item_id="i1", labeler="ann", completions=other_texts, ranking=(("a",), ("b",), ("c",))))
    with pytest.warns(UserWarning, match="different texts"):
        report = labels.merge([a, b], tmp_path / "m.jsonl", prefer="error")
    [mismatch] = report.text_mismatches
    version = [v for v in mismatch.versions if v != "i1"][0]
    assert ("i1", {"i1": [f"ann in {a.path}"], version: [f"bob in {b.path}", f"ann in {b.path}"]}) == (
        mismatch.item_id,
        mismatch.versions,
    )
    assert version.startswith("i1@") and [] == report.conflicts
    merged = RankingStore(tmp_path / "m.jsonl").read()
    assert [("ann", "i1", make_record().completions), ("bob", version, other_texts), ("ann", version, other_texts)] == [
        (r.labeler, r.item_id, r.completions) for r in merged
    ]


def test_split_item_versions_names_a_version_by_its_texts():
    """Records of one item id with two texts become two items; the same texts always get the same id."""
    first = make_record(labeler="ann")
    other = make_record(labeler="bob", prompt="Another prompt")
    records, [mismatch] = labels.split_item_versions([first, other, dataclasses.replace(other, labeler="cy")])
    again, _ = labels.split_item_versions([first, other])
    assert ["i1", again[1].item_id, again[1].item_id] == [r.item_id for r in records]
    assert {"i1": ["ann"], again[1].item_id: ["bob", "cy"]} == mismatch.versions
    assert ([first], []) == labels.split_item_versions([first])


def test_latest_is_the_later_record_in_the_file_whatever_its_timestamp(tmp_path):
    """A correction from a laptop whose clock is behind still replaces the earlier record."""
    store = RankingStore(tmp_path / "r.jsonl")
    store.submit(make_record(timestamp="2025-01-02T00:00:00+00:00"))
    store.submit(make_record(ranking=(("a",), ("b",), ("c",)), timestamp="2025-01-01T00:00:00+00:00"))
    assert [(("a",), ("b",), ("c",))] == [r.ranking for r in store.latest()]


def test_a_store_in_a_read_only_folder_is_still_read(tmp_path, monkeypatch):
    """Where no lock file can be made (a read-only folder), read goes on without the lock: nobody can append there."""
    store = RankingStore(tmp_path / "r.jsonl")
    store.submit(make_record())
    (tmp_path / "a-file").write_text("")
    monkeypatch.setattr(labels, "file_lock", lambda path: FileLock(str(tmp_path / "a-file" / "r.jsonl.lock")))
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a non-root user sees a chmod 555 folder
    assert [make_record()] == store.read()
    with pytest.raises(OSError):
        store.submit(make_record(item_id="i2"))
