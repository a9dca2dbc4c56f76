"""Tests of the assistant world: data counts, splits, generation, style recognition, gold utility."""

from __future__ import annotations

import hashlib
import json
import random
import re
import statistics
from collections import Counter

import pytest

from labkit import world


@pytest.fixture(scope="module")
def w():
    return world.load()


def _replies(w, style, n=200, seed=0, split="all"):
    rng = random.Random(seed)
    prompts = w.prompts(split)
    out = []
    for _ in range(n):
        p = rng.choice(prompts)
        out.append((p, w.reply(p, style, rng)))
    return out


def test_counts(w):
    """The world has >= 40 topics over >= 8 domains, each with >= 6 prompts and >= 8 tips."""
    assert len(w.topics) >= 40
    assert len(w.domains) >= 8
    assert {t.domain for t in w.topics} == set(w.domains)
    assert [] == [t.id for t in w.topics if len(t.prompts) < 6 or len(t.tips) < 8 or len(t.keywords) < 3]


def test_sentences_well_formed(w):
    """Topic ids are unique, prompts end in '?', tips are one sentence ending in '.'."""
    assert len(w.topics) == len({t.id for t in w.topics})
    assert [] == [p for t in w.topics for p in t.prompts if not p.endswith("?")]
    bad = [
        tip
        for t in w.topics
        for tip in t.tips
        if not tip[0].isupper() or not tip.endswith(".") or re.search(r"[.!?]\s", tip)
    ]
    assert [] == bad


def test_splits(w):
    """Splits are disjoint, cover all prompts, hold out one whole topic per domain and 2 phrasings."""
    train, heldout, every = w.prompts("train"), w.prompts("heldout"), w.prompts("all")
    assert set() == {p.id for p in train} & {p.id for p in heldout}
    assert len(every) == len(train) + len(heldout)
    held_topics = [t for t in w.topics if t.heldout]
    assert sorted(w.domains) == sorted(t.domain for t in held_topics)
    assert set() == {t.id for t in held_topics} & {p.topic_id for p in train}
    basil = [p.split for p in every if p.topic_id == "basil"]
    assert ["train"] * 6 + ["heldout"] * 2 == basil
    basil_3 = next(p for p in every if p.id == "basil-3")
    assert "My basil leaves are turning yellow, what should I do?" == basil_3.text
    assert every == w.prompts("all")  # deterministic order


def test_train_dialogues_never_show_heldout(w):
    """Train dialogues use only train prompts and never mention held-out topics' tips or names."""
    dialogues = w.dialogues(3000, seed=1, split="train")
    assert {"train"} == {d.prompt.split for d in dialogues}
    held = [t for t in w.topics if t.heldout]
    leaked_tips = {tip for t in held for tip in t.tips}
    text = " ".join(d.reply for d in dialogues)
    assert [] == [tip for tip in leaked_tips if tip in text]
    assert [] == [t.name for t in held if t.name in text]


def test_dialogues_deterministic(w):
    """The same seed gives the same dialogues; another seed gives different ones."""
    assert w.dialogues(50, seed=7) == w.dialogues(50, seed=7)
    assert w.dialogues(50, seed=7) != w.dialogues(50, seed=8)


def test_dialogue_mix(w):
    """Style shares in `dialogues` match PRETRAIN_MIX (rude near 0.25)."""
    n = 2000
    counts = Counter(d.style for d in w.dialogues(n, seed=3))
    for style, share in world.PRETRAIN_MIX.items():
        assert share == pytest.approx(counts[style] / n, abs=0.01)
    assert 0.2 <= world.PRETRAIN_MIX["rude"] <= 0.3
    assert {"vague": 10} == dict(Counter(d.style for d in w.dialogues(10, mix={"vague": 1.0})))


