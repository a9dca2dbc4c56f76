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
O_APPEND, under the file's lock (`file_lock`: a `filelock.FileLock` named from the resolved path,
so two spellings of one file share it; two kernels appending never interleave), then fsync'd: a
killed kernel loses nothing already submitted. `read` takes the same lock, so it never sees a line
that is still being written: a last line without its newline is what a process killed mid-write
left, and `read` skips and reports it (as it does any line it cannot parse, or one longer than
MAX_LINE_BYTES); the next `submit` starts a fresh line. Only `export` and `merge` rewrite a file,
and they hold the lock of every file they read or rewrite from the first read to the rename, so a
record submitted meanwhile waits and lands in the new file (the rewritten file keeps its mode).

"Latest": correcting a ranking appends a newer record; the current record per (labeler, item_id,
criterion) is the one LATER IN THE FILE (`latest_records`, used by `RankingStore.latest`, agreement
and pairs alike). Append order is the truth within a file; timestamps are not compared, since
clocks differ between laptops. Across files, `merge` decides (its `prefer`) and writes one record
per key. Same item id, other texts: a record counts as a ranking of the texts it shows
(`item_content`); `split_item_versions` (used by `merge` and agreement) gives each other version
of an item its own id, so rankings of different texts are never compared or merged as one.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from filelock import FileLock, Timeout

from labkit.artifacts import atomic_write

__all__ = [
    "FLAGS",
    "Item",
    "MAX_LINE_BYTES",
    "MergeConflict",
    "MergeReport",
    "RankingRecord",
    "RankingStore",
    "SCHEMA_VERSION",
    "TextMismatch",
    "append_line",
    "export",
    "file_lock",
    "format_ranking",
    "hand_record",
    "item_content",
    "item_field",
    "items_from_samples",
    "latest_records",
    "merge",
    "now_iso",
    "parse_ranking",
    "read_jsonl",
    "split_item_versions",
    "validate",
    "warn_skipped",
]

SCHEMA_VERSION = 1
"""Version of the record layout; bump it (and convert in `from_json`) when a field changes."""
FLAGS: tuple[str, ...] = ("nonsensical", "unsafe")
"""Flags a labeler may put on a completion."""
MAX_LINE_BYTES = 1_000_000
"""Longest line `read` parses. A real record is a few kB; a longer line is skipped unparsed and reported."""


def now_iso() -> str:
    """The current time, ISO 8601 in UTC (e.g. 2025-01-31T12:00:00.123456+00:00)."""
    return datetime.now(UTC).isoformat()


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
    completions: tuple[str, ...]  # the texts shown, same order as completion_ids
    labeler: str
    criterion: str  # e.g. "helpfulness", "harmlessness"
    guideline_version: str
    ranking: tuple[tuple[str, ...], ...]  # groups of completion ids, best first; a group of several is a tie
    flags: dict[str, tuple[str, ...]] = field(default_factory=dict)  # completion id -> flags from FLAGS
    timestamp: str = field(default_factory=now_iso)  # ISO 8601 UTC
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
            "schema_version": self.schema_version,
            "item_id": self.item_id,
            "prompt": self.prompt,
            "completion_ids": list(self.completion_ids),
            "completions": list(self.completions),
            "labeler": self.labeler,
            "criterion": self.criterion,
            "guideline_version": self.guideline_version,
            "ranking": [list(g) for g in self.ranking],
            "flags": {k: list(v) for k, v in self.flags.items()},
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_json(cls, d: dict) -> RankingRecord:
        """The record of a dict made by `to_json`; ValueError on a missing field or unknown version."""
        if not isinstance(d, dict):
            raise ValueError(f"a ranking record must be a JSON object, got {type(d).__name__}")
        version = d.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {version!r} is not supported (this labkit reads {SCHEMA_VERSION}); "
                "upgrade labkit or convert the file"
            )
        names = (
            "item_id",
            "prompt",
            "completion_ids",
            "completions",
            "labeler",
            "criterion",
            "guideline_version",
            "ranking",
            "flags",
            "timestamp",
        )
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
        raise ValueError(
            f"completion_ids has duplicates {sorted({c for c in ids if ids.count(c) > 1})}: "
            "give each shown completion its own id"
        )
    if not isinstance(texts, tuple) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"completions must be a sequence of strings (the texts shown), got {texts!r}")
    if len(texts) != len(ids):
        raise ValueError(
            f"completions has {len(texts)} texts but completion_ids has {len(ids)} ids: "
            "give one text per id, in the same order"
        )

    ranking = record.ranking
    if not isinstance(ranking, tuple):
        raise ValueError(
            f"ranking must be a list of groups of completion ids (best first), "
            f"e.g. [['b'], ['a', 'c']]; got {type(ranking).__name__} {ranking!r}"
        )
    if not ranking:
        raise ValueError(f"ranking is empty: rank every shown completion {list(ids)}")
    seen: list[str] = []
    for i, group in enumerate(ranking):
        if not isinstance(group, tuple) or not all(isinstance(c, str) for c in group):
            raise ValueError(
                f"ranking group {i} must be a list of completion ids, got {group!r} "
                "(write a single completion as ['a'], not 'a')"
            )
        if not group:
            raise ValueError(f"ranking group {i} is empty: drop it or put a completion id in it")
        seen.extend(group)
    unknown = sorted(set(seen) - set(ids))
    if unknown:
        raise ValueError(f"ranking names unknown completion id(s) {unknown}; the shown ids are {list(ids)}")
    dupes = sorted({c for c in seen if seen.count(c) > 1})
    if dupes:
        raise ValueError(
            f"ranking lists id(s) {dupes} more than once: put each completion in exactly one group "
            "(tie completions by putting them in the same group)"
        )
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


