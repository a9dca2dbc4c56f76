"""Tests for labkit.evaluate and labkit.eval_plots: metrics on hand inputs, KL, bootstrap, plots."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from labkit import eval_plots, evaluate
from labkit.generate import Sample


@dataclass
class LengthJudge:
    """A fake judge: longer texts are 'more toxic' (fast, deterministic)."""

    name: str = "len"

    def prob(self, texts):
        return np.array([min(len(t) / 40.0, 1.0) for t in texts])


class FakeWorld:
    """Gold utility = 1 for texts containing 'water', rude when containing 'idiot'."""

    @dataclass
    class Gold:
        utility: float

    def gold(self, prompt, response):
        return self.Gold(float("water" in response))

    def classify_style(self, prompt, response):
        return "rude" if "idiot" in response else None

    def is_rude(self, prompt, response):
        return self.classify_style(prompt, response) == "rude"


def _result(scores: np.ndarray, name: str = "len", **extra) -> evaluate.EvalResult:
    """An EvalResult from a (P, k) grid of toxicity scores (and optional extra grids)."""
    P, k = scores.shape
    rows = [
        {
            "prompt_id": f"p{i}",
            "completion_id": c,
            "prompt": f"q{i}",
            "text": f"t{i}{c}",
            "num_tokens": 3,
            "num_words": 1,
            f"tox.{name}": scores[i, c],
            **{key: v[i, c] for key, v in extra.items()},
        }
        for i in range(P)
        for c in range(k)
    ]
    table = pd.DataFrame(rows)
    return evaluate.EvalResult(
        samples=[], table=table, metrics=evaluate.summarise(table, [name], n_boot=50), judges=[name]
    )


def test_realtoxicityprompts_pair_by_hand():
    """Expected max toxicity of [[0.1,0.9],[0.2,0.3]] is 0.6; P(at least one toxic) is 0.5."""
    scores = np.array([[0.1, 0.9], [0.2, 0.3]])
    assert pytest.approx(0.6) == evaluate.expected_max_toxicity(scores)
    assert 0.5 == evaluate.toxicity_probability(scores)


def test_distinct_n_by_hand():
    """'a b a b' + 'a b c': distinct-1 = 3/7, distinct-2 = 3/5."""
    texts = ["a b a b", "a b c"]
    assert pytest.approx(3 / 7) == evaluate.distinct_n(texts, 1)
    assert pytest.approx(3 / 5) == evaluate.distinct_n(texts, 2)
    assert 0.0 == evaluate.distinct_n(["a"], 2)


def test_bootstrap_contains_mean_and_narrows():
    """The percentile interval contains the mean and is narrower with 16x the prompts."""
    rng = np.random.default_rng(0)
    widths = []
    for n in (25, 400):
        x = rng.normal(size=n)
        m = evaluate.bootstrap(lambda idx: x[idx].mean(), n, n_boot=500, seed=1)
        assert m.ci_low <= m.value <= m.ci_high
        assert n == m.n
        widths.append(m.ci_high - m.ci_low)
    assert widths[1] < widths[0] / 2


def test_bootstrap_is_seeded():
    """The same seed gives the same interval."""
    x = np.arange(10.0)
    assert evaluate.bootstrap(lambda i: x[i].mean(), 10, seed=3) == evaluate.bootstrap(
        lambda i: x[i].mean(), 10, seed=3
    )


def test_judge_validation_by_hand():
    """AUC, accuracy, recall and false-positive rate of a judge against labels, each with an interval."""
    probs = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.7, 0.4])
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    out = evaluate.judge_validation(probs, labels, n_boot=200)
    # 16 toxic-clean pairs; the clean 0.6 outranks the toxic 0.3, and the clean 0.4 too: 14/16
    assert out["auc"].value == pytest.approx(14 / 16)
    assert out["accuracy"].value == pytest.approx(6 / 8)  # 0.3 missed, 0.6 flagged
    assert out["recall"].value == pytest.approx(3 / 4)
    assert out["false_positive_rate"].value == pytest.approx(1 / 4)
    for metric in out.values():
        assert metric.ci_low <= metric.value <= metric.ci_high and metric.n == 8


def test_judge_validation_rejects_bad_input():
    """One class only, or mismatched lengths, is an error that says what is needed."""
    with pytest.raises(ValueError, match="items of both"):
        evaluate.judge_validation([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="one P\\(toxic\\) per label"):
        evaluate.judge_validation([0.1, 0.2, 0.3], [0, 1])


def test_win_rate_ties_count_half():
    """after [1, 2] vs before [2, 0]: pairs give 0, 1, 0.5, 1 -> 0.625."""
    assert [0.625] == evaluate.win_rate(np.array([[1.0, 2.0]]), np.array([[2.0, 0.0]])).tolist()


def test_summarise_metrics_and_flat_keys():
    """Toxicity metrics per judge carry n = prompts; flat keys include the headline alias and CIs."""
    result = _result(np.array([[0.1, 0.9], [0.2, 0.3]]))
    m = result.metrics
    assert pytest.approx(0.6) == m["len.expected_max_toxicity"].value
    assert 0.5 == m["len.toxicity_probability"].value
    assert 0.25 == m["len.toxic_share"].value
    assert 2 == m["len.toxic_share"].n
    flat = evaluate.to_flat_metrics(result, "evaluate.ppo")
    assert 0.25 == flat["evaluate.ppo.toxic_share"] == flat["evaluate.ppo.len.toxic_share"]
    assert 2 == flat["evaluate.ppo.toxic_share.n"]
    assert "evaluate.ppo.distinct_2.ci_low" in flat


def test_compare_win_rates():
    """After is less toxic on every pair and better by gold on half -> win rates 1.0 and by hand."""
    before = _result(np.full((3, 2), 0.8), gold_utility=np.zeros((3, 2)))
    after = _result(np.full((3, 2), 0.1), gold_utility=np.array([[1, 0], [1, 0], [1, 0]], float))
    wins = evaluate.compare(before, after, n_boot=50)
    assert 1.0 == wins["win_rate.less_toxic.len"].value
    assert 0.75 == wins["win_rate.gold_utility"].value  # per prompt: (1 + 1 + 0.5 + 0.5) / 4
    assert 3 == wins["win_rate.gold_utility"].n


def test_compare_needs_shared_prompts():
    """Results on different prompts cannot be compared."""
    a = _result(np.zeros((1, 1)))
    b = _result(np.zeros((1, 1)))
    b.table["prompt_id"] = "other"
    with pytest.raises(ValueError, match="same held-out prompts"):
        evaluate.compare(a, b)


def test_kl_of_model_to_itself_is_zero(tiny_lm):
    """KL to the same model (or to a plain model's 'disabled adapter') is exactly 0; to another it is not."""
    from conftest import make_tiny_lm

    model, tok = tiny_lm
    samples = [
        Sample("p0", "How do I sleep?", 0, "Keep the room dark.", 8),
        Sample("p1", "Basil?", 0, "", 48),
        Sample("p1", "Basil?", 1, "Water it", 3),
    ]
    assert [0.0, 0.0, 0.0] == evaluate.kl_to_reference(model, tok, samples, model).tolist()
    assert [0.0, 0.0, 0.0] == evaluate.kl_to_reference(model, tok, samples, "disable_adapter").tolist()
    other = evaluate.kl_to_reference(model, tok, samples, make_tiny_lm(tok, seed=1))
    assert np.abs(other).sum() > 0
    with pytest.raises(ValueError, match="disable_adapter"):
        evaluate.kl_to_reference(model, tok, samples, "frozen")


def test_kl_with_lora_uses_disabled_adapter(tiny_lm):
    """A LoRA policy with nudged adapters has KL != 0 against its own base, computed without a copy."""
    from labkit.models import add_lora

    model, tok = tiny_lm
    policy = add_lora(model, r=2, alpha=4)
    samples = [Sample("p0", "Basil?", 0, "Water it", 3)]
    assert [0.0] == evaluate.kl_to_reference(policy, tok, samples).tolist()  # B = 0 at init
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    assert evaluate.kl_to_reference(policy, tok, samples)[0] != 0.0


def test_perplexity_counts_tokens(tiny_lm):
    """Per-text NLL is positive; a (prompt, reply) pair scores reply tokens + EOS."""
    model, tok = tiny_lm
    nll, count = evaluate.perplexity(model, tok, ["Keep the room dark.", ("Sleep?", "Keep the room dark.")])
    n_reply = len(tok("Keep the room dark.", add_special_tokens=False)["input_ids"])
    assert [n_reply, n_reply + 1] == count.tolist()
    assert (nll > 0).all()


def test_evaluate_model_end_to_end(tiny_lm):
    """Sampling k per prompt gives P*k scored samples and every metric with n = prompts."""
    model, tok = tiny_lm
    prompts = ["How do I keep basil alive?", "How can I sleep better?", "What is a good breakfast?"]
    reward = lambda p, r: torch.tensor([float(len(x)) for x in r])  # noqa: E731
    cfg = evaluate.EvalConfig(k=2, judges=(LengthJudge(),), max_new_tokens=8, n_bootstrap=20)
    result = evaluate.evaluate_model(
        model, tok, prompts, cfg, reward=reward, ref_texts=[("Sleep?", "Keep the room dark.")], world=FakeWorld()
    )
    assert 6 == len(result.samples) == len(result.table)
    for key in (
        "len.toxic_share",
        "kl",
        "reward",
        "gold_utility",
        "rude_share",
        "distinct_1",
        "distinct_2",
        "length_tokens",
        "length_words",
    ):
        assert 3 == result.metrics[key].n, key
    assert 0.0 == result.metrics["kl"].value  # plain model, 'disable_adapter' reference
    assert 1 == result.metrics["perplexity"].n
    assert result.metrics["perplexity"].value > 1
    with pytest.raises(ValueError, match="held-out prompts"):
        evaluate.evaluate_model(model, tok, [], cfg)


def test_plots_carry_the_data():
    """Histograms hold every sample, the scatter one point per prompt, bars the values and KL labels."""
    before = _result(np.array([[0.1, 0.9], [0.2, 0.3], [0.6, 0.7]]))
    after = _result(np.array([[0.1, 0.1], [0.0, 0.2], [0.3, 0.1]]))
    fig = eval_plots.toxicity_histograms(before, after)
    heights = [sum(p.get_height() for p in c.patches) for c in fig.axes[0].containers]
    assert [6, 6] == heights
    fig = eval_plots.paired_scatter(before, after)
    assert (3, 2) == fig.axes[0].collections[0].get_offsets().shape
    kl = evaluate.Metric(0.5, 0.4, 0.6, 3)
    fig = eval_plots.method_bars({"base": before.metrics, "ppo": {**after.metrics, "kl": kl}})
    assert pytest.approx([3 / 6, 0.0]) == [b.get_height() for b in fig.axes[0].patches]
    assert ["base", "ppo\nKL=0.50"] == [t.get_text() for t in fig.axes[0].get_xticklabels()]
    table = eval_plots.example_table(before, after, n=2)
    assert 2 == len(table) and ["t00", "t10"] == table["before"].tolist()


def test_heldout_reference_texts_are_the_worlds_own():
    """The tiny world's reference texts are helpful replies to held-out prompts, as (prompt, reply) pairs;
    `heldout_reference_texts` asks any world for its own (the RealToxicityPrompts world gives strings)."""
    from labkit import world as world_mod

    w = world_mod.load()
    pairs = evaluate.heldout_reference_texts(w, n=6, seed=1)
    heldout = {p.text for p in w.prompts("heldout")}
    assert 6 == len(pairs) and all(prompt in heldout for prompt, _ in pairs)
    assert all(w.classify_style(prompt, reply) == "helpful" for prompt, reply in pairs)
    assert pairs == w.reference_texts(6, seed=1)

    class Other:
        def reference_texts(self, n, seed=0):
            return [f"text {i} of seed {seed}" for i in range(n)]

    assert ["text 0 of seed 3", "text 1 of seed 3"] == evaluate.heldout_reference_texts(Other(), n=2, seed=3)


def test_with_kl_and_method_table():
    """An exact KL is a point interval; the table has one row per method with KL and toxic share."""
    base = evaluate.with_kl(_result(np.array([[0.1, 0.9], [0.2, 0.3]])), 0.0)
    bon = evaluate.with_kl(_result(np.array([[0.1, 0.1], [0.2, 0.0]])), math.log(4) - 3 / 4)
    assert evaluate.Metric(0.0, 0.0, 0.0, 2) == base.metrics["kl"]
    table = evaluate.method_table({"base": base, "best-of-4": bon})
    assert ["base", "best-of-4"] == table["method"].tolist()
    assert "0.000 [0.000, 0.000]" == table.loc[0, "KL (nats)"]
    assert table.loc[1, "toxic share [len]"].startswith("0.000 [")
    assert [2, 2] == table["prompts"].tolist()


def test_methods_vs_kl_places_each_method_at_its_kl():
    """One point per method at (KL, toxic share) in the first panel, (KL, gold utility) in the second."""
    base = evaluate.with_kl(_result(np.array([[0.9, 0.9]]), gold_utility=np.array([[0.1, 0.3]])), 0.0)
    ppo = evaluate.with_kl(_result(np.array([[0.0, 0.9]]), gold_utility=np.array([[0.5, 0.5]])), 2.0)
    fig = eval_plots.methods_vs_kl({"base": base, "ppo": ppo})
    points = [c.lines[0].get_xydata()[0].tolist() for c in fig.axes[0].containers]
    assert [[0.0, 1.0], [2.0, 0.5]] == points
    gold = [c.lines[0].get_xydata()[0].tolist() for c in fig.axes[1].containers]
    assert [[0.0, pytest.approx(0.2)], [2.0, 0.5]] == gold


def test_metrics_table_one_column_per_method_every_number_with_its_interval():
    """Rows are metrics, columns methods; a cell is value [ci] (n); a missing metric is blank."""
    base = _result(np.array([[0.1, 0.9], [0.2, 0.3]]))
    wins = {"win_rate.gold_utility": evaluate.Metric(0.75, 0.5, 1.0, 2)}
    table = evaluate.metrics_table({"base": base, "after over base": wins})
    assert ["base", "after over base"] == table.columns.tolist()
    assert str(base.metrics["len.toxic_share"]) == table.loc["len.toxic_share", "base"]
    assert "0.750 [0.500, 1.000] (n=2)" == table.loc["win_rate.gold_utility", "after over base"]
    assert "" == table.loc["len.toxic_share", "after over base"]
    assert ["len.toxic_share"] == evaluate.metrics_table({"base": base}, keys=["len.toxic_share"]).index.tolist()


def test_distinct_n_interval_contains_its_value():
    """Resamples hold fewer distinct prompts and repeat less; the recentred interval still holds the value."""
    words = ["tip", "water", "soil", "sun", "pot"]
    texts = [f"{words[i % 5]} {words[(i + c) % 5]} now" for i in range(12) for c in range(2)]
    table = pd.DataFrame(
        {
            "prompt_id": [f"p{i}" for i in range(12) for _ in range(2)],
            "completion_id": [0, 1] * 12,
            "text": texts,
            "tox.len": 0.0,
        }
    )
    m = evaluate.summarise(table, ["len"], n_boot=200)["distinct_1"]
    assert pytest.approx(evaluate.distinct_n(texts, 1)) == m.value
    assert m.ci_low <= m.value <= m.ci_high


def test_style_breakdown_shares_and_judge_verdicts_per_style():
    """Per method: the share of samples in each world style, and per judge the toxic share within it."""
    before = _result(np.array([[0.9, 0.2], [0.8, 0.1]]))
    before.table["text"] = ["idiot", "water", "ok", "ok"]
    after = _result(np.array([[0.6, 0.0], [0.1, 0.1]]))
    after.table["text"] = ["water", "water", "ok", "ok"]
    table = evaluate.style_breakdown({"base": before, "ppo": after}, FakeWorld())
    assert ["unrecognised", "rude"] == table.index.tolist()  # sorted by the first method's share
    assert [0.75, 0.25] == table[("base", "share")].tolist()
    assert pytest.approx([1 / 3, 1.0]) == table[("base", "toxic [len]")].tolist()
    assert 1.0 == table.loc["unrecognised", ("ppo", "share")]
    assert 0.25 == table.loc["unrecognised", ("ppo", "toxic [len]")]


def test_plain_prompting_scores_the_continuation_after_the_prompts_own_tokens(tiny_lm):
    """KL and perplexity with prompting="plain" re-tokenize the prompt as plain text (no chat turn, no
    BOS: a chat model's BOS opens a turn) and the continuation with its leading space."""
    model, tok = tiny_lm
    samples = [Sample("p0", "You are", 0, " an idiot", 3)]
    contexts, responses = evaluate._sample_token_ids(tok, samples, max_new_tokens=3, prompting="plain")
    assert [tok("You are", add_special_tokens=False)["input_ids"]] == contexts
    assert [tok(" an idiot", add_special_tokens=False)["input_ids"]] == responses  # at the cap: no EOS
    assert [0.0] == evaluate.kl_to_reference(model, tok, samples, model, max_new_tokens=3, prompting="plain").tolist()
    text = "the river burst its banks overnight"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    _, plain_tokens = evaluate.perplexity(model, tok, [text], prompting="plain")
    _, chat_tokens = evaluate.perplexity(model, tok, [text], prompting="chat")
    assert [len(ids) - 1] == plain_tokens.tolist()  # the first token is the context
    assert [len(ids)] == chat_tokens.tolist()  # scored after BOS
    _, pair_tokens = evaluate.perplexity(model, tok, [("You are", " an idiot")], prompting="plain")
    assert [len(tok(" an idiot", add_special_tokens=False)["input_ids"])] == pair_tokens.tolist()  # no EOS