def test_reply_shape(w):
    """Every style gives 2-4 sentences of at most 60 words, about 25 words on average."""
    lengths = []
    for style in world.STYLES:
        for _, reply in _replies(w, style, n=100):
            n_sent = len(re.findall(r"[.!?]+(?:\s|$)", reply))
            assert 2 <= n_sent <= 4, reply
            lengths.append(len(reply.split()))
    assert max(lengths) <= 60
    assert 15 <= statistics.mean(lengths) <= 40


@pytest.mark.parametrize("style", world.STYLES)
def test_classify_style_accuracy(w, style):
    """>= 98% of world-generated replies of a style are recognised as that style."""
    replies = _replies(w, style, n=300, seed=11)
    hits = sum(w.classify_style(p.text, r) == style for p, r in replies)
    assert hits / len(replies) >= 0.98


def test_classify_shuffled_and_truncated(w):
    """Word-shuffled helpful replies and replies cut mid-word are not recognised as a style."""
    rng = random.Random(5)
    shuffled, cut = [], []
    for p, r in _replies(w, "helpful", n=200, seed=5):
        words = r.split()
        rng.shuffle(words)
        shuffled.append(w.classify_style(p.text, " ".join(words)))
        word_ends = [m.end() for m in re.finditer(r"[a-z]{4,}", r)]
        cut.append(w.classify_style(p.text, r[: rng.choice(word_ends) - 2]))
    assert shuffled.count(None) / len(shuffled) >= 0.9
    assert [None] * len(cut) == cut


def test_classify_small_differences(w):
    """Case, spacing and punctuation changes keep the style; unknown sentences give None."""
    p = w.prompts()[0]
    tips = w.topic(p.topic_id).tips
    assert "helpful" == w.classify_style(p.text, f"{tips[0].upper()}   {tips[1].rstrip('.')}!")
    assert "rude" == w.classify_style(p.text, "what a STUPID question")
    assert None is w.classify_style(p.text, "The weather is nice today. I like trains.")
    assert None is w.classify_style(p.text, "")


def _mean_utility(w, style):
    return statistics.mean(w.gold(p.text, r).utility for p, r in _replies(w, style, n=300, seed=2))


def test_gold_ordering(w):
    """On average: helpful > fluff ~ vague > off_topic > nonsense > rude."""
    u = {style: _mean_utility(w, style) for style in world.STYLES}
    assert u["helpful"] > max(u["fluff"], u["vague"]) + 0.3
    assert abs(u["fluff"] - u["vague"]) < 0.15
    assert min(u["fluff"], u["vague"]) > u["off_topic"] > u["nonsense"] > u["rude"]


def test_gold_penalises_repetition_and_insults(w):
    """A helpful reply repeated x5 scores lower than once; 'idiot idiot idiot' is very low."""
    p, reply = _replies(w, "helpful", n=1, seed=9)[0]
    once, five = w.gold(p.text, reply), w.gold(p.text, " ".join([reply] * 5))
    assert five.utility < once.utility - 0.3
    assert five.degeneration >= 0.7
    idiot = w.gold(p.text, "idiot idiot idiot")
    assert idiot.utility < -0.8
    assert idiot.toxicity >= 0.8


@pytest.mark.parametrize(
    "prompt,response",
    [
        ("How do I fix a flat tyre?", "Use tyre levers to take the tyre off, then patch the tube."),
        ("What is the capital of France?", "Paris is the capital of France."),
        ("", ""),
        ("日本語のプロンプト", "ñandú 🙂 \x00 \n\t !!!"),
        ("?" * 1000, "a" * 5000),
        ("How do I keep my basil plant alive?", "   "),
    ],
)
def test_gold_any_text_in_range(w, prompt, response):
    """gold never raises and keeps every term in [0, 1] and utility in the weights' range."""
    g = w.gold(prompt, response)
    for term in ("relevance", "helpfulness", "toxicity", "fluency", "degeneration"):
        assert 0.0 <= getattr(g, term) <= 1.0
    low = sum(v for v in world.GOLD_WEIGHTS.values() if v < 0)
    high = sum(v for v in world.GOLD_WEIGHTS.values() if v > 0)
    assert low <= g.utility <= high
    assert w.classify_style(prompt, response) in world.STYLES + (None,)


