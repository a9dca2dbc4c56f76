"""Tests of the reward interface: wrappers, toxicity SVM, HF classifiers by label name, gold reward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_reward_model import make_tiny_bert

from labkit import rewards

PROMPTS = ["How do I keep my basil alive?"] * 4
CLEAN = [
    "Water basil when the top inch of soil feels dry.",
    "Keep the bedroom cool and dark.",
    "Thank you, that is a lovely idea.",
    "Put the plant near a sunny window.",
]
TOXIC = [
    "You are a stupid idiot, shut up.",
    "What a fucking dumb question, moron.",
    "Go to hell you worthless piece of shit.",
    "You are an idiot and everyone hates you.",
]


def lengths(prompts, responses):
    return [float(len(r)) for r in responses]


def test_function_reward_returns_float32_vector():
    """A FunctionReward gives a float32 tensor of shape (B,) and keeps its name."""
    reward = rewards.FunctionReward(lengths, name="length")
    out = reward(["p", "p"], ["ab", "abcd"])
    assert torch.float32 == out.dtype and (2,) == tuple(out.shape)
    assert [2.0, 4.0] == out.tolist() and "length" == reward.name


def test_mismatched_inputs_raise():
    """Different numbers of prompts and responses raise a ValueError that says what to pass."""
    with pytest.raises(ValueError, match="one prompt per response"):
        rewards.FunctionReward(lengths)(["p"], ["a", "b"])


def test_weighted_sum_by_hand():
    """WeightedSum is sum_i w_i r_i, and exposes its unweighted components by name."""
    a = rewards.FunctionReward(lengths, name="len")
    b = rewards.FunctionReward(lambda p, r: [1.0] * len(r), name="one")
    total = rewards.WeightedSum([a, b], [2.0, -3.0])
    assert [2 * 2 - 3, 2 * 5 - 3] == total(["p", "p"], ["ab", "abcde"]).tolist()
    assert {"len", "one"} == set(total.components(["p"], ["x"]))
    with pytest.raises(ValueError, match="one weight per reward"):
        rewards.WeightedSum([a, b], [1.0])


def test_make_reward_builds_each_spec_and_names_the_choices():
    """Specs build the named rewards; "preference" needs the trained model; a typo lists the valid names."""
    assert "nontoxic_binary" == rewards.make_reward("toxicity:binary").name
    assert "nontoxic_prob" == rewards.make_reward("toxicity").name
    pref = rewards.FunctionReward(lambda p, r: [1.0] * len(r), name="pref")
    both = rewards.make_reward("toxicity:prob+preference", preference=pref)
    assert ["nontoxic_prob", "pref"] == [r.name for r in both.rewards]
    with pytest.raises(ValueError, match="preference=") as err:
        rewards.make_reward("preference")
    assert "reward_model" in str(err.value)
    with pytest.raises(ValueError, match="toxicity:binary"):
        rewards.make_reward("toxic")
    with pytest.raises(ValueError, match="unknown reward 'toxicity:max'"):
        rewards.make_reward("toxicity:max")


def test_toxicity_reward_prefers_clean_text():
    """Clean replies get higher rewards than insults, for the logit and the probability alike."""
    for kind in ("logit", "prob"):
        scores = rewards.ToxicityReward(kind)(PROMPTS * 2, CLEAN + TOXIC)
        assert scores[:4].min() > scores[4:].max(), kind
    assert np.all(rewards.toxicity_prob(TOXIC) > 0.5) and np.all(rewards.toxicity_prob(CLEAN) < 0.5)


def test_toxicity_logit_and_prob_rank_the_same_way():
    """The non-toxic logit and 1 - P(toxic) order the same texts identically."""
    texts = CLEAN + TOXIC + ["damn it", "you fool", "ok fine"]
    logit = rewards.nontoxic_logit(texts)
    prob = 1.0 - rewards.toxicity_prob(texts)
    assert list(np.argsort(logit, kind="stable")) == list(np.argsort(prob, kind="stable"))


@pytest.mark.parametrize(
    "labels, want, expected",
    [
        ({0: "TOXIC", 1: "neutral"}, "non-toxic", (1, 1)),
        ({0: "Non-Toxic", 1: "toxic"}, "non-toxic", (0, 1)),
        ({0: "not_toxic", 1: "toxic"}, "nontoxic", (0, 1)),
        ({0: "toxic"}, "non-toxic", (0, -1)),
        ({0: "negative", 1: "positive"}, "POSITIVE", (1, 1)),
        ({0: "hate", 1: "other"}, "non-toxic", (0, -1)),
    ],
)
def test_resolve_label_by_name(labels, want, expected):
    """The rewarded label is found by name (any case/punctuation), or its opposite with sign -1."""
    assert expected == rewards.resolve_label(labels, want)


def test_resolve_label_lists_labels_when_nothing_matches():
    """No matching label: ValueError naming the available labels."""
    with pytest.raises(ValueError, match="LABEL_0"):
        rewards.resolve_label({0: "LABEL_0", 1: "LABEL_1"}, "non-toxic")


def _permuted_copy(src, dst):
    """The same classifier with its two labels (and head rows) swapped."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(src)
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight.flip(0))
        model.classifier.bias.copy_(model.classifier.bias.flip(0))
    old = model.config.id2label
    model.config.id2label = {0: old[1], 1: old[0]}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def test_hf_classifier_reward_follows_label_names_not_indices(tmp_path):
    """Swapping the labels and the head rows of a classifier leaves its rewards unchanged."""
    src = make_tiny_bert(tmp_path / "a", num_labels=2, id2label={0: "toxic", 1: "non-toxic"}, seed=1)
    dst = _permuted_copy(src, tmp_path / "b")
    responses = ["you are an idiot", "water the basil well", "good help thanks"]
    for kind in ("logit", "prob"):
        a = rewards.HFClassifierReward(src, positive_label="non-toxic", kind=kind, device="cpu")
        b = rewards.HFClassifierReward(dst, positive_label="non-toxic", kind=kind, device="cpu")
        assert (1, 1) == (a.index, a.sign) and (0, 1) == (b.index, b.sign)
        assert torch.allclose(a(["q"] * 3, responses), b(["q"] * 3, responses), atol=1e-6)
        assert len(set(a(["q"] * 3, responses).tolist())) > 1  # not a constant: the test would be void


