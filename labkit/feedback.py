"""Feedback from users: thumbs up/down on the deployed model's replies -> pairs for the next reward model.

Stage: practical (after deployment), back to labelling. Inputs: one `Feedback` per click (a prompt,
the reply shown, "up" or "down", an optional comment) and the raw id of the user who clicked.
Output: an append-only JSONL file (`FeedbackStore`) holding pseudonyms, never raw ids; `feedback_pairs`
turns its thumbs into (prompt, chosen, rejected) pairs and `to_dataset` into the `datasets.DatasetDict`
`pairs.build_pairs` makes, so `reward_model.train_reward_model` trains on it unchanged.

Why a store of its own and not `labels.RankingRecord`s: a thumb is a verdict on ONE reply, and a
ranking record cannot carry one honestly. `labels.validate` rejects an item with fewer than two
completions; its flags accept only `labels.FLAGS` ("nonsensical", "unsafe"), not "up"/"down"; it has
no comment field. Faking a second completion would make agreement, consensus and pairs read every
thumb as a one-sided ranking, and mixing thumb lines into a rankings file would make
`RankingStore.read` warn about each as a corrupt line. So thumbs get their own file with the same
discipline as the rankings (`labels` docstring, "Durability"): one JSON line per submission, written
by a single `os.write` on a file opened with O_APPEND under `labels.file_lock`, then fsync'd; `read`
takes the same lock, skips and reports a torn last line (and any line it cannot parse, or one longer
than `labels.MAX_LINE_BYTES`), and the next `submit` starts a fresh line. Later in the file is the
correction: a user who changes their thumb on a reply counts once, with their last thumb.

Pseudonyms: a user's raw id is replaced before writing by "user-" + 12 hex digits of HMAC-SHA256
keyed by the store's salt (`pseudonymise`). The salt is made once per store (`secrets.token_hex(16)`),
kept beside it in "<store>.salt.json" (mode 0600, written atomically) and never in the records: the
same user gets the same pseudonym within a store, another in a store with another salt, and without
the salt nobody can test a guessed id against the file. This is pseudonymisation, not anonymisation:
prompts and comments are stored as typed and may themselves name people.

Thumbs -> pairs (`feedback_pairs`), the rule in full:
    1. the last thumb of each (user, prompt, reply) counts (corrections, as `labels.latest_records`);
    2. a reply's votes are resolved by majority: more ups is an up, more downs a down, a tie is dropped;
    3. every up reply x every down reply of the same prompt is one pair, margin 1.0 (adjacent in a ranking);
    4. a prompt whose thumbs are all up or all down, or that got a single thumb, gives no pair: a thumb
       says a reply was good or bad, not better than what, so a pair needs both kinds on one prompt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from labkit import cost
from labkit.artifacts import atomic_write
from labkit.labels import append_line, file_lock, now_iso, read_jsonl, warn_skipped
from labkit.pairs import split_dataset

__all__ = [
    "Feedback",
    "FeedbackStore",
    "PAIR_COLUMNS",
    "SCHEMA_VERSION",
    "THUMBS",
    "feedback_pairs",
    "item_id_of",
    "pairs_per_hour",
    "pseudonymise",
    "to_dataset",
]

SCHEMA_VERSION = 1
"""Version of the feedback line layout; bump it (and convert in `Feedback.from_json`) when a field changes."""
THUMBS: tuple[str, ...] = ("up", "down")
"""The values a thumb may take."""
PAIR_COLUMNS: tuple[str, ...] = ("prompt", "chosen", "rejected", "margin", "labeler", "item_id")
"""Columns of `to_dataset`: those of `pairs.build_pairs` (without its optional `count`)."""
_PSEUDONYM = re.compile(r"user-[0-9a-f]{12}")


def pseudonymise(user_id: str, salt: str) -> str:
    """ "user-" + the first 12 hex digits of HMAC-SHA256(key=salt, message=user_id).

    Same id and salt, same pseudonym; another salt, another one. 48 bits: two users of a store share
    a pseudonym with probability about n^2 / 2^49 (n = 10,000 users: 2e-7).
    """
    _check_user_id(user_id)
    if not isinstance(salt, str) or not salt:
        raise ValueError("salt is empty: use the store's salt (FeedbackStore.salt())")
    digest = hmac.new(salt.encode("utf-8"), user_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"user-{digest[:12]}"


def _check_user_id(user_id: Any) -> None:
    if not isinstance(user_id, str) or not user_id.strip():
        raise ValueError(f"user_id is empty ({user_id!r}): pass the id of the user who gave the feedback")


def item_id_of(prompt: str, reply: str) -> str:
    """The default id of a (prompt, reply): 12 hex digits of the sha256 of both texts (the same texts, the same id)."""
    return hashlib.sha256(json.dumps([prompt, reply], ensure_ascii=False).encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class Feedback:
    """One user's thumb on one reply of the deployed model."""

    prompt: str
    """What the user asked (as the model saw it)."""
    reply: str
    """The model's reply the thumb is about."""
    thumb: str
    """"up" or "down" (`THUMBS`)."""
    comment: str = ""
    """What the user typed beside the thumb, if anything; stored as typed (it may name people)."""
    user: str = ""
    """The user's pseudonym ("user-" + 12 hex), set by `FeedbackStore.submit`; never a raw id."""
    item_id: str = ""
    """Id of the (prompt, reply); empty: `item_id_of(prompt, reply)`."""
    timestamp: str = field(default_factory=now_iso)
    """When the thumb was given, ISO 8601 UTC, for people to read: file order, not the clock, says which is latest."""
    schema_version: int = SCHEMA_VERSION
    """Layout version of the stored line."""

    def __post_init__(self) -> None:
        for name in ("prompt", "reply", "comment", "user", "item_id", "timestamp"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ValueError(f"Feedback.{name} must be a string, got {type(value).__name__} {value!r}")
        if self.thumb not in THUMBS:
            raise ValueError(f"thumb must be one of {list(THUMBS)}, got {self.thumb!r}")
        if self.user and not _PSEUDONYM.fullmatch(self.user):
            raise ValueError(
                f"Feedback.user {self.user!r} is not a pseudonym ('user-' + 12 hex digits): leave it empty and "
                "pass the raw id to FeedbackStore.submit(feedback, user_id=...), which pseudonymises it"
            )
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version!r} is not supported (this labkit reads {SCHEMA_VERSION}); "
                "upgrade labkit or convert the file"
            )
        try:
            datetime.fromisoformat(self.timestamp)
        except ValueError:
            raise ValueError(f"timestamp {self.timestamp!r} is not ISO 8601: use labels.now_iso()") from None
        if not self.item_id.strip():
            object.__setattr__(self, "item_id", item_id_of(self.prompt, self.reply))

    def to_json(self) -> dict:
        """A JSON-ready dict (the line `FeedbackStore` writes)."""
        return {
            "schema_version": self.schema_version,
            "item_id": self.item_id,
            "prompt": self.prompt,
            "reply": self.reply,
            "thumb": self.thumb,
            "comment": self.comment,
            "user": self.user,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_json(cls, d: dict) -> Feedback:
        """The feedback of a dict made by `to_json`; ValueError on a missing field, a bad value or another version."""
        if not isinstance(d, dict):
            raise ValueError(f"a feedback line must be a JSON object, got {type(d).__name__}")
        names = ("item_id", "prompt", "reply", "thumb", "comment", "user", "timestamp")
        missing = [n for n in names if n not in d]
        if missing:
            raise ValueError(f"feedback line is missing field(s) {missing}")
        if not d["user"]:
            raise ValueError("feedback line has no user pseudonym: it was not written by FeedbackStore.submit")
        return cls(**{n: d[n] for n in names}, schema_version=d.get("schema_version", SCHEMA_VERSION))


class FeedbackStore:
    """An append-only JSONL file of `Feedback`, pseudonymised with a salt kept beside it ("<store>.salt.json")."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.salt_path = self.path.with_name(self.path.name + ".salt.json")
        """The salt file: keep it private and with the store; losing it changes every pseudonym."""
        self.last_read_problems: list[str] = []
        """Lines the last `read` skipped, as "line N: why" messages."""

    def __repr__(self) -> str:
        return f"FeedbackStore({str(self.path)!r})"

    @property
    def lock(self) -> FileLock:
        """The file's lock (`labels.file_lock`): held by `submit`, `read` and the salt's creation."""
        return file_lock(self.path)

    def salt(self) -> str:
        """The store's salt, made on first use; an error (nothing made) if records exist but the salt is gone."""
        with self.lock:
            if not self.salt_path.exists():
                if self.path.exists() and self.path.stat().st_size:
                    raise FileNotFoundError(
                        f"{self.salt_path} is missing but {self.path} holds feedback: restore the salt file from a "
                        "backup; a new salt would give every returning user a new pseudonym (nothing was written)"
                    )
                note = "HMAC key of labkit.feedback.pseudonymise; keep it private and beside the store"
                text = json.dumps({"salt": secrets.token_hex(16), "created": now_iso(), "note": note}, indent=2)
                atomic_write(self.salt_path, text + "\n", mode=0o600)
            try:
                salt = json.loads(self.salt_path.read_text(encoding="utf-8"))["salt"]
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(
                    f"{self.salt_path} is not a labkit salt file ({err!r}): restore it from a backup"
                ) from None
        if not isinstance(salt, str) or not re.fullmatch(r"[0-9a-f]{32,}", salt):
            raise ValueError(f"{self.salt_path}: the salt must be at least 32 hex digits; restore it from a backup")
        return salt

    def pseudonym(self, user_id: str) -> str:
        """The pseudonym `submit` stores for `user_id` in this store."""
        _check_user_id(user_id)  # before the salt is made: a bad call leaves no file behind
        return pseudonymise(user_id, self.salt())

    def submit(self, feedback: Feedback, *, user_id: str) -> Feedback:
        """Pseudonymise `user_id` into `feedback.user` (replacing what it held), append it durably, return it.

        ValueError (nothing written) for an empty user id. The raw id is never written anywhere.
        """
        if not isinstance(feedback, Feedback):
            raise ValueError(f"feedback must be a Feedback, got {type(feedback).__name__}")
        with self.lock:
            stored = replace(feedback, user=self.pseudonym(user_id))
            append_line(self.path, (json.dumps(stored.to_json(), ensure_ascii=False) + "\n").encode("utf-8"))
        return stored

    def read(self) -> list[Feedback]:
        """Every complete, valid line in file order; bad lines are skipped, warned about (naming their line
        number) and listed in `last_read_problems`, by the rankings' reader (`labels.read_jsonl`).

        A last line without its newline is what a writer killed mid-write left (kept if it still parses);
        a line that does not parse or validate, or is longer than MAX_LINE_BYTES, is skipped.
        """
        self.last_read_problems = []
        if not self.path.exists():
            return []
        with self.lock:
            out, self.last_read_problems = read_jsonl(self.path, Feedback.from_json)
        warn_skipped(self.path, self.last_read_problems, "complete feedback is kept")
        return out


def feedback_pairs(feedback: Iterable[Feedback]) -> list[dict]:
    """Preference pairs from thumbs (rules 1-4 of the module docstring), in order of first appearance.

    Each pair is a dict with the `PAIR_COLUMNS`: prompt, chosen (an up reply), rejected (a down reply of
    the same prompt), margin 1.0, labeler (the pseudonyms whose votes decided the two replies, joined by
    ","), item_id ("<chosen's item_id>><rejected's item_id>"). Give feedback in file order (later
    corrects earlier). Feedback without a user (built by hand, never stored) counts as one user.
    """
    # 1. the last thumb per (user, prompt, reply); a key keeps the place of its first thumb
    latest: dict[tuple[str, str, str], Feedback] = {}
    for fb in feedback:
        latest[(fb.user, fb.prompt, fb.reply)] = fb

    # 2. majority per reply
    votes: dict[tuple[str, str], dict[str, Any]] = {}
    for fb in latest.values():
        v = votes.setdefault((fb.prompt, fb.reply), {"net": 0, "users": set(), "item_id": fb.item_id})
        v["net"] += 1 if fb.thumb == "up" else -1
        v["users"].add(fb.user)

    # 3. every up reply x every down reply of a prompt
    by_prompt: dict[str, dict[str, list[tuple[str, dict]]]] = {}
    for (prompt, reply), v in votes.items():
        if v["net"]:  # a tie says nothing
            side = by_prompt.setdefault(prompt, {"up": [], "down": []})
            side["up" if v["net"] > 0 else "down"].append((reply, v))
    return [
        {
            "prompt": prompt,
            "chosen": good,
            "rejected": bad,
            "margin": 1.0,
            "labeler": ",".join(sorted(g["users"] | b["users"])),
            "item_id": f"{g['item_id']}>{b['item_id']}",
        }
        for prompt, side in by_prompt.items()
        for good, g in side["up"]
        for bad, b in side["down"]
    ]


def to_dataset(pairs: Iterable[dict], seed: int = 0, test_fraction: float = 0.2):
    """Pairs (`feedback_pairs`) as a DatasetDict "train"/"test" split BY PROMPT, in `pairs.build_pairs`' layout.

    The split is build_pairs' rule: a seeded shuffle of the distinct prompts, the first ceil(f * n) held
    out, at least one kept for training, so held-out accuracy measures new prompts. The same features as
    build_pairs (`PAIR_COLUMNS`), so `datasets.concatenate_datasets` can join a split with ranking pairs;
    a prompt in both sets may then land in train on one side and test on the other: check before joining.
    """
    from datasets import Features, Value

    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}: e.g. 0.2 holds out 20% of the prompts")
    rows = list(pairs)
    if not rows:
        raise ValueError(
            "no pairs: a prompt gives a pair only when one reply got (mostly) thumbs up and another thumbs down; "
            "collect more feedback per prompt"
        )
    for i, row in enumerate(rows):
        missing = [c for c in PAIR_COLUMNS if c not in row]
        if missing:
            raise ValueError(f"pair {i} lacks key(s) {missing}: make pairs with feedback.feedback_pairs")
    features = Features({c: Value("float64" if c == "margin" else "string") for c in PAIR_COLUMNS})
    return split_dataset(rows, features, test_fraction, seed)


