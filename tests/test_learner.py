"""The learner's rankings: items worth ranking, where they are read from, and how they join the pairs."""

from __future__ import annotations

import dataclasses

import pytest

from labkit import generate, labelers, labels, learner, pairs, shipped, world


@pytest.fixture(scope="module")
def w():
    return world.load()


def styled_samples(w, styles_per_prompt: dict[int, tuple[str, ...]]) -> list[generate.Sample]:
    """Samples whose replies the world wrote in the given styles (prompt index -> one style per reply)."""
    import random

    prompts = w.prompts("train")
    out = []
    for i, styles in styles_per_prompt.items():
        prompt = prompts[i]
        for c, style in enumerate(styles):
            text = w.reply(prompt, style, random.Random(100 * i + c))
            out.append(generate.Sample(prompt.id, prompt.text, c, text, len(text.split())))
    return out


def test_pick_items_prefers_items_whose_replies_span_styles(w):
    """Items with a helpful reply and several styles come first; all-nonsense items come last."""
    samples = styled_samples(
        w,
        {
            0: ("nonsense",) * 4,
            1: ("helpful", "rude", "vague", "fluff"),
            2: ("fluff", "fluff", "nonsense", "nonsense"),
            3: ("helpful", "nonsense", "rude", "rude"),
        },
    )
    choice = learner.pick_items(samples, 2, world=w)
    assert [w.prompts("train")[1].id, w.prompts("train")[3].id] == [it.item_id for it in choice.items]
    assert 4 == choice.candidates and "helpful" in choice.rule


def test_pick_items_by_reward_spread_without_a_world(w):
    """Without a world, the items whose replies' rewards spread the most are picked."""
    samples = styled_samples(w, {0: ("helpful",) * 4, 1: ("helpful", "helpful", "helpful", "vague")})
    longest = lambda prompts, replies: [float(len(r)) for r in replies]  # noqa: E731
    spreads = {}
    for item in labels.items_from_samples(samples):
        lengths = [len(t) for t in item.completions]
        spreads[item.item_id] = max(lengths) - min(lengths)
    choice = learner.pick_items(samples, 1, reward=longest)
    assert max(spreads, key=spreads.get) == choice.items[0].item_id
    with pytest.raises(ValueError, match="at least 1"):
        learner.pick_items(samples, 0, world=w)


def test_pick_items_is_the_same_for_every_learner_of_a_class(w):
    """The choice depends only on the samples and the seed: two laptops get the same items."""
    samples = styled_samples(w, {i: ("helpful", "rude", "vague", "nonsense") for i in range(6)})
    first = learner.pick_items(samples, 3, world=w, seed=4)
    again = learner.pick_items(list(samples), 3, world=w, seed=4)
    assert [it.item_id for it in first.items] == [it.item_id for it in again.items]


def ranked_items(n: int, labeler: str, seed: int = 0) -> list[labels.RankingRecord]:
    """`labeler`'s rankings (as the careful persona ranks) of the first `n` shipped items, in memory."""
    samples = shipped.load_samples()
    items = labels.items_from_samples(samples)[:n]
    persona = dataclasses.replace(labelers.PERSONAS["careful"], name=labeler)
    return labelers.simulate(items, [persona], None, seed=seed)


def test_learner_records_reads_the_learner_and_the_class_file(tmp_path):
    """Records come from my_rankings.jsonl and class_merged.jsonl; the learner's own file wins its keys."""
    assert [] == learner.learner_records(tmp_path)
    mine = ranked_items(3, "you")
    store = labels.RankingStore(tmp_path / learner.LEARNER_FILE)
    for r in mine:
        store.submit(r)
    classmates = ranked_items(3, "ana")
    stale = dataclasses.replace(mine[0], ranking=mine[0].ranking[::-1])  # an older ranking of the learner's
    merged = labels.RankingStore(tmp_path / learner.CLASS_FILE)
    for r in [*classmates, stale]:
        merged.submit(r)
    got = learner.learner_records(tmp_path)
    assert 6 == len(got)
    assert mine[0].ranking == next(r for r in got if r.key == mine[0].key).ranking


def test_training_pairs_adds_weighted_learner_pairs_to_train_only():
    """Learner pairs are repeated `weight` times in train, never in test, and test-prompt pairs are dropped."""
    shipped_records = shipped.load_rankings()
    base, info0 = learner.training_pairs(shipped_records, [], seed=0)
    assert 0 == info0["learner_pairs"]
    test_prompts = set(base["test"]["prompt"])
    mine = ranked_items(30, "you")
    mixed, info = learner.training_pairs(shipped_records, mine, weight=3, seed=0)
    mine_pairs = pairs.build_pairs(mine, test_fraction=0.0)["train"]
    kept = [row for row in mine_pairs if row["prompt"] not in test_prompts]
    assert (len(kept), len(mine_pairs) - len(kept)) == (info["learner_pairs"], info["learner_pairs_dropped"])
    assert info["learner_pairs"] > 0 and info["learner_pairs_dropped"] > 0  # 30 items reach both splits
    assert len(base["train"]) + 3 * len(kept) == len(mixed["train"])
    assert base["test"]["prompt"] == mixed["test"]["prompt"]
    assert not (set(mixed["train"]["prompt"]) & test_prompts)
    with pytest.raises(ValueError, match="weight"):
        learner.training_pairs(shipped_records, mine, weight=-1)


def test_train_prompts_excludes_the_reward_models_test_prompts():
    """The prompts offered for ranking are exactly the training split's."""
    records = shipped.load_rankings()
    allowed = learner.train_prompts(records, seed=0)
    split = pairs.build_pairs(records, seed=0)
    assert allowed == set(split["train"]["prompt"])
    assert not allowed & set(split["test"]["prompt"])