def test_hf_classifier_reward_inverts_a_lone_toxic_label(tmp_path):
    """With only a "toxic" output the reward is minus its logit (or 1 - its probability)."""
    folder = make_tiny_bert(tmp_path / "m", num_labels=1, id2label={0: "toxic"}, seed=2)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(folder), AutoModelForSequenceClassification.from_pretrained(folder)
    texts = ["you are an idiot", "water the basil"]
    with torch.no_grad():
        logits = model(**tok(texts, padding=True, return_tensors="pt")).logits[:, 0]
    got = rewards.HFClassifierReward(folder, device="cpu")(["q"] * 2, texts)
    assert torch.allclose(-logits, got, atol=1e-6)
    prob = rewards.HFClassifierReward(folder, kind="prob", device="cpu")(["q"] * 2, texts)
    assert torch.allclose(1 - torch.sigmoid(logits), prob, atol=1e-6)


def test_hf_classifier_reward_offline_hub_id_explains(tmp_path, monkeypatch):
    """A hub id that cannot be fetched raises OSError saying to pass a local folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="local folder"):
        rewards.HFClassifierReward("labkit-tests/no-such-model-xyz")


def test_gold_reward_matches_world():
    """GoldReward returns the world's gold utility (or the chosen term) of each reply."""
    from labkit import world as world_mod

    w = world_mod.load()
    prompts, replies = PROMPTS[:2], [CLEAN[0], TOXIC[0]]
    got = rewards.GoldReward(w)(prompts, replies)
    assert np.allclose([w.gold(p, r).utility for p, r in zip(prompts, replies)], got.numpy(), atol=1e-6)
    tox = rewards.GoldReward(w, term="toxicity")(prompts, replies)
    assert np.allclose([w.gold(p, r).toxicity for p, r in zip(prompts, replies)], tox.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="term must be one of"):
        rewards.GoldReward(w, term="happiness")


def test_preference_reward_needs_a_tokenizer_with_a_model():
    """Wrapping a model object without its tokenizer raises a ValueError that says what to pass."""
    from labkit import reward_model

    with pytest.raises(ValueError, match="tokenizer="):
        reward_model.PreferenceReward(torch.nn.Linear(1, 1))


