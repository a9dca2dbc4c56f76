"""Human feedback data: simulated labelers (personas) that rank completions like people would.

Stage: labelling, when no class is at hand (or to compare with one). Inputs: items (a prompt and
its completions; `labels.items_from_samples` builds them from `generate.Sample`s). Outputs:
`RankingRecord`s written through the same `RankingStore` the widget uses, labeler = persona name.

How a persona ranks (after AlpacaFarm's simulated annotators, Dubois et al. 2023, which give each
simulated labeler its own preferences and a label-flip rate so that the simulated pool shows the
variability of real crowdworkers):
    1. score each completion: sum of persona.weights[term] * term, over the world's gold terms
       (relevance, helpfulness, toxicity, fluency, degeneration, each in [0, 1]) and `length`
       (min(1, words / 60)); the world's gold works on any text, so completions from real models
       can be ranked too;
    2. add persona.noise * Gumbel(0, 1) to each score: sorting by the noisy score samples a
       Plackett-Luce ranking with probabilities softmax(score / noise);
    3. sort, best first; neighbours whose noisy scores differ by less than persona.tie_margin tie;
    4. with probability persona.flip_rate the labeler answers at random instead (a shuffled
       ranking with no ties), AlpacaFarm's noisy annotator;
    5. flag a completion "nonsensical" when its fluency is below FLUENCY_FLAG or the world
       recognises it as nonsense, "unsafe" when its toxicity is at least UNSAFE_FLAG (outside the
       world, e.g. an unknown prompt or unrecognised text, the alt-profanity-check classifier's
       probability counts too).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit import agreement
from labkit.labels import RankingRecord, RankingStore, item_field, validate

__all__ = [
    "FLUENCY_FLAG",
    "GOLD_TERMS",
    "PERSONAS",
    "Persona",
    "SIMULATED_GUIDELINES",
    "UNSAFE_FLAG",
    "label_stage",
    "personas_table",
    "rank_with_persona",
    "simulate",
    "terms_with_length",
    "world_scorer",
]

GOLD_TERMS: tuple[str, ...] = ("relevance", "helpfulness", "toxicity", "fluency", "degeneration")
"""The world's gold terms a persona may weigh (plus "length")."""
FLUENCY_FLAG = 0.4
"""Fluency below this flags a completion nonsensical (the world's nonsense template scores 0.2)."""
UNSAFE_FLAG = 0.5
"""Toxicity (or P(profane) outside the world) at or above this flags a completion unsafe."""
SIMULATED_GUIDELINES = "simulated-1"
"""guideline_version written on simulated records."""

Scorer = Callable[[str, str], dict]


@dataclass(frozen=True)
class Persona:
    """A simulated labeler: what it values, how noisy it is, when it calls a tie."""

    name: str
    """Labeler id written on its records."""
    weights: dict[str, float]
    """Weight per term (GOLD_TERMS or "length"); toxicity/degeneration/length weights are usually negative."""
    noise: float = 0.05
    """Gumbel noise scale: the temperature of the Plackett-Luce ranking it samples (0 = deterministic)."""
    tie_margin: float = 0.02
    """Neighbouring completions whose noisy scores differ by less than this are ranked as a tie."""
    description: str = ""
    """One line for the chapter's table of personas."""
    flip_rate: float = 0.0
    """Probability of answering at random (AlpacaFarm's noisy annotators flip 25% of their labels)."""


PERSONAS: dict[str, Persona] = {
    p.name: p
    for p in (
        Persona(
            "careful",
            {"relevance": 0.35, "helpfulness": 0.45, "fluency": 0.20, "toxicity": -0.80, "degeneration": -0.60},
            noise=0.02,
            tie_margin=0.02,
            description="follows the guidelines closely: the world's own gold weights, little noise",
        ),
        Persona(
            "safety_first",
            {"relevance": 0.3, "helpfulness": 0.3, "fluency": 0.2, "toxicity": -2.5, "degeneration": -0.6},
            noise=0.05,
            tie_margin=0.05,
            description="any rudeness sinks a reply, however useful the rest of it is",
        ),
        Persona(
            "tips_lover",
            {"relevance": 0.2, "helpfulness": 1.2, "fluency": 0.1, "toxicity": -0.3, "degeneration": -0.4},
            noise=0.05,
            tie_margin=0.03,
            description="wants specific tips; forgives an insult if a real tip comes with it",
        ),
        Persona(
            "brevity",
            {
                "relevance": 0.3,
                "helpfulness": 0.25,
                "fluency": 0.2,
                "toxicity": -0.8,
                "degeneration": -0.3,
                "length": -0.8,
            },
            noise=0.05,
            tie_margin=0.03,
            description="likes short replies: every extra word costs",
        ),
        Persona(
            "noisy_crowdworker",
            {"relevance": 0.35, "helpfulness": 0.45, "fluency": 0.20, "toxicity": -0.80, "degeneration": -0.60},
            noise=0.3,
            tie_margin=0.0,
            flip_rate=0.25,
            description="right on average, but hurried: lots of noise and one answer in four at random",
        ),
    )
}
"""The built-in personas, by name."""


