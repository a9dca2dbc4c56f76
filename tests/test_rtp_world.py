"""labkit.rtp_world: the smol preset's world of RealToxicityPrompts continuations, scored without the judge."""

import json
from collections import Counter

import pytest

from labkit import presets, rtp, worlds
from labkit.rtp_world import RTP_WEIGHTS, RTPWorld, degeneration, fluency

CLEAN = "and the council said the new bridge would open to traffic early next spring, after the inspections."
TOXIC = "fucking idiot, shut the fuck up you worthless piece of shit."
LOOP = "the the the the the the the the the the the the"


def test_a_clean_continuation_beats_a_toxic_one_and_a_degenerate_one():
    """The raters' utility ranks clean > toxic and clean > repeated words; toxicity is the SVM's P(toxic)."""
    world = RTPWorld()
    prompt = "Reporters asked whether the council would finally fix the bridge"
    clean, toxic, loop = (world.gold(prompt, t) for t in (CLEAN, TOXIC, LOOP))
    assert clean.utility > toxic.utility and clean.utility > loop.utility
    assert toxic.toxicity > 0.9 > 0.1 > clean.toxicity
    assert loop.degeneration > 0.9 and clean.degeneration == 0.0
    assert clean.relevance == 1.0  # "council" and "bridge": two content words shared with the prompt
    assert world.gold("Reporters asked about the bridge", CLEAN).relevance == 0.5  # one shared word
    assert 0 == clean.helpfulness == toxic.helpfulness
    terms = {k: getattr(clean, k) for k in RTP_WEIGHTS}
    assert clean.utility == pytest.approx(sum(RTP_WEIGHTS[k] * v for k, v in terms.items()))


def test_rude_and_styles_follow_the_svm_and_the_degeneration_rule():
    world = RTPWorld()
    assert world.is_rude("x", TOXIC) and not world.is_rude("x", CLEAN)
    assert ["toxic", "clean", "degenerate"] == [world.classify_style("x", t) for t in (TOXIC, CLEAN, LOOP)]
    assert world.find_topic("How do I repot a houseplant?") is None


def test_fluency_and_degeneration_penalise_what_a_rater_would():
    """Shouting, '!!!' and symbol soup cost fluency; short, looping or one-word text is degenerate; empty is both."""
    assert fluency(CLEAN) > 0.95
    assert fluency("WHAT ARE YOU DOING HERE!!! GET OUT NOW!!!") < fluency("What are you doing here? Get out now.")
    assert fluency("#### @@@ $$$ %%% ^^^ &&& ***") < 0.3
    assert 0.0 == fluency("") and 1.0 == degeneration("")
    assert degeneration("ok then") > 0.6  # 2 words: too short
    assert degeneration("one two three four five six seven eight") == 0.0
    assert degeneration("money money money money money and more money") > 0.3


def test_prompts_are_the_committed_split_balanced_by_category():
    """Held-out and train prompts are labkit.rtp's split, in category turn; the first 70 hold 10 per category."""
    world = RTPWorld()
    heldout, train = world.prompts("heldout"), world.prompts("train")
    assert (210, 490) == (len(heldout), len(train))
    assert {c: 10 for c in rtp.CATEGORIES} == Counter(p.category for p in heldout[:70])
    assert set() == {p.id for p in heldout} & {p.id for p in train}
    assert heldout == rtp.prompts("heldout")


def test_reference_texts_are_the_non_toxic_labelled_items_seeded(tmp_path):
    """Perplexity reference: label-0 texts only, the same for the same seed, at most what there is."""
    folder = tmp_path / "ref.jsonl"
    rows = [{"text": f"calm sentence number {i}.", "label": 0} for i in range(5)]
    rows += [{"text": "you absolute idiot", "label": 1}]
    folder.write_text("".join(json.dumps(r) + "\n" for r in rows))
    world = RTPWorld(reference_path=folder)
    got = world.reference_texts(3, seed=1)
    assert 3 == len(got) and got == world.reference_texts(3, seed=1)
    assert all(t.startswith("calm") for t in world.reference_texts(10))
    assert 5 == len(world.reference_texts(10))
    shipped = RTPWorld().reference_texts(64)
    assert 64 == len(shipped) and len(set(shipped)) == 64


def test_a_broken_or_missing_reference_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": 0}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 2: not a labelled item"):
        RTPWorld(reference_path=bad).reference_texts(4)
    with pytest.raises(FileNotFoundError, match="restore it with git"):
        RTPWorld(reference_path=tmp_path / "gone.jsonl").reference_texts(4)


def test_presets_pick_the_world_and_the_prompting():
    """smol runs the RealToxicityPrompts world as plain continuation; tiny the assistant world in chat turns."""
    smol, tiny = presets.by_name("smol"), presets.by_name("tiny")
    assert ("rtp", "plain", "rtp") == (smol.world, smol.prompting, worlds.load(smol).name)
    assert ("assistant", "chat", "assistant") == (tiny.world, tiny.prompting, worlds.load(tiny).name)
    with pytest.raises(ValueError, match="unknown world 'moon'"):
        worlds.load("moon")
    assert not smol.run_variant and tiny.run_variant
    with pytest.raises(ValueError, match="world must be one of"):
        presets.Preset(name="x", policy="tiny", world="moon")
    with pytest.raises(ValueError, match="prompting must be 'chat' or 'plain'"):
        presets.Preset(name="x", policy="tiny", prompting="shout")


def test_smol_gpu_sizes_are_bigger_than_its_cpu_sizes():
    """One GPU gets every held-out prompt x 4, all train prompts ranked and longer PPO than the CPU sizes."""
    cpu, gpu = presets._smol(gpu=False), presets._smol(gpu=True)
    assert (70, 2, 40) == (cpu.num_eval_prompts, cpu.completions_per_prompt, cpu.stages["ppo"]["total_steps"])
    assert gpu.num_eval_prompts == 210 and gpu.completions_per_prompt == 4 and gpu.run_variant
    assert gpu.stages["ppo"]["total_steps"] > cpu.stages["ppo"]["total_steps"]
    assert gpu.stages["labels"]["num_prompts"] is None


def test_both_worlds_name_their_styles_and_the_weights_of_their_utility():
    """`styles` is what `classify_style` can return and `weights` how `gold` sums its terms, in either world."""
    from labkit import world as assistant

    for w in (assistant.load(), RTPWorld()):
        prompt = w.prompts("train")[0].text
        for text in ("Some reply here about the things you asked.", "idiot idiot idiot", "Use a heavy pot."):
            assert w.classify_style(prompt, text) in (*w.styles, None)
            g = w.gold(prompt, text)
            assert g.utility == pytest.approx(sum(weight * getattr(g, term) for term, weight in w.weights.items()))
    assert "toxic" in RTPWorld().styles and "rude" in assistant.load().styles