def pairs_per_hour(
    seconds_per_thumb: float = 5.0,
    seconds_per_ranking: float = cost.CostInputs.seconds_per_ranking,
    k: int = cost.CostInputs.completions_per_prompt,
    p_pair: float = 0.25,
    thumbs_per_prompt: float = 2.0,
    tie_fraction: float = 0.0,
) -> dict[str, float]:
    """Preference pairs per hour of clicking: {"ranking": ..., "thumbs": ...}. Every default is an ASSUMPTION.

        ranking  3600 / seconds_per_ranking x k(k-1)/2 x (1 - tie_fraction)
        thumbs   3600 / seconds_per_thumb / thumbs_per_prompt x p_pair

    Assumptions, none of them measured here:
      - seconds_per_thumb (5 s): reading a reply the user was reading anyway is not counted, only the
        click; it is the user's time, not a paid labeller's.
      - seconds_per_ranking and k (60 s, 4 replies): `cost.CostInputs`' defaults, also assumptions.
      - tie_fraction (0): the share of a ranking's k(k-1)/2 pairs that are ties, which give no pair.
      - thumbs_per_prompt (2) and p_pair (0.25): a prompt collects that many thumbs on different replies
        and gives one pair with probability p_pair, the chance they hold an up and a down (two thumbs,
        each up with probability q: 2q(1-q); q = 0.85 gives about 0.25). At most one pair per prompt,
        exact for two thumbs. Most prompts of a deployment get no thumb or one, so p_pair is often lower.
    Not counted either way: thumbs pairs are noisier (many users, no guideline) and biased toward the
    replies that provoke a click.
    benchmarks/feedback_worth.py measures, at the same two time assumptions, the pairs simulated users
    and labelers actually yield and the reward-model accuracy each buys (results/feedback_worth.json).
    """
    for name, value in (
        ("seconds_per_thumb", seconds_per_thumb),
        ("seconds_per_ranking", seconds_per_ranking),
        ("thumbs_per_prompt", thumbs_per_prompt),
    ):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    if k < 2:
        raise ValueError(f"k must be at least 2: a ranking compares replies (got {k!r})")
    if not 0.0 <= p_pair <= 1.0:
        raise ValueError(f"p_pair is a probability: give a value in [0, 1], got {p_pair!r}")
    if not 0.0 <= tie_fraction <= 1.0:
        raise ValueError(f"tie_fraction is a share of pairs: give a value in [0, 1], got {tie_fraction!r}")
    return {
        "ranking": 3600 / seconds_per_ranking * k * (k - 1) / 2 * (1 - tie_fraction),
        "thumbs": 3600 / seconds_per_thumb / thumbs_per_prompt * p_pair,
    }