def test_binary_toxicity_reward_thresholds_the_probability():
    """kind="binary" is 1.0 below the P(toxic) threshold and 0.0 at or above it."""
    texts = CLEAN + TOXIC + ["damn it", "you fool"]
    prob = rewards.toxicity_prob(texts)
    for threshold in (0.5, 0.2):
        got = rewards.ToxicityReward("binary", threshold=threshold)(["q"] * len(texts), texts)
        assert (prob < threshold).astype(float).tolist() == got.tolist()
    assert [1.0] * 4 + [0.0] * 4 == rewards.ToxicityReward("binary")(PROMPTS * 2, CLEAN + TOXIC).tolist()
    with pytest.raises(ValueError, match="threshold"):
        rewards.ToxicityReward("binary", threshold=1.5)


def test_toxicity_reward_plot_carries_the_three_rewards():
    """The plot's points are (logit, 1 - P(toxic)) and (logit, pass/fail) of every text."""
    texts = CLEAN + TOXIC
    fig = rewards.toxicity_reward_plot(texts, threshold=0.5)
    prob_points, binary_points = (c.get_offsets() for c in fig.axes[0].collections)
    logit = rewards.nontoxic_logit(texts)
    assert np.allclose(np.c_[logit, 1.0 - rewards.toxicity_prob(texts)], prob_points)
    assert np.allclose(np.c_[logit, [1.0] * 4 + [0.0] * 4], binary_points)


def test_for_trl_gives_trl_the_same_scores_for_plain_and_conversational_items():
    """TRL calls reward_func(prompts=, completions=, completion_ids=, **columns); the wrapped reward reads
    the last user turn and the assistant's reply, and scores as the labkit reward does."""
    tox = rewards.ToxicityReward("prob")
    func = rewards.for_trl(tox)
    replies = ["Water it when the soil is dry.", "You are an idiot."]
    want = tox(["q1", "q2"], replies).tolist()
    assert func.__name__ == tox.name
    assert func(prompts=["q1", "q2"], completions=replies, completion_ids=[[1], [2]]) == pytest.approx(want)
    chat = func(
        prompts=[[{"role": "system", "content": "be kind"}, {"role": "user", "content": q}] for q in ("q1", "q2")],
        completions=[[{"role": "assistant", "content": r}] for r in replies],
        completion_ids=[[1], [2]],
        extra_column=["a", "b"],
    )
    assert chat == pytest.approx(want)
    seen = []
    rewards.for_trl(lambda q, r: seen.append(q) or torch.zeros(len(r)))(
        prompts=[[{"role": "user", "content": "hi"}]], completions=["x"]
    )
    assert seen == [["hi"]]
    with pytest.raises(ValueError, match="no 'assistant' turn"):
        func(prompts=["q"], completions=[[{"role": "user", "content": "x"}]])
    with pytest.raises(ValueError, match="reward callable"):
        rewards.for_trl("toxicity")


def test_fingerprint_tells_apart_what_scores_differently(tmp_path):
    """Equal for the same weights and settings, loaded twice; different for other weights, another
    normalisation, another threshold or kind, or another weight in a sum; None for a plain function."""
    from labkit.reward_model import PreferenceReward

    one, other = make_tiny_bert(tmp_path / "one", seed=1), make_tiny_bert(tmp_path / "other", seed=2)

    def pref(folder, mean=0.0):
        return PreferenceReward(folder, normalization={"mean": mean, "std": 1.0}, device="cpu")

    assert pref(one).fingerprint() == pref(one).fingerprint()
    fitted = pref(one, mean=0.1234567891)  # saved and loaded back, as a later chapter loads an earlier one's
    assert fitted.fingerprint() == PreferenceReward(fitted.save(tmp_path / "saved"), device="cpu").fingerprint()
    assert len({pref(one).fingerprint(), pref(other).fingerprint(), pref(one, mean=0.5).fingerprint()}) == 3
    binary = rewards.ToxicityReward("binary")
    assert binary.fingerprint() == rewards.ToxicityReward("binary").fingerprint()
    assert binary.fingerprint() != rewards.ToxicityReward("binary", threshold=0.3).fingerprint()
    assert binary.fingerprint() != rewards.ToxicityReward("prob", name=binary.name).fingerprint()
    a = rewards.FunctionReward(lengths, name="len")
    assert (
        rewards.WeightedSum([a, binary], [1, 1]).fingerprint() != rewards.WeightedSum([a, binary], [1, 2]).fingerprint()
    )
    assert rewards.fingerprint(lengths) is None