def latest_records(records: Iterable[Any]) -> list[Any]:
    """The current record per (labeler, item_id, criterion): the one LATER in `records`.

    The one rule for "latest" in labkit (the store, agreement and pairs all use it). Give records in
    file order: within a file, append order is the order of submission; timestamps are not compared
    (laptops' clocks differ). For several files, `merge` them first: it decides between files.
    Kept in the order each key was first submitted, so an item keeps its place after a correction.
    """
    out: dict[tuple, Any] = {}
    for r in records:
        # dict keeps the first insertion position; the value becomes the newest
        out[(r.labeler, r.item_id, getattr(r, "criterion", ""))] = r
    return list(out.values())


def item_content(record: Any) -> tuple[str, tuple[tuple[str, str], ...]]:
    """What `record`'s labeler was shown: (prompt, ((completion id, text), ...) sorted by id).

    Two records rank the same item only when these are equal: the same item id with another prompt
    or other completion texts (another seed, preset or model) is another item.
    """
    return (record.prompt, tuple(sorted(zip(record.completion_ids, record.completions))))


@dataclass
class TextMismatch:
    """One item id shown with different prompt or completion texts; each version is kept under its own id."""

    item_id: str
    versions: dict[str, list[str]]  # the id a version is kept under -> who saw it, in order of appearance

    def __str__(self) -> str:
        kept = "; ".join(f"as {vid!r} for {', '.join(who)}" for vid, who in self.versions.items())
        return (
            f"item {self.item_id!r} was shown with {len(self.versions)} different texts (prompt or completions "
            f"differ), kept {kept}"
        )


def _split_versions(tagged: list[tuple[str, Any]]) -> tuple[list[tuple[str, Any]], list[TextMismatch]]:
    """`split_item_versions` on (who, record) pairs; `who` names the record in the report."""
    kept_as: dict[str, dict[tuple, str]] = {}  # item id -> content -> id that version is kept under
    seen_by: dict[str, dict[str, list[str]]] = {}  # item id -> kept id -> who
    out = []
    for who, r in tagged:
        content = item_content(r)
        versions = kept_as.setdefault(r.item_id, {})
        if content not in versions:
            digest = hashlib.sha1(json.dumps(content).encode("utf-8")).hexdigest()[:8]
            versions[content] = f"{r.item_id}@{digest}" if versions else r.item_id
        kept = versions[content]
        whos = seen_by.setdefault(r.item_id, {}).setdefault(kept, [])
        if who not in whos:
            whos.append(who)
        out.append((who, r if kept == r.item_id else dataclasses.replace(r, item_id=kept)))
    return out, [TextMismatch(i, v) for i, v in seen_by.items() if len(v) > 1]