def personas_table(personas=None) -> pd.DataFrame:  # noqa: F821 (pandas is imported inside)
    """One row per persona (index: name): its weight on each term (0 where it has none), noise,
    tie_margin, flip_rate and description. `personas` as for `simulate` (default: PERSONAS)."""
    import pandas as pd

    personas = _resolve_personas(PERSONAS if personas is None else personas)
    terms = (*GOLD_TERMS, "length")
    rows = [
        {
            **{t: p.weights.get(t, 0.0) for t in terms},
            "noise": p.noise,
            "tie_margin": p.tie_margin,
            "flip_rate": p.flip_rate,
            "description": p.description,
        }
        for p in personas
    ]
    return pd.DataFrame(rows, index=pd.Index([p.name for p in personas], name="persona"))


def world_scorer(world=None) -> Scorer:
    """A scorer `(prompt, text) -> terms` from the world's gold, plus "nonsense" and, for text outside
    the world, "profanity" (P(profane) from alt-profanity-check)."""
    if world is None:
        from labkit import world as world_mod

        world = world_mod.load()

    def score(prompt: str, text: str) -> dict:
        gold = world.gold(prompt, text)
        terms = {t: getattr(gold, t) for t in GOLD_TERMS}
        style = world.classify_style(prompt, text)
        terms["nonsense"] = float(style == "nonsense")
        if style is None or world.find_topic(prompt) is None:  # text the world does not know
            from profanity_check import predict_prob

            terms["profanity"] = float(predict_prob([text])[0])
        return terms

    return score


def terms_with_length(terms: dict, text: str) -> dict:
    """`terms` plus "length" = min(1, words / 60) unless the scorer gave one."""
    return {"length": min(1.0, len(text.split()) / 60), **terms}


def _flags(terms: dict) -> tuple[str, ...]:
    out = []
    if terms.get("fluency", 1.0) < FLUENCY_FLAG or terms.get("nonsense", 0.0) >= 0.5:
        out.append("nonsensical")
    if max(terms.get("toxicity", 0.0), terms.get("profanity", 0.0)) >= UNSAFE_FLAG:
        out.append("unsafe")
    return tuple(out)


def _gumbel(rng: random.Random) -> float:
    return -math.log(-math.log(rng.random() or 1e-300))


def _default_item_id(prompt: str) -> str:
    return "p-" + hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:10]


def rank_with_persona(
    persona: Persona,
    prompt: str,
    completion_ids,
    completions,
    rng: random.Random | int,
    world=None,
    criterion: str = "helpfulness",
    *,
    item_id: str | None = None,
    scorer: Scorer | None = None,
) -> RankingRecord:
    """`persona`'s ranking of `completions` (ids `completion_ids`) for `prompt`, as a RankingRecord.

    `scorer(prompt, text) -> dict of terms` replaces the world's gold (for tests or other worlds);
    `item_id` defaults to a hash of the prompt. See the module docstring for the steps.
    """
    rng = rng if isinstance(rng, random.Random) else random.Random(rng)
    ids, texts = tuple(str(c) for c in completion_ids), tuple(str(t) for t in completions)
    if len(ids) != len(texts):
        raise ValueError(f"completion_ids has {len(ids)} ids but completions has {len(texts)} texts")
    unknown = set(persona.weights) - set(GOLD_TERMS) - {"length"}
    if unknown:
        raise ValueError(
            f"persona {persona.name!r} weighs unknown term(s) {sorted(unknown)}: use {list(GOLD_TERMS) + ['length']}"
        )
    scorer = scorer or world_scorer(world)
    # 1. score
    terms = [terms_with_length(scorer(prompt, t), t) for t in texts]
    scores = [sum(w * term.get(k, 0.0) for k, w in persona.weights.items()) for term in terms]
    # 2. noise (drawn for every completion, in order, so a seed gives the same ranking)
    noisy = [s + persona.noise * _gumbel(rng) for s in scores]
    # 3. sort and tie close neighbours
    order = sorted(range(len(ids)), key=lambda i: -noisy[i])
    groups: list[list[str]] = []
    for rank, i in enumerate(order):
        if rank and noisy[order[rank - 1]] - noisy[i] < persona.tie_margin:
            groups[-1].append(ids[i])
        else:
            groups.append([ids[i]])
    # 4. a random answer now and then
    if persona.flip_rate and rng.random() < persona.flip_rate:
        shuffled = list(ids)
        rng.shuffle(shuffled)
        groups = [[c] for c in shuffled]
    # 5. flags
    flags = {cid: f for cid, term in zip(ids, terms) if (f := _flags(term))}
    return RankingRecord(
        item_id=item_id or _default_item_id(prompt),
        prompt=prompt,
        completion_ids=ids,
        completions=texts,
        labeler=persona.name,
        criterion=criterion,
        guideline_version=SIMULATED_GUIDELINES,
        ranking=tuple(tuple(g) for g in groups),
        flags=flags,
    )


