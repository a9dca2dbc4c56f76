"""Tests for labkit.bestofn: analytic KL, argmax selection, the unbiased reward-vs-N estimator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labkit import bestofn
from labkit.generate import Sample


def test_bon_kl_by_hand():
    """KL of best-of-1 is 0; best-of-4 is log 4 - 3/4."""
    assert 0.0 == bestofn.bon_kl(1)
    assert pytest.approx(math.log(4) - 0.75) == bestofn.bon_kl(4)
    with pytest.raises(ValueError, match="at least 1"):
        bestofn.bon_kl(0)


def test_select_best_picks_argmax_per_prompt():
    """For each prompt the highest-scored sample is kept, prompts in first-seen order."""
    samples = [Sample(p, p, c, f"{p}{c}", 1) for p in ("a", "b") for c in range(3)]
    best = bestofn.select_best(samples, [0.1, 0.7, 0.3, 2.0, -1.0, 1.9])
    assert ["a1", "b0"] == [s.text for s in best]


def test_expected_best_by_hand():
    """Pool [1, 2, 3]: best of 1 = mean 2, best of 2 = (2 + 3 + 3) / 3, best of 3 = max 3."""
    pool = np.array([[3.0, 1.0, 2.0]])
    assert [2.0] == bestofn.expected_best(pool, 1).tolist()
    assert pytest.approx([8 / 3]) == bestofn.expected_best(pool, 2).tolist()
    assert [3.0] == bestofn.expected_best(pool, 3).tolist()
    # gold of the sample the proxy picks: proxy ranks 1 < 2 < 3, gold of those is 0, 5, 1
    assert pytest.approx([(5 + 1 + 1) / 3]) == bestofn.expected_best(pool, 2, gold=np.array([[1.0, 0.0, 5.0]])).tolist()


def test_reward_vs_n_nondecreasing_on_fixed_pool():
    """On one pool of 16, E[best of n] never falls as n grows; KL column is analytic."""
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(20, 16))
    table = bestofn.reward_vs_n(scores, gold=-(scores**2))
    assert [1, 2, 4, 8, 16] == table["n"].tolist()
    assert (np.diff(table["reward"]) >= 0).all()
    assert pytest.approx(scores.mean()) == table["reward"].iloc[0]
    assert pytest.approx(scores.max(axis=1).mean()) == table["reward"].iloc[-1]
    assert pytest.approx([bestofn.bon_kl(n) for n in table["n"]]) == table["kl"].tolist()
    assert "gold" in table
    with pytest.raises(ValueError, match="pool size"):
        bestofn.reward_vs_n(scores[:, :4], ns=(1, 8))


def test_reward_vs_n_plot_has_both_axes():
    """The figure shows reward vs n and KL vs n on a twin axis."""
    table = bestofn.reward_vs_n({"p0": [0.0, 1.0, 2.0, 3.0], "p1": [1.0, 1.0, 0.0, 5.0]}, ns=(1, 2, 4))
    fig = bestofn.plot_reward_vs_n(table)
    assert [1, 2, 4] == list(fig.axes[0].lines[0].get_xdata())
    assert pytest.approx(table["kl"].tolist()) == list(fig.axes[1].lines[0].get_ydata())


def test_best_of_n_on_tiny_model(tiny_lm):
    """best_of_n returns one sample per prompt: the longest of its pool under a length reward."""
    model, tok = tiny_lm
    reward = lambda p, r: torch.tensor([float(len(x)) for x in r])  # noqa: E731
    best, pool, scores = bestofn.best_of_n(
        model, tok, ["Basil?", "Sleep?"], 4, reward, max_new_tokens=8, return_pool=True
    )
    assert 2 == len(best) and 8 == len(pool)
    for b in best:
        assert len(b.text) == max(len(s.text) for s in pool if s.prompt_id == b.prompt_id)
    winners = bestofn.best_of_n(model, tok, ["Basil?"], 2, reward, k=3, max_new_tokens=8)
    assert [("p0", 0), ("p0", 1), ("p0", 2)] == [(s.prompt_id, s.completion_id) for s in winners]
    art, metrics = bestofn.bestofn_stage(
        model, tok, ["Basil?"], reward, bestofn.BestOfNConfig(n=4, ns=(1, 2, 4), max_new_tokens=8)
    )
    assert metrics["reward_best"] >= metrics["reward_base"]
    assert 3 == len(art["table"])


def test_bestofn_stage_gives_k_winners_and_a_table_row_per_prompt(tiny_lm):
    """k=2 draws of best-of-3 for 2 prompts: 4 winners, each the longest of its own group of 3; the
    reward-vs-n table reads each prompt's whole pool of 6 (its errors are over the 2 prompts)."""
    model, tok = tiny_lm
    reward = lambda p, r: torch.tensor([float(len(x)) for x in r])  # noqa: E731
    art, metrics = bestofn.bestofn_stage(
        model, tok, ["Basil?", "Sleep?"], reward, bestofn.BestOfNConfig(n=3, ns=(1, 3), max_new_tokens=8), k=2
    )
    assert [("p0", 0), ("p0", 1), ("p1", 0), ("p1", 1)] == sorted(
        (s.prompt_id, s.completion_id) for s in art["samples"]
    )
    assert 12 == len(art["pool"]) and 2 == metrics["prompts"]
    for w in art["samples"]:
        group = [s for s in art["pool"] if s.prompt_id == w.prompt_id and s.completion_id // 3 == w.completion_id]
        assert len(w.text) == max(len(s.text) for s in group)
    assert [2, 2] == art["table"]["prompts"].tolist()
    assert pytest.approx(float(np.mean(art["scores"]))) == art["table"]["reward"].iloc[0]  # best of 1 = mean


def test_bon_kl_discrete_pass_fail_by_hand():
    """Pass rate 1/2, n=2: P(best passes) = 3/4, so KL = 3/4 log(3/2) + 1/4 log(1/2), below the bound."""
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert pytest.approx(expected) == bestofn.bon_kl_discrete([1.0, 0.0, 1.0, 0.0], 2)
    assert bestofn.bon_kl_discrete([1.0, 0.0], 2) < bestofn.bon_kl(2)
    assert 0.0 == bestofn.bon_kl_discrete([1.0, 1.0, 1.0], 8)  # every reply passes: nothing to choose
    with pytest.raises(ValueError, match="at least one score"):
        bestofn.bon_kl_discrete([], 2)


def test_bon_kl_discrete_approaches_the_analytic_value_without_ties():
    """With many distinct rewards the estimate tends to log n - (n - 1)/n from below."""
    scores = np.random.default_rng(0).normal(size=20000)
    assert bestofn.bon_kl(4) - 0.01 < bestofn.bon_kl_discrete(scores, 4) <= bestofn.bon_kl(4)


def test_bestofn_stage_reports_the_kl_with_ties(tiny_lm):
    """A constant reward ties every sample: best-of-n is the base model, KL 0, whatever the bound says."""
    model, tok = tiny_lm
    reward = lambda p, r: torch.ones(len(r))  # noqa: E731
    art, metrics = bestofn.bestofn_stage(
        model, tok, ["Basil?"], reward, bestofn.BestOfNConfig(n=2, ns=(1, 2), max_new_tokens=4)
    )
    assert 0.0 == metrics["kl_discrete"]
    assert pytest.approx(bestofn.bon_kl(2)) == metrics["kl_analytic"]
    assert [1.0, 1.0] == list(art["scores"])


def test_pass_fail_kl_reaches_minus_log_p_only_for_large_n():
    """A pass/fail reward's best-of-n KL is 0 at n = 1, under the bound, and -log P(pass) only in the limit;
    it is what `bon_kl_discrete` gives for a pool with that pass rate."""
    p = 0.3
    assert bestofn.bon_kl_pass_fail(p, 1) == pytest.approx(0.0, abs=1e-12)
    kls = [bestofn.bon_kl_pass_fail(p, n) for n in (1, 2, 4, 8, 64)]
    assert kls == sorted(kls) and all(k <= bestofn.bon_kl(n) + 1e-12 for k, n in zip(kls, (1, 2, 4, 8, 64)))
    assert bestofn.bon_kl_pass_fail(p, 2) < 0.5 * -math.log(p)
    assert bestofn.bon_kl_pass_fail(p, 64) == pytest.approx(-math.log(p), rel=1e-6)
    pool = [1.0] * 3 + [0.0] * 7
    for n in (1, 2, 5):
        assert bestofn.bon_kl_discrete(pool, n) == pytest.approx(bestofn.bon_kl_pass_fail(p, n), rel=1e-9)
    with pytest.raises(ValueError, match="0 < p_pass <= 1"):
        bestofn.bon_kl_pass_fail(0.0, 4)