def split_item_versions(records: Iterable[RankingRecord]) -> tuple[list[RankingRecord], list[TextMismatch]]:
    """`records`, with each item id that was shown with different texts split into one id per version.

    The first version met keeps the item id; every other version becomes "<item_id>@<8 hex digits of
    its texts>" (the same texts always give the same id). Returns the records, in order, and one
    `TextMismatch` per split item naming who saw which version. `merge` and agreement use it, so
    rankings of different texts are never compared or merged as one item.
    """
    tagged, mismatches = _split_versions([(r.labeler, r) for r in records])
    return [r for _, r in tagged], mismatches


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
            raise ValueError(
                f"ranking {text!r}: group {i} has an empty id; write ids best first, '>' between "
                "groups and '=' inside a tie, e.g. 'b > a = c'"
            )
    return groups


def hand_record(
    ranking: str,
    labeler: str = "you",
    flags: dict[str, Iterable[str]] | None = None,
    *,
    item_id: str = "example",
    prompt: str = "How do I keep my basil plant alive?",
    texts: dict[str, str] | None = None,
    criterion: str = "helpfulness",
) -> RankingRecord:
    """A validated record written by hand, for examples: `hand_record("b > a = c", flags={"c": ["unsafe"]})`.

    The shown completion ids are the ranking's ids, sorted; each text is `texts[id]` (default "reply <id>").
    """
    groups = parse_ranking(ranking)
    ids = tuple(sorted(c for g in groups for c in g))
    texts = texts or {}
    record = RankingRecord(
        item_id=item_id,
        prompt=prompt,
        completion_ids=ids,
        completions=tuple(texts.get(c, f"reply {c}") for c in ids),
        labeler=labeler,
        criterion=criterion,
        guideline_version="by-hand",
        ranking=groups,
        flags={c: (f,) if isinstance(f, str) else tuple(f) for c, f in (flags or {}).items()},
    )
    validate(record)
    return record


def file_lock(path: str | os.PathLike) -> FileLock:
    """The lock every labkit reader and writer of `path` takes: "<resolved path>.lock".

    Named from `Path(path).resolve()`, so two spellings of one file (relative, "..", a symlinked
    folder) share one lock; one instance per file in a process, so it is reentrant within a thread.
    """
    return FileLock(str(Path(path).resolve()) + ".lock", is_singleton=True)


@contextlib.contextmanager
def _locked(paths: Iterable[str | os.PathLike]) -> Iterator[None]:
    """Hold the locks of `paths`, taken in sorted order of resolved path (so two merges never wait on each
    other in a cycle). A lock that cannot be created in a read-only folder is skipped: no writer can
    take it there either, so nothing can be appending."""
    with contextlib.ExitStack() as stack:
        for resolved in sorted({str(Path(p).resolve()) for p in paths}):
            try:
                stack.enter_context(file_lock(resolved))
            except Timeout:
                raise
            except OSError:
                folder = Path(resolved).parent
                if not folder.is_dir() or os.access(folder, os.W_OK):
                    raise
        yield


def _lines(f: BinaryIO) -> Iterator[tuple[int, bytes | None, bool, int]]:
    """(line number, bytes without the newline or None if longer than MAX_LINE_BYTES, ended by a newline,
    length) for each line of a binary file; an over-long line is skipped without being held in memory."""
    number = 0
    while raw := f.readline(MAX_LINE_BYTES + 1):
        number += 1
        ended = raw.endswith(b"\n")
        line = raw[:-1] if ended else raw
        if len(line) <= MAX_LINE_BYTES:
            yield number, line, ended, len(line)
            continue
        length = len(line)
        while not ended and (chunk := f.readline(MAX_LINE_BYTES)):
            ended = chunk.endswith(b"\n")
            length += len(chunk) - ended
        yield number, None, ended, length


def _short(err: BaseException, limit: int = 200) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= limit else text[:limit] + "..."