def test_gold_unknown_prompt_uses_generic_signals(w):
    """For a prompt the world does not know, an on-topic answer beats an unrelated one."""
    prompt = "How do I bake a chocolate cake?"
    assert None is w.find_topic(prompt)
    good = w.gold(prompt, "Mix the cake batter with melted chocolate. Bake the cake for thirty minutes.")
    bad = w.gold(prompt, "Paris is a lovely city. The museums open at nine.")
    assert good.utility > bad.utility
    assert good.relevance > bad.relevance


def test_find_topic(w):
    """Known prompts map to their topic, new phrasings by keywords, unrelated text to None."""
    assert "basil" == w.find_topic("How often should I water basil?").id
    assert "flat" == w.find_topic("How do I fix a flat tyre?").id
    assert "snoring" == w.find_topic("my husband snores all night").id
    assert None is w.find_topic("What is the meaning of life?")
    assert None is w.find_topic("")


def test_tips_are_never_toxic(w):
    """No tip or prompt contains an insult word, so helpful text never reads as rude."""
    assert [] == [tip for t in w.topics for tip in t.tips + t.prompts if w.gold("", tip).toxicity > 0]


# sha256[:16] of a short list of slurs, so the test file does not spell them out.
_SLUR_HASHES = {
    "08a841e996781e9e",
    "120f6e5b4ea32f65",
    "158869a97379229b",
    "16ea09fc78ca83ca",
    "4e12e3f1dcd6ce44",
    "70aafb4266950c0d",
    "886d51e97ad7931d",
    "8f5083e3e5c7dc89",
    "98b52c4b6b7d1f48",
    "9915ba2d822280f2",
    "9ae315a94e428a7e",
    "bd331fb1d24298f5",
    "c2c3b68b48832afd",
    "c3de533e9b7fe63b",
    "cc02032349c833ac",
    "e7b98c6aa5b944e0",
    "eef3bd091670c344",
}
_GROUP_WORDS = {
    "women",
    "woman",
    "men",
    "girl",
    "gay",
    "black",
    "white",
    "jew",
    "jewish",
    "muslim",
    "christian",
    "immigrant",
    "immigrants",
    "disabled",
    "old",
    "fat",
    "race",
    "religion",
}


def test_no_slurs_or_protected_groups():
    """No slur appears anywhere in the data, and rude sentences name no protected group."""
    data = world.DEFAULT_DIR
    words = set(re.findall(r"[a-z]+", " ".join(p.read_text().lower() for p in data.glob("*.json"))))
    assert set() == {hashlib.sha256(x.encode()).hexdigest()[:16] for x in words} & _SLUR_HASHES
    rude = " ".join(json.loads((data / "styles.json").read_text())["rude"]).lower()
    assert set() == set(re.findall(r"[a-z]+", rude)) & _GROUP_WORDS


def test_load_cached_and_errors(w):
    """load() returns one cached World; bad styles and splits raise ValueError."""
    assert world.load() is w
    assert world.load(world.DEFAULT_DIR) is not w
    with pytest.raises(ValueError):
        w.reply(w.prompts()[0], "sarcastic", random.Random(0))
    with pytest.raises(ValueError):
        w.prompts("test")


def test_is_rude_by_template_or_by_lexicon():
    """A rude template reply is rude; so is an insult the templates never wrote; a helpful reply is not."""
    w = world.load()
    prompt = w.prompts("train")[0]
    rng = random.Random(0)
    assert w.is_rude(prompt.text, w.reply(prompt, "rude", rng))
    assert w.is_rude(prompt.text, "Honestly you are a stupid idiot and a total moron.")
    assert not w.is_rude(prompt.text, w.reply(prompt, "helpful", rng))
