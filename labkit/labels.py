"""Human feedback data: the ranking store.

Stage: labelling. Inputs: items (a prompt and the N completions shown for it) ranked by people
(`widgets.ranking_widget`) or simulated labelers (`labelers.simulate`). Output: an append-only
JSONL file, one `RankingRecord` per (item, labeler, criterion) submission, read back by the
agreement, consensus and pairs stages.

Why this shape: InstructGPT (Ouyang et al. 2022, sec. 3.4 and appendix B) had labelers rank K
completions of a prompt at once, ties allowed, with flags for bad outputs, and expanded each
ranking into its K-choose-2 pairs. A ranking is stored as groups of completion ids, best first; a
group of several ids is a tie. As text it reads "b > a = c" (`format_ranking`, `parse_ranking`);
`hand_record` builds a record from such text for examples.

Durability: a record is one JSON line written by a single `os.write` on a file opened with
O_APPEND, under a `filelock.FileLock` (two kernels appending never interleave), then fsync'd: a
killed kernel loses nothing already submitted. A process killed mid-write can leave a truncated
last line; `read` skips it and reports it, and the next `submit` starts a fresh line. The store is
never rewritten: correcting a ranking appends a newer record, and `latest` keeps the newest one
per (labeler, item, criterion).
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from filelock import FileLock

__all__ = ["FLAGS", "Item", "MergeConflict", "MergeReport", "RankingRecord", "RankingStore",
           "SCHEMA_VERSION", "export", "format_ranking", "hand_record", "item_field", "items_from_samples",
           "latest_records", "merge", "now_iso", "parse_ranking", "validate"]

SCHEMA_VERSION = 1
"""Version of the record layout; bump it (and convert in `from_json`) when a field changes."""
FLAGS: tuple[str, ...] = ("nonsensical", "unsafe")
"""Flags a labeler may put on a completion."""


def now_iso() -> str:
    """The current time, ISO 8601 in UTC (e.g. 2025-01-31T12:00:00.123456+00:00)."""
    return datetime.now(timezone.utc).isoformat()


@dataclass(frozen=True)
class Item:
    """One thing to rank: a prompt and the completions shown for it, in display order."""

    item_id: str
    prompt: str
    completion_ids: tuple[str, ...]
    completions: tuple[str, ...]


def item_field(item: Any, name: str) -> Any:
    """`item[name]` for a dict, `item.name` for an object (items may be either)."""
    if isinstance(item, dict):
        return item[name]
    return getattr(item, name)


def items_from_samples(samples: Iterable[Any]) -> list[Item]:
    """Group `generate.Sample`s (or dicts with the same keys) by prompt into `Item`s, prompt order kept.

    item_id is the sample's prompt_id and each completion id is str(completion_id).
    """
    groups: dict[str, dict] = {}
    for s in samples:
        pid = str(item_field(s, "prompt_id"))
        g = groups.setdefault(pid, {"prompt": item_field(s, "prompt"), "ids": [], "texts": []})
        g["ids"].append(str(item_field(s, "completion_id")))
        g["texts"].append(str(item_field(s, "text")))
    return [Item(pid, g["prompt"], tuple(g["ids"]), tuple(g["texts"])) for pid, g in groups.items()]


@dataclass(frozen=True)
class RankingRecord:
    """One labeler's ranking of one item's completions under one criterion."""

    item_id: str
    prompt: str
    completion_ids: tuple[str, ...]
    completions: tuple[str, ...]          # the texts shown, same order as completion_ids
    labeler: str
    criterion: str                        # e.g. "helpfulness", "harmlessness"
    guideline_version: str
    ranking: tuple[tuple[str, ...], ...]  # groups of completion ids, best first; a group of several is a tie
    flags: dict[str, tuple[str, ...]] = field(default_factory=dict)  # completion id -> flags from FLAGS
    timestamp: str = field(default_factory=now_iso)                 # ISO 8601 UTC
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        # Lists (as JSON gives them) become tuples; anything else is left for `validate` to reject.
        def tup(x):
            return tuple(x) if isinstance(x, list) else x

        object.__setattr__(self, "completion_ids", tup(self.completion_ids))
        object.__setattr__(self, "completions", tup(self.completions))
        if isinstance(self.ranking, (list, tuple)):
            object.__setattr__(self, "ranking", tuple(tup(g) for g in self.ranking))
        if isinstance(self.flags, dict):
            object.__setattr__(self, "flags", {k: tup(v) for k, v in self.flags.items()})

    @property
    def key(self) -> tuple[str, str, str]:
        """(labeler, item_id, criterion): the record a newer submission replaces."""
        return (self.labeler, self.item_id, self.criterion)

    def positions(self) -> dict[str, float]:
        """1-based rank position of each completion; tied completions share the mean of their positions."""
        out, start = {}, 1
        for group in self.ranking:
            for cid in group:
                out[cid] = start + (len(group) - 1) / 2
            start += len(group)
        return out

    def to_json(self) -> dict:
        """A JSON-ready dict (tuples become lists)."""
        return {
            "schema_version": self.schema_version, "item_id": self.item_id, "prompt": self.prompt,
            "completion_ids": list(self.completion_ids), "completions": list(self.completions),
            "labeler": self.labeler, "criterion": self.criterion, "guideline_version": self.guideline_version,
            "ranking": [list(g) for g in self.ranking],
            "flags": {k: list(v) for k, v in self.flags.items()}, "timestamp": self.timestamp,
        }

    @classmethod
    def from_json(cls, d: dict) -> "RankingRecord":
        """The record of a dict made by `to_json`; ValueError on a missing field or unknown version."""
        if not isinstance(d, dict):
            raise ValueError(f"a ranking record must be a JSON object, got {type(d).__name__}")
        version = d.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {version!r} is not supported (this labkit reads {SCHEMA_VERSION}); "
                             "upgrade labkit or convert the file")
        names = ("item_id", "prompt", "completion_ids", "completions", "labeler", "criterion",
                 "guideline_version", "ranking", "flags", "timestamp")
        missing = [n for n in names if n not in d]
        if missing:
            raise ValueError(f"ranking record is missing field(s) {missing}")
        return cls(**{n: d[n] for n in names}, schema_version=version)


def _check_str(value: Any, name: str, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__} {value!r}")
    if not allow_empty and not value.strip():
        raise ValueError(f"{name} is empty: give a non-empty string")


def validate(record: RankingRecord) -> None:
    """Raise ValueError, naming the field and how to fix it, unless `record` is a well-formed ranking.

    Rules: every shown completion id appears exactly once in the ranking; groups are non-empty
    sequences of ids; flags map shown ids to values from FLAGS; texts and ids have equal length.
    """
    if not isinstance(record, RankingRecord):
        raise ValueError(f"record must be a RankingRecord, got {type(record).__name__}")
    if record.schema_version != SCHEMA_VERSION:
        raise ValueError(f"schema_version must be {SCHEMA_VERSION}, got {record.schema_version!r}")
    for name in ("item_id", "labeler", "criterion", "guideline_version"):
        _check_str(getattr(record, name), name)
    _check_str(record.prompt, "prompt", allow_empty=True)
    _check_str(record.timestamp, "timestamp")
    try:
        datetime.fromisoformat(record.timestamp)
    except ValueError:
        raise ValueError(f"timestamp {record.timestamp!r} is not ISO 8601: use labels.now_iso()") from None

    ids, texts = record.completion_ids, record.completions
    if not isinstance(ids, tuple) or not all(isinstance(c, str) and c for c in ids):
        raise ValueError(f"completion_ids must be a sequence of non-empty strings, got {ids!r}")
    if len(ids) < 2:
        raise ValueError(f"completion_ids has {len(ids)} id(s): a ranking needs at least two completions")
    if len(set(ids)) != len(ids):
        raise ValueError(f"completion_ids has duplicates {sorted({c for c in ids if ids.count(c) > 1})}: "
                         "give each shown completion its own id")
    if not isinstance(texts, tuple) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"completions must be a sequence of strings (the texts shown), got {texts!r}")
    if len(texts) != len(ids):
        raise ValueError(f"completions has {len(texts)} texts but completion_ids has {len(ids)} ids: "
                         "give one text per id, in the same order")

    ranking = record.ranking
    if not isinstance(ranking, tuple):
        raise ValueError(f"ranking must be a list of groups of completion ids (best first), "
                         f"e.g. [['b'], ['a', 'c']]; got {type(ranking).__name__} {ranking!r}")
    if not ranking:
        raise ValueError(f"ranking is empty: rank every shown completion {list(ids)}")
    seen: list[str] = []
    for i, group in enumerate(ranking):
        if not isinstance(group, tuple) or not all(isinstance(c, str) for c in group):
            raise ValueError(f"ranking group {i} must be a list of completion ids, got {group!r} "
                             "(write a single completion as ['a'], not 'a')")
        if not group:
            raise ValueError(f"ranking group {i} is empty: drop it or put a completion id in it")
        seen.extend(group)
    unknown = sorted(set(seen) - set(ids))
    if unknown:
        raise ValueError(f"ranking names unknown completion id(s) {unknown}; the shown ids are {list(ids)}")
    dupes = sorted({c for c in seen if seen.count(c) > 1})
    if dupes:
        raise ValueError(f"ranking lists id(s) {dupes} more than once: put each completion in exactly one group "
                         "(tie completions by putting them in the same group)")
    unranked = [c for c in ids if c not in seen]
    if unranked:
        raise ValueError(f"ranking leaves completion id(s) {unranked} unranked: every shown completion must be ranked")

    if not isinstance(record.flags, dict):
        raise ValueError(f"flags must be a dict completion id -> list of flags, got {type(record.flags).__name__}")
    for cid, values in record.flags.items():
        if cid not in ids:
            raise ValueError(f"flags names unknown completion id {cid!r}; the shown ids are {list(ids)}")
        if not isinstance(values, tuple) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"flags[{cid!r}] must be a list of flag names, got {values!r}")
        bad = [v for v in values if v not in FLAGS]
        if bad:
            raise ValueError(f"flags[{cid!r}] has unknown flag(s) {bad}: choose from {list(FLAGS)}")
        if len(set(values)) != len(values):
            raise ValueError(f"flags[{cid!r}] repeats a flag: {list(values)}")


def latest_records(records: Iterable[RankingRecord]) -> list[RankingRecord]:
    """The newest record per (labeler, item_id, criterion), "newest" meaning later in `records`.

    Kept in the order each key was first submitted, so an item keeps its place after a correction.
    """
    out: dict[tuple, RankingRecord] = {}
    for r in records:
        out[r.key] = r  # dict keeps the first insertion position; the value becomes the newest
    return list(out.values())


def format_ranking(ranking: tuple[tuple[str, ...], ...]) -> str:
    """A ranking as text, e.g. "b > a = c > d"."""
    return " > ".join(" = ".join(g) for g in ranking)


def parse_ranking(text: str) -> tuple[tuple[str, ...], ...]:
    """The groups of a ranking written as text, best first: "b > a = c" -> (("b",), ("a", "c")).

    The inverse of `format_ranking`: ">" separates groups, "=" ties ids within one; ValueError on an empty id.
    """
    groups = tuple(tuple(c.strip() for c in part.split("=")) for part in str(text).split(">"))
    for i, group in enumerate(groups):
        if not all(group):
            raise ValueError(f"ranking {text!r}: group {i} has an empty id; write ids best first, '>' between "
                             "groups and '=' inside a tie, e.g. 'b > a = c'")
    return groups


def hand_record(ranking: str, labeler: str = "you", flags: dict[str, Iterable[str]] | None = None, *,
                item_id: str = "example", prompt: str = "How do I keep my basil plant alive?",
                texts: dict[str, str] | None = None, criterion: str = "helpfulness") -> RankingRecord:
    """A validated record written by hand, for examples: `hand_record("b > a = c", flags={"c": ["unsafe"]})`.

    The shown completion ids are the ranking's ids, sorted; each text is `texts[id]` (default "reply <id>").
    """
    groups = parse_ranking(ranking)
    ids = tuple(sorted(c for g in groups for c in g))
    texts = texts or {}
    record = RankingRecord(item_id=item_id, prompt=prompt, completion_ids=ids,
                           completions=tuple(texts.get(c, f"reply {c}") for c in ids), labeler=labeler,
                           criterion=criterion, guideline_version="by-hand", ranking=groups,
                           flags={c: (f,) if isinstance(f, str) else tuple(f) for c, f in (flags or {}).items()})
    validate(record)
    return record


class RankingStore:
    """An append-only JSONL file of `RankingRecord`s; safe against killed kernels and parallel writers."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.last_read_problems: list[str] = []
        """Lines the last `read` skipped, as "line N: why" messages."""

    def __repr__(self) -> str:
        return f"RankingStore({str(self.path)!r})"

    @property
    def lock(self) -> FileLock:
        return FileLock(str(self.path) + ".lock")

    def submit(self, record: RankingRecord) -> None:
        """Validate `record` (ValueError, nothing written, if bad), then append it durably."""
        validate(record)
        data = (json.dumps(record.to_json(), ensure_ascii=False) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                # A killed writer may have left a partial line: start ours on a fresh line.
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data
                written = os.write(fd, data)  # one write: the line lands whole or (if killed) truncated
                while written < len(data):  # short writes are rare on regular files; finish the line
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(self) -> list[RankingRecord]:
        """Every complete, valid record in file order; bad lines are skipped, warned about and listed
        in `last_read_problems` (a truncated last line is what a kernel killed mid-write leaves)."""
        self.last_read_problems = []
        if not self.path.exists():
            return []
        lines = self.path.read_bytes().split(b"\n")
        records = []
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            last = number == len(lines)  # no newline after it: the write may have been cut off
            try:
                record = RankingRecord.from_json(json.loads(raw.decode("utf-8")))
                validate(record)
            except (ValueError, UnicodeDecodeError, TypeError) as err:
                why = "truncated last line (a write cut off?)" if last else "corrupt line"
                self.last_read_problems.append(f"line {number}: {why}, skipped: {err}")
                continue
            records.append(record)
        if self.last_read_problems:
            warnings.warn(f"{self.path}: skipped {len(self.last_read_problems)} bad line(s); complete records "
                          f"are kept. {'; '.join(self.last_read_problems)}", stacklevel=2)
        return records

    def latest(self) -> list[RankingRecord]:
        """The current record per (labeler, item_id, criterion): the last one submitted."""
        return latest_records(self.read())

    def ranked_ids(self, labeler: str, criterion: str | None = None, items: list[Any] | None = None) -> set[str]:
        """Item ids `labeler` has ranked (under `criterion`, or any criterion if None).

        With `items`, an id counts only if the ranking was of the same completion texts the item shows
        now: a ranking made of other texts (another preset, seed or model under the same item id) is
        stale, and the item is offered again.
        """
        shown = {} if items is None else {str(item_field(it, "item_id")): _texts(it) for it in items}
        return {r.item_id for r in self.read()
                if r.labeler == labeler and (criterion is None or r.criterion == criterion)
                and shown.get(r.item_id) in (None, tuple(r.completions))}

    def next_unranked(self, items: list[Any], labeler: str, criterion: str | None = None) -> Any | None:
        """The first of `items` (dicts or objects with item_id) that `labeler` has not ranked yet, or None."""
        done = self.ranked_ids(labeler, criterion, items=items)
        return next((it for it in items if str(item_field(it, "item_id")) not in done), None)


def _texts(item: Any) -> tuple[str, ...] | None:
    """The completion texts an item shows, or None for an item given by its id alone."""
    try:
        return tuple(str(t) for t in item_field(item, "completions"))
    except (KeyError, AttributeError):
        return None


def _write_records_atomically(records: list[RankingRecord], path: str | os.PathLike) -> None:
    """Write a whole JSONL file via a temporary file and rename: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export(store: RankingStore | str | os.PathLike, path: str | os.PathLike, latest_only: bool = False) -> int:
    """Write the store's valid records (only the current ones if `latest_only`) to a clean JSONL at
    `path`; returns the number written. Bad lines of the source are dropped (and warned about)."""
    store = store if isinstance(store, RankingStore) else RankingStore(store)
    records = store.latest() if latest_only else store.read()
    _write_records_atomically(records, path)
    return len(records)


@dataclass
class MergeConflict:
    """Two or more sources disagree on the same (labeler, item_id, criterion)."""

    key: tuple[str, str, str]
    candidates: list[tuple[str, RankingRecord]]  # (source, record), in source order
    chosen: RankingRecord | None = None

    def __str__(self) -> str:
        options = "; ".join(f"{src}: {format_ranking(r.ranking)} at {r.timestamp}" for src, r in self.candidates)
        return f"labeler={self.key[0]!r} item={self.key[1]!r} criterion={self.key[2]!r}: {options}"


@dataclass
class MergeReport:
    """What `merge` did: records written, conflicts found, identical duplicates collapsed."""

    records: list[RankingRecord]
    conflicts: list[MergeConflict]
    duplicates: int
    sources: list[str]
    problems: list[str]


def _parse_time(timestamp: str) -> datetime:
    t = datetime.fromisoformat(timestamp)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)  # naive times are taken as UTC


def _content(r: RankingRecord) -> tuple:
    # What makes two submissions "the same": the ranking (order inside a tie does not matter) and flags.
    return (tuple(frozenset(g) for g in r.ranking), tuple(sorted((k, frozenset(v)) for k, v in r.flags.items() if v)))


def merge(sources: Iterable[RankingStore | str | os.PathLike], out_path: str | os.PathLike,
          prefer: str = "latest") -> MergeReport:
    """Merge several stores (a class's files) into one with one record per (labeler, item_id, criterion).

    Within one source the last submission counts (resubmissions are corrections). Across sources,
    identical records collapse; different rankings for the same key are conflicts, resolved by
    `prefer`: "latest" (newest timestamp wins), "first" (the earliest source wins) or "error"
    (raise ValueError listing every conflict and write nothing).
    """
    if prefer not in ("latest", "first", "error"):
        raise ValueError(f"prefer must be 'latest', 'first' or 'error', got {prefer!r}")
    stores = [s if isinstance(s, RankingStore) else RankingStore(s) for s in sources]
    by_key: dict[tuple, list[tuple[str, RankingRecord]]] = {}
    problems = []
    for store in stores:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gathered into the report instead
            current = store.latest()
        problems += [f"{store.path}: {p}" for p in store.last_read_problems]
        for r in current:
            by_key.setdefault(r.key, []).append((str(store.path), r))

    records, conflicts, duplicates = [], [], 0
    for key, candidates in by_key.items():
        distinct = {_content(r) for _, r in candidates}
        if len(distinct) == 1:
            duplicates += len(candidates) - 1
            records.append(candidates[0][1])
            continue
        conflict = MergeConflict(key, candidates)
        if prefer == "latest":
            # max keeps the first of equal timestamps; iterate reversed so the later source wins ties
            conflict.chosen = max(reversed(candidates), key=lambda c: _parse_time(c[1].timestamp))[1]
        elif prefer == "first":
            conflict.chosen = candidates[0][1]
        conflicts.append(conflict)
        records.append(conflict.chosen)
    if prefer == "error" and conflicts:
        raise ValueError(f"{len(conflicts)} conflicting ranking(s); pass prefer='latest' or 'first' to resolve, "
                         "or fix the files:\n" + "\n".join(str(c) for c in conflicts))
    _write_records_atomically(records, out_path)
    return MergeReport(records, conflicts, duplicates, [str(s.path) for s in stores], problems)