def append_line(path: str | os.PathLike, data: bytes) -> None:
    """Append one line (`data`, ending in a newline) to `path` durably; the caller holds its `file_lock`.

    One `os.write` on a file opened with O_APPEND, then fsync: the line lands whole or, if the process
    is killed, truncated; a partial line left by a killed writer is ended first, so ours starts fresh.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        written = os.write(fd, data)
        while written < len(data):  # short writes are rare on regular files; finish the line
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | os.PathLike, parse: Any) -> tuple[list[Any], list[str]]:
    """(`parse(obj)` of every good JSON line of `path`, "line N: why" for every line skipped); the caller
    holds the lock. A line longer than MAX_LINE_BYTES is skipped unparsed; a line that `json.loads` or
    `parse` rejects (any exception) is skipped, called a truncated last line if it has no newline; a
    UTF-8 byte order mark at the start and blank lines are ignored; a missing file is empty."""
    out: list[Any] = []
    problems: list[str] = []
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return out, problems
    with f:
        for number, line, ended, length in _lines(f):
            if number == 1 and line is not None and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8) :]  # written by some Windows editors
            if line is None:
                problems.append(
                    f"line {number}: {length:,} bytes, longer than MAX_LINE_BYTES={MAX_LINE_BYTES:,}, skipped unparsed"
                )
                continue
            if not line.strip():
                continue
            try:
                out.append(parse(json.loads(line.decode("utf-8"))))
            except Exception as err:  # any bad line (RecursionError, TypeError, ...) is skipped, not fatal
                why = "corrupt line" if ended else "truncated last line (a write cut off?)"
                problems.append(f"line {number}: {why}, skipped: {_short(err)}")
    return out, problems


def warn_skipped(path: str | os.PathLike, problems: list[str], kept: str) -> None:
    """One warning naming how many lines of `path` were skipped and the first five reasons (none if no problems)."""
    if problems:
        shown = problems[:5]
        more = len(problems) - len(shown)
        warnings.warn(
            f"{path}: skipped {len(problems)} bad line(s); {kept}. {'; '.join(shown)}"
            + (f"; {more} more in last_read_problems" if more else ""),
            stacklevel=3,
        )


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
        """The file's lock (`file_lock`): held by `submit`, `read`, and `export`/`merge` while they rewrite it."""
        return file_lock(self.path)

    def submit(self, record: RankingRecord) -> None:
        """Validate `record` (ValueError, nothing written, if bad), then append it durably."""
        validate(record)
        with self.lock:
            append_line(self.path, (json.dumps(record.to_json(), ensure_ascii=False) + "\n").encode("utf-8"))

    def read(self) -> list[RankingRecord]:
        """Every complete, valid record in file order; bad lines are skipped, warned about and listed
        in `last_read_problems`.

        Read under the file's lock: a submit in progress finishes first, so a last line without its
        newline is one a killed writer cut off (it is kept if it still parses: a file saved by hand
        without a final newline). Any line that fails to parse or validate (bad JSON, nesting too
        deep, a wrong field) and any line longer than MAX_LINE_BYTES is skipped; a UTF-8 byte order
        mark at the start of the file is ignored.
        """
        self.last_read_problems = []
        if not self.path.exists():
            return []  # and make no lock file for a store that was never written

        def parse(d: dict) -> RankingRecord:
            record = RankingRecord.from_json(d)
            validate(record)
            return record

        with _locked([self.path]):
            records, self.last_read_problems = read_jsonl(self.path, parse)
        warn_skipped(self.path, self.last_read_problems, "complete records are kept")
        return records

    def latest(self) -> list[RankingRecord]:
        """The current record per (labeler, item_id, criterion): the last one in the file (`latest_records`)."""
        return latest_records(self.read())

    def ranked_ids(self, labeler: str, criterion: str | None = None, items: list[Any] | None = None) -> set[str]:
        """Item ids `labeler` has ranked (under `criterion`, or any criterion if None); reads the store once.

        With `items`, an id counts only if the ranking was of the same completion texts the item shows
        now: a ranking made of other texts (another preset, seed or model under the same item id) is
        stale, and the item is offered again.
        """
        shown = {} if items is None else {str(item_field(it, "item_id")): _texts(it) for it in items}
        return {
            r.item_id
            for r in self.read()
            if r.labeler == labeler
            and (criterion is None or r.criterion == criterion)
            and shown.get(r.item_id) in (None, tuple(r.completions))
        }

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


def _jsonl(records: Iterable[RankingRecord]) -> str:
    return "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records)