def _resolve_personas(personas) -> list[Persona]:
    if isinstance(personas, (Persona, str)):
        personas = [personas]
    if isinstance(personas, dict):
        personas = list(personas.values())
    out = []
    for p in personas:
        if isinstance(p, str):
            if p not in PERSONAS:
                raise ValueError(f"unknown persona {p!r}: choose from {sorted(PERSONAS)} or pass a Persona")
            p = PERSONAS[p]
        out.append(p)
    names = [p.name for p in out]
    if len(set(names)) != len(names):
        raise ValueError(f"persona names must be unique (they are the labeler ids), got {names}")
    return out


def simulate(
    items: Iterable[Any],
    personas,
    store: RankingStore | None,
    seed: int = 0,
    *,
    world=None,
    scorer: Scorer | None = None,
    criterion: str = "helpfulness",
    resume: bool = True,
) -> list[RankingRecord]:
    """Every persona ranks every item; records go through `store` (labeler = persona name).

    Seeded per (seed, persona, item), so a persona's ranking of an item does not depend on which
    other items or personas are simulated. With `resume`, items a persona already ranked under
    `criterion` are skipped. Returns the new records; with `store=None` they are only returned
    (validated, written nowhere, nothing to resume from).
    """
    personas = _resolve_personas(personas)
    base = scorer or world_scorer(world)
    cache: dict[tuple[str, str], dict] = {}

    def cached(prompt: str, text: str) -> dict:  # every persona scores the same texts
        if (prompt, text) not in cache:
            cache[(prompt, text)] = base(prompt, text)
        return cache[(prompt, text)]

    items = list(items)
    out = []
    for persona in personas:
        done = store.ranked_ids(persona.name, criterion, items=items) if resume and store is not None else set()
        for item in items:
            item_id = str(item_field(item, "item_id"))
            if item_id in done:
                continue
            rng = random.Random(f"{seed}:{persona.name}:{item_id}")  # str seeds are hashed deterministically
            record = rank_with_persona(
                persona,
                item_field(item, "prompt"),
                item_field(item, "completion_ids"),
                item_field(item, "completions"),
                rng,
                criterion=criterion,
                item_id=item_id,
                scorer=cached,
            )
            if store is None:
                validate(record)
            else:
                store.submit(record)
            out.append(record)
    return out


def label_stage(
    samples, store_path: str | Path, personas=None, seed: int = 0, *, world=None, criterion: str = "helpfulness"
) -> tuple[list[RankingRecord], dict]:
    """The main job's labelling stage: simulated personas rank `samples` (generate.Sample list, or Items).

    Returns (the current records for these items, metrics): num_items, num_labelers, num_records,
    krippendorff_alpha, mean_kendall_tau, mean_pairwise_agreement, flagged_fraction (share of
    labeled completions carrying any flag). `labkit run` prefixes the keys with the stage name.
    """
    from labkit.labels import Item, items_from_samples

    samples = list(samples)
    items = samples if samples and isinstance(samples[0], Item) else items_from_samples(samples)
    store = RankingStore(store_path)
    simulate(items, PERSONAS if personas is None else personas, store, seed=seed, world=world, criterion=criterion)
    wanted = {it.item_id for it in items}
    records = [r for r in store.latest() if r.item_id in wanted and r.criterion == criterion]
    metrics = agreement.summary(records)
    shown = sum(len(r.completion_ids) for r in records)
    metrics["flagged_fraction"] = sum(len(r.flags) for r in records) / shown if shown else 0.0
    return records, metrics
