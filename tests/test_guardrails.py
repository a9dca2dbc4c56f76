"""Guardrails: the filter's actions and its rates, with a fake judge whose scores are written by hand."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from labkit import guardrails

SCORES = {"kind": 0.1, "rude": 0.9, "edge": 0.5, "polite rewrite": 0.05, "still rude": 0.8}

# toxic items score 0.9, 0.7, 0.4, 0.2; clean ones 0.6, 0.3, 0.1, 0.05
P = [0.9, 0.7, 0.4, 0.2, 0.6, 0.3, 0.1, 0.05]
LABELS = [1, 1, 1, 1, 0, 0, 0, 0]


class FakeJudge:
    """A judge that looks each text up in a dict and counts its calls."""

    name = "fake"

    def __init__(self, scores: dict[str, float] = SCORES):
        self.scores = scores
        self.calls = 0

    def prob(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return np.array([self.scores[t] for t in texts], dtype=float)


def test_blocks_at_or_above_the_threshold_and_passes_below():
    """kind (0.1) passes as written; rude (0.9) and edge (0.5, at the threshold) become the refusal."""
    guard = guardrails.Guardrail(FakeJudge(), threshold=0.5, refusal="no.")
    kind, rude, edge = guard.check(["q", "q", "q"], ["kind", "rude", "edge"])
    assert ("kind", "kind", 0.1, "pass", False) == (kind.reply, kind.original, kind.p_toxic, kind.action, kind.blocked)
    assert ("no.", "rude", 0.9, "block", True) == (rude.reply, rude.original, rude.p_toxic, rude.action, rude.blocked)
    assert ("no.", "block") == (edge.reply, edge.action)
    edge = guardrails.Guardrail(FakeJudge(), threshold=0.6).check_one("q", "edge")
    assert ("edge", "pass") == (edge.reply, edge.action)


def test_rewrite_that_passes_is_shown():
    """A toxic reply is rewritten; the rewrite scores 0.05, so the user sees it; the judge is called twice."""
    judge = FakeJudge()
    seen = []
    guard = guardrails.Guardrail(
        judge, action="rewrite", rewrite=lambda prompt, reply: seen.append((prompt, reply)) or "polite rewrite"
    )
    kind, rude = guard.check(["q1", "q2"], ["kind", "rude"])
    assert [("q2", "rude")] == seen
    assert ("polite rewrite", "rude", 0.9, "rewrite", 0.05) == (
        rude.reply,
        rude.original,
        rude.p_toxic,
        rude.action,
        rude.p_rewrite,
    )
    assert ("pass", None) == (kind.action, kind.p_rewrite)
    assert 2 == judge.calls


def test_rewrite_still_toxic_is_blocked():
    """A rewrite that still scores above the threshold is blocked, and its score is kept."""
    guard = guardrails.Guardrail(FakeJudge(), action="rewrite", rewrite=lambda prompt, reply: "still rude")
    verdict = guard.check_one("q", "rude")
    assert (guardrails.DEFAULT_REFUSAL, "block", 0.8) == (verdict.reply, verdict.action, verdict.p_rewrite)


def test_check_calls_the_judge_once_per_batch():
    """Blocking scores a whole batch in one call; rewriting adds a call only when something was flagged."""
    judge = FakeJudge()
    guardrails.Guardrail(judge).check(["q"] * 4, ["kind", "rude", "edge", "kind"])
    assert 1 == judge.calls
    judge = FakeJudge()
    guardrails.Guardrail(judge, action="rewrite", rewrite=lambda p, r: "polite rewrite").check(["q"] * 2, ["kind"] * 2)
    assert 1 == judge.calls
    assert [] == guardrails.Guardrail(judge).check([], [])


def test_latency_is_recorded_per_reply_and_non_negative():
    """Every verdict of a batch carries the same seconds per reply; measure_latency reports medians."""
    verdicts = guardrails.Guardrail(FakeJudge()).check(["q"] * 3, ["kind", "rude", "edge"])
    assert 1 == len({v.seconds for v in verdicts}) and verdicts[0].seconds >= 0
    judge = FakeJudge()
    latency = guardrails.measure_latency(guardrails.Guardrail(judge), ["q"] * 4, ["kind", "rude"] * 2, 4, repeats=3)
    assert (4, 3) == (latency["batch_size"], latency["repeats"])
    assert latency["batch_seconds_per_reply"] >= 0 and latency["single_seconds_per_reply"] >= 0
    assert 1 + 3 + 3 == judge.calls  # warm-up, batches, single replies
    with pytest.raises(ValueError, match="at least 8 replies"):
        guardrails.measure_latency(guardrails.Guardrail(judge), ["q"] * 4, ["kind"] * 4, batch_size=8)


def test_tradeoff_exact_rates_at_known_thresholds():
    """At 0.5: 2 of 4 toxic caught, 1 of 4 clean blocked; at 0.25: 3 of 4 and 2 of 4."""
    table = guardrails.tradeoff(P, LABELS, thresholds=[0.5, 0.25])
    assert [0.25, 0.5] == table["threshold"].tolist()
    assert [0.75, 0.5] == table["catch_rate"].tolist()
    assert [0.5, 0.25] == table["false_block_rate"].tolist()
    assert [5 / 8, 3 / 8] == table["block_rate"].tolist()
    assert [3, 2] == table["caught"].tolist() and [1, 2] == table["missed"].tolist()
    assert [2, 1] == table["false_blocks"].tolist() and [2, 3] == table["clean_passed"].tolist()
    assert [5, 3] == table["blocked"].tolist() and [8, 8] == table["n"].tolist()


def test_tradeoff_default_thresholds_and_monotone_rates():
    """The default holds the grid and every score; both rates never rise as the threshold does."""
    table = guardrails.tradeoff(P, LABELS)
    assert set(guardrails.GRID) | set(P) == set(np.round(table["threshold"], 10))
    assert (np.diff(table["threshold"]) > 0).all()
    assert (np.diff(table["catch_rate"]) <= 0).all() and (np.diff(table["false_block_rate"]) <= 0).all()


def test_rates_at_matches_the_table_with_intervals():
    """rates_at's values are the table's at that threshold, inside their bootstrap intervals; n per class."""
    rates = guardrails.rates_at(P, LABELS, threshold=0.5, n_boot=200, seed=0)
    assert (0.5, 0.25, 3 / 8) == tuple(rates[k]["value"] for k in ("catch_rate", "false_block_rate", "block_rate"))
    assert (4, 4, 8) == tuple(rates[k]["n"] for k in ("catch_rate", "false_block_rate", "block_rate"))
    for key in ("catch_rate", "false_block_rate", "block_rate", "auc"):
        assert rates[key]["ci_low"] <= rates[key]["value"] <= rates[key]["ci_high"]


def test_threshold_for_picks_the_lowest_within_budget():
    """One clean item blocked of 4 is allowed above 0.3 (clean 0.6 stays blocked): lowest candidate 0.35,
    or 0.4 among the scores alone; none blocked needs a threshold above 0.6."""
    assert 0.35 == pytest.approx(guardrails.threshold_for(P, LABELS, max_false_block=0.25))
    assert 0.4 == guardrails.threshold_for(P, LABELS, max_false_block=0.25, thresholds=P)
    assert 0.65 == pytest.approx(guardrails.threshold_for(P, LABELS, max_false_block=0.0))


def test_threshold_for_says_when_no_threshold_qualifies():
    """A clean item scored 0.97, the highest score: no candidate blocks none of the clean items."""
    with pytest.raises(ValueError, match="no threshold up to 0.97 keeps the false-block rate at or below 0"):
        guardrails.threshold_for([0.97, 0.2, 0.9], [0, 0, 1], max_false_block=0.0)
    with pytest.raises(ValueError, match="max_false_block"):
        guardrails.threshold_for(P, LABELS, max_false_block=1.5)


def test_bad_settings_name_what_is_allowed():
    """A threshold outside (0, 1), an unknown action, a rewrite without a function, a non-judge."""
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            guardrails.Guardrail(FakeJudge(), threshold=bad)
    with pytest.raises(ValueError, match=r"unknown action 'filter': choose one of \['block', 'rewrite'\]"):
        guardrails.Guardrail(FakeJudge(), action="filter")
    with pytest.raises(ValueError, match="needs rewrite="):
        guardrails.Guardrail(FakeJudge(), action="rewrite")
    with pytest.raises(TypeError, match=r"\.prob"):
        guardrails.Guardrail(object())
    with pytest.raises(TypeError, match="must return a string"):
        guardrails.Guardrail(FakeJudge(), action="rewrite", rewrite=lambda p, r: None).check_one("q", "rude")


def test_mismatched_lengths_raise():
    """One prompt per reply, one score per label, one score per text from the judge."""
    with pytest.raises(ValueError, match="1 prompts and 2 replies"):
        guardrails.Guardrail(FakeJudge()).check(["q"], ["kind", "rude"])
    with pytest.raises(ValueError, match="one P\\(toxic\\) per label"):
        guardrails.tradeoff([0.1, 0.2], [0])
    with pytest.raises(ValueError, match="items of both"):
        guardrails.tradeoff([0.1, 0.2], [0, 0])

    class ShortJudge(FakeJudge):
        def prob(self, texts):
            return np.zeros(1)

    with pytest.raises(ValueError, match="one P\\(toxic\\) per text"):
        guardrails.Guardrail(ShortJudge()).check(["q", "q"], ["kind", "rude"])


def test_tradeoff_plot_draws_both_panels_and_marks_the_choice():
    """Two labelled axes; the left panel's lines are the table's rates, the chosen threshold is marked."""
    table = guardrails.tradeoff(P, LABELS, thresholds=[0.25, 0.5, 0.75])
    fig = guardrails.tradeoff_plot(table, chosen=0.5)
    assert isinstance(fig, Figure) and 2 == len(fig.axes)
    left, right = fig.axes
    catch, false_block = left.get_lines()[:2]
    assert table["catch_rate"].tolist() == list(catch.get_ydata())
    assert table["false_block_rate"].tolist() == list(false_block.get_ydata())
    assert [0.5, 0.5] == list(left.get_lines()[2].get_xdata())
    assert ([0.25], [0.5]) == tuple(list(d) for d in right.get_lines()[-1].get_data())
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    assert "Guardrail trade-off" == fig.get_suptitle()
    with pytest.raises(ValueError, match="guardrails.tradeoff"):
        guardrails.tradeoff_plot(table.drop(columns="catch_rate"))
