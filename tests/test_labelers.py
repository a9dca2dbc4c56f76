"""Tests of simulated labelers: persona maths on a stub scorer, then ranking the world's replies."""

from __future__ import annotations

import math
import random

import pytest

from labkit import labelers, labels, world
from labkit.labelers import Persona
from labkit.labels import RankingStore

IDS = ("a", "b", "c")
TERMS = {  # a stub scorer's terms per text
    "good": {"relevance": 1.0, "helpfulness": 1.0, "toxicity": 0.0, "fluency": 1.0, "degeneration": 0.0},
    "meh": {"relevance": 1.0, "helpfulness": 0.2, "toxicity": 0.0, "fluency": 1.0, "degeneration": 0.0},
    "rude": {"relevance": 1.0, "helpfulness": 0.9, "toxicity": 1.0, "fluency": 1.0, "degeneration": 0.0},
    "salad": {"relevance": 0.0, "helpfulness": 0.0, "toxicity": 0.0, "fluency": 0.2, "degeneration": 0.0},
}


def stub(prompt, text):
    return dict(TERMS[text.split()[0]])


def rank(persona, texts, seed=0, **kw):
    return labelers.rank_with_persona(
        persona, "q", IDS[: len(texts)], texts, random.Random(seed), item_id="i", scorer=stub, **kw
    )


def test_noiseless_persona_ranks_by_weighted_terms():
    """With no noise the ranking is the order of the weighted scores; flags follow the terms."""
    helpful = Persona("h", {"helpfulness": 1.0}, noise=0.0, tie_margin=0.0)
    safe = Persona("s", {"helpfulness": 1.0, "toxicity": -2.0}, noise=0.0, tie_margin=0.0)
    texts = ("meh", "good", "rude")
    assert (("b",), ("c",), ("a",)) == rank(helpful, texts).ranking
    assert (("b",), ("a",), ("c",)) == rank(safe, texts).ranking
    assert {"c": ("unsafe",)} == rank(safe, texts).flags
    assert {"a": ("nonsensical",)} == rank(safe, ("salad", "good")).flags


def test_tie_margin_groups_close_scores():
    """Completions whose scores differ by less than tie_margin form one tied group."""
    p = Persona("t", {"helpfulness": 1.0}, noise=0.0, tie_margin=0.15)
    assert (("b", "c"), ("a",)) == rank(p, ("meh", "good", "rude")).ranking


def test_length_term_favours_short_replies():
    """A negative length weight prefers the shorter of two otherwise equal replies."""
    p = Persona("short", {"helpfulness": 1.0, "length": -1.0}, noise=0.0, tie_margin=0.0)
    assert (("b",), ("a",)) == rank(p, ("good " + "word " * 40, "good tip.")).ranking


def test_gumbel_noise_samples_plackett_luce():
    """P(first) of two completions equals softmax(score / noise), within Monte-Carlo error."""
    p = Persona("n", {"helpfulness": 1.0}, noise=0.5, tie_margin=0.0)
    rng = random.Random(0)
    n = 3000
    firsts = sum(
        labelers.rank_with_persona(p, "q", ("a", "b"), ("good", "meh"), rng, scorer=stub).ranking[0] == ("a",)
        for _ in range(n)
    )
    expected = 1 / (1 + math.exp(-(1.0 - 0.2) / 0.5))
    assert expected == pytest.approx(firsts / n, abs=0.03)


def test_flip_rate_one_answers_at_random():
    """flip_rate 1 gives shuffled strict rankings, each order appearing."""
    p = Persona("f", {"helpfulness": 1.0}, noise=0.0, tie_margin=0.5, flip_rate=1.0)
    orders = {rank(p, ("good", "meh", "rude"), seed=s).ranking for s in range(60)}
    assert 6 == len(orders) and all(len(g) == 1 for r in orders for g in r)


def test_unknown_term_and_persona_rejected(tmp_path):
    """A persona weighing an unknown term, or an unknown persona name, raises ValueError."""
    with pytest.raises(ValueError, match="unknown term"):
        rank(Persona("x", {"politeness": 1.0}), ("good", "meh"))
    with pytest.raises(ValueError, match="unknown persona"):
        labelers.simulate([], ["nobody"], RankingStore(tmp_path / "r.jsonl"), scorer=stub)