def export(store: RankingStore | str | os.PathLike, path: str | os.PathLike, latest_only: bool = False) -> int:
    """Write the store's valid records (only the current ones if `latest_only`) to a clean JSONL at
    `path`; returns the number written. Bad lines of the source are dropped (and warned about).

    `path` may be the store itself (compacting it in place): the locks of the store and of `path` are
    held from the read to the rename, so a record submitted meanwhile waits and lands in the new
    file. The file is replaced atomically (`artifacts.atomic_write`) and keeps its mode.
    """
    store = store if isinstance(store, RankingStore) else RankingStore(store)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with _locked([store.path, path]):
        records = store.latest() if latest_only else store.read()
        atomic_write(path, _jsonl(records))
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
    """What `merge` did: records written, conflicts found, identical duplicates collapsed, what was wrong."""

    records: list[RankingRecord]
    conflicts: list[MergeConflict]
    duplicates: int
    sources: list[str]
    problems: list[str]  # every source's skipped lines, and every missing source
    missing: list[str] = field(default_factory=list)  # sources that do not exist (skipped)
    text_mismatches: list[TextMismatch] = field(default_factory=list)  # item ids shown with different texts


def _parse_time(timestamp: str) -> datetime:
    t = datetime.fromisoformat(timestamp)
    return t if t.tzinfo else t.replace(tzinfo=UTC)  # naive times are taken as UTC


def _content(r: RankingRecord) -> tuple:
    # What makes two submissions "the same": the ranking (order inside a tie does not matter) and flags.
    return (tuple(frozenset(g) for g in r.ranking), tuple(sorted((k, frozenset(v)) for k, v in r.flags.items() if v)))


def merge(
    sources: Iterable[RankingStore | str | os.PathLike], out_path: str | os.PathLike, prefer: str = "latest"
) -> MergeReport:
    """Merge several stores (a class's files) into one with one record per (labeler, item_id, criterion).

    1. Within one source the last record in the file counts (`latest_records`: resubmissions are corrections).
    2. An item id shown with different texts in different records (a learner who sampled with another
       seed) is several items: each other version is kept under its own id (`split_item_versions`),
       listed in `text_mismatches` and warned about; such records are never conflicts.
    3. Across sources, identical records collapse; different rankings for the same key are conflicts,
       resolved by `prefer`: "latest" (newest timestamp wins), "first" (the earliest source wins) or
       "error" (raise ValueError listing every conflict and write nothing).

    A source that does not exist is skipped, listed in `missing` and `problems`, and warned about.
    The locks of `out_path` and of every source are held from the first read to the rename, so
    `out_path` may be one of the sources (merged in place): a record appended to it meanwhile waits
    and lands in the merged file. An `out_path` that is not a source is replaced (its mode is kept).
    """
    if prefer not in ("latest", "first", "error"):
        raise ValueError(f"prefer must be 'latest', 'first' or 'error', got {prefer!r}")
    stores = [s if isinstance(s, RankingStore) else RankingStore(s) for s in sources]
    missing = [str(s.path) for s in stores if not s.path.exists()]
    present = [s for s in stores if str(s.path) not in missing]
    problems = [f"{m}: no such file, skipped (check the path, or the file was not handed in yet)" for m in missing]
    if missing:
        warnings.warn(
            f"merge: {len(missing)} source(s) do not exist and were skipped: {missing}; check the paths", stacklevel=2
        )
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with _locked([s.path for s in present] + [out_path]):
        tagged: list[tuple[str, RankingRecord]] = []  # (source, record), source order then file order
        for store in present:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # gathered into the report instead
                current = store.latest()
            problems += [f"{store.path}: {p}" for p in store.last_read_problems]
            tagged += [(str(store.path), r) for r in current]
        split, mismatches = _split_versions([(f"{r.labeler} in {src}", r) for src, r in tagged])
        by_key: dict[tuple, list[tuple[str, RankingRecord]]] = {}
        for (src, _), (_, r) in zip(tagged, split):
            by_key.setdefault(r.key, []).append((src, r))

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
            raise ValueError(
                f"{len(conflicts)} conflicting ranking(s); pass prefer='latest' or 'first' to resolve, "
                "or fix the files (nothing was written):\n" + "\n".join(str(c) for c in conflicts)
            )
        atomic_write(out_path, _jsonl(records))
    if mismatches:
        warnings.warn(
            f"merge: {len(mismatches)} item id(s) were shown with different texts and are kept as separate "
            f"items (see MergeReport.text_mismatches): " + "; ".join(str(m) for m in mismatches[:3]),
            stacklevel=2,
        )
    return MergeReport(records, conflicts, duplicates, [str(s.path) for s in stores], problems, missing, mismatches)