def test_builtin_personas():
    """There are at least three built-in personas, keyed by name, weighing only known terms."""
    assert len(labelers.PERSONAS) >= 3
    assert all(name == p.name for name, p in labelers.PERSONAS.items())
    allowed = set(labelers.GOLD_TERMS) | {"length"}
    assert all(set(p.weights) <= allowed for p in labelers.PERSONAS.values())


def test_personas_table_has_a_row_per_persona():
    """The table lists each persona's weights (0 where unused), noise, tie margin, flip rate and description."""
    table = labelers.personas_table()
    assert list(labelers.PERSONAS) == list(table.index)
    assert [*labelers.GOLD_TERMS, "length", "noise", "tie_margin", "flip_rate", "description"] == list(table.columns)
    assert (-0.8, 0.0) == (table.loc["brevity", "length"], table.loc["careful", "length"])
    assert 0.25 == table.loc["noisy_crowdworker", "flip_rate"]
    one = labelers.personas_table([Persona("solo", {"helpfulness": 1.0}, description="only tips")])
    assert (1.0, 0.0, "only tips") == tuple(one.loc["solo", ["helpfulness", "toxicity", "description"]])


@pytest.fixture(scope="module")
def world_items():
    """Six held-out prompts, one reply in each style; completion id = style."""
    w = world.load()
    rng = random.Random(1)
    items = [
        labels.Item(p.id, p.text, world.STYLES, tuple(w.reply(p, s, rng) for s in world.STYLES))
        for p in w.prompts("heldout")[:6]
    ]
    return items


def test_personas_rank_world_replies(world_items):
    """Careful puts helpful first and flags nonsense/rude; safety_first puts rude last."""
    w = world.load()
    for item in world_items:
        careful = labelers.rank_with_persona(
            labelers.PERSONAS["careful"],
            item.prompt,
            item.completion_ids,
            item.completions,
            random.Random(0),
            world=w,
            item_id=item.item_id,
        )
        safety = labelers.rank_with_persona(
            labelers.PERSONAS["safety_first"],
            item.prompt,
            item.completion_ids,
            item.completions,
            random.Random(0),
            world=w,
            item_id=item.item_id,
        )
        assert "helpful" in careful.ranking[0]
        assert "rude" in safety.ranking[-1]
        assert "unsafe" in careful.flags["rude"]
        assert "nonsensical" in careful.flags["nonsense"]
        assert "helpful" not in careful.flags


def test_unsafe_flag_outside_world():
    """Profanity in a reply to a prompt the world does not know is flagged unsafe by the classifier."""
    rec = labelers.rank_with_persona(
        labelers.PERSONAS["careful"],
        "What is the capital of Peru?",
        ("x", "y"),
        ("Lima is the capital of Peru.", "Who cares, you f***ing moron, shut the hell up."),
        random.Random(0),
    )
    assert "unsafe" in rec.flags.get("y", ())
    assert "unsafe" not in rec.flags.get("x", ())


def test_simulate_seeded_resumable_and_written(tmp_path, world_items):
    """simulate writes one record per (persona, item), labeler = persona; same seed, same rankings; resume skips."""
    personas = ["careful", "noisy_crowdworker", "brevity"]
    a, b = RankingStore(tmp_path / "a.jsonl"), RankingStore(tmp_path / "b.jsonl")
    ra = labelers.simulate(world_items, personas, a, seed=7)
    rb = labelers.simulate(list(reversed(world_items)), personas[::-1], b, seed=7)
    assert 18 == len(ra) == len(a.read())
    assert {(r.labeler, r.item_id): r.ranking for r in ra} == {(r.labeler, r.item_id): r.ranking for r in rb}
    assert set(personas) == {r.labeler for r in a.read()}
    assert [] == labelers.simulate(world_items, personas, a, seed=7)
    assert 18 == len(a.read())


def test_label_stage_metrics(tmp_path, world_items):
    """label_stage returns the current records and the headline metrics, alpha positive for these personas."""
    samples = [
        {"prompt_id": it.item_id, "prompt": it.prompt, "completion_id": k, "text": t}
        for it in world_items
        for k, t in enumerate(it.completions)
    ]
    records, metrics = labelers.label_stage(samples, tmp_path / "r.jsonl", personas=["careful", "safety_first"])
    assert 12 == len(records)
    assert 6 == metrics["num_items"] and 2 == metrics["num_labelers"]
    assert 0.5 < metrics["krippendorff_alpha"] <= 1.0
    assert 2 / 6 == pytest.approx(metrics["flagged_fraction"])
