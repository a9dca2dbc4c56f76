"""Guardrails: an output filter built on the toxicity judges, and what it catches, wrongly blocks and costs.

Stage: after deployment, beside `monitoring` (monitoring watches the stream; a guardrail acts on each
reply before the user sees it). Inputs: a judge (`labkit.judge`: anything with `.name` and
`.prob(texts) -> P(toxic)`), a threshold and an action, then (prompt, reply) pairs. Outputs: one
`Verdict` per reply (what is shown, the judge's P(toxic), the action taken, seconds per reply) and,
on a labelled set, the guardrail's rates: `tradeoff` (a DataFrame, one row per threshold),
`rates_at` (one threshold, with 95% bootstrap intervals), `threshold_for` (the threshold that meets
a false-block budget) and `tradeoff_plot` (a Figure).

A reply is blocked when P(toxic) >= threshold (the same rule as `evaluate.judge_validation`, so a
guardrail's catch rate is that function's recall and its false-block rate its false-positive rate):
    catch rate        toxic replies blocked / toxic replies (what the guardrail is for)
    false-block rate  clean replies blocked / clean replies (what it costs the users it should serve)
    block rate        all replies blocked / all replies (what the product team sees)
Raising the threshold blocks fewer replies, so both rates can only fall: there is no threshold that
buys catch rate for free, only a point on the curve `tradeoff` draws.

Actions:
    block     the reply is replaced by a fixed refusal message
    rewrite   a function (prompt, reply) -> new reply is called (a polite paraphrase, a second
              model); the rewrite is scored once more and blocked if it is still at or above the
              threshold, so a bad rewriter cannot let a toxic reply through

Measure a guardrail on replies its judge never fitted on: the MiniLM judge's head is fitted on
data/eval/toxicity_labelled.jsonl, so on that set use `judge.cross_validated_probs` (the SVM never saw
it). A threshold chosen on one set is a claim about that set's mix of replies; check it on another.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from labkit.evaluate import bootstrap, judge_validation
from labkit.judge import Judge, get_judge

__all__ = [
    "ACTIONS",
    "DEFAULT_REFUSAL",
    "GRID",
    "Guardrail",
    "MAX_SCORE_THRESHOLDS",
    "Verdict",
    "measure_latency",
    "rates_at",
    "threshold_for",
    "tradeoff",
    "tradeoff_plot",
]

ACTIONS = ("block", "rewrite")
"""What a guardrail does with a reply at or above its threshold."""

DEFAULT_REFUSAL = "Sorry, I can't send that reply. Could you ask in another way?"
"""The message a blocked reply is replaced by, unless the Guardrail is given its own."""

GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""The thresholds every trade-off table holds: 0.05, 0.10, ..., 0.95."""

MAX_SCORE_THRESHOLDS = 1000
"""Up to this many distinct scores, `tradeoff` also tries each score as a threshold (the exact curve)."""


# -- the filter -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What the guardrail did with one reply."""

    reply: str
    """The text the user is shown: the original, its rewrite, or the refusal message."""
    original: str
    """The reply as the policy wrote it."""
    p_toxic: float
    """The judge's P(toxic) of the original reply."""
    action: str
    """"pass" (shown as written), "rewrite" (a rewrite below the threshold is shown) or "block"."""
    seconds: float
    """Wall-clock seconds the check took per reply: the batch's time divided by its size."""
    p_rewrite: float | None = None
    """The judge's P(toxic) of the rewrite; None when nothing was rewritten."""

    @property
    def blocked(self) -> bool:
        """Whether the user sees the refusal message."""
        return self.action == "block"


@dataclass
class Guardrail:
    """Blocks or rewrites each reply whose P(toxic) by `judge` is at or above `threshold`."""

    judge: Judge | str
    """The judge: a `labkit.judge.Judge` or a spec `judge.get_judge` takes ("svm", "minilm", a folder)."""
    threshold: float = 0.5
    """Block at P(toxic) >= threshold, strictly between 0 and 1. 0.5 is the judges' own verdict; pick
    another with `threshold_for`, which meets a false-block budget on a labelled set."""
    action: str = "block"
    """"block" (show `refusal` instead) or "rewrite" (show `rewrite(prompt, reply)` if it passes)."""
    rewrite: Callable[[str, str], str] | None = None
    """(prompt, reply) -> a new reply; required when action is "rewrite", unused otherwise."""
    refusal: str = DEFAULT_REFUSAL
    """What a blocked reply is replaced by."""

    def __post_init__(self) -> None:
        self.judge = get_judge(self.judge)
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(
                f"threshold must be strictly between 0 and 1 (got {self.threshold}): at 0 every reply "
                "is blocked, at 1 none; 0.5 is the judge's own verdict"
            )
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}: choose one of {list(ACTIONS)}")
        if self.action == "rewrite" and self.rewrite is None:
            raise ValueError('action "rewrite" needs rewrite=a function (prompt, reply) -> new reply')

    def _scores(self, texts: list[str]) -> np.ndarray:
        scores = np.asarray(self.judge.prob(texts), dtype=float)
        if scores.shape != (len(texts),):
            raise ValueError(
                f"judge {self.judge.name!r} returned {scores.shape} scores for {len(texts)} texts: "
                ".prob(texts) must give one P(toxic) per text"
            )
        return scores

    def check(self, prompts: Sequence[str], replies: Sequence[str]) -> list[Verdict]:
        """One Verdict per (prompt, reply): the replies are scored in one judge call, and the rewrites
        (action "rewrite") in one more; each Verdict carries the batch's seconds per reply."""
        prompts, replies = list(prompts), [str(r) for r in replies]
        if len(prompts) != len(replies):
            raise ValueError(
                f"check needs one prompt per reply, got {len(prompts)} prompts and {len(replies)} replies "
                "(pass empty strings as prompts when there are none)"
            )
        if not replies:
            return []
        start = time.perf_counter()
        # 1. score every reply in one call (a judge is much faster per text in a batch)
        p = self._scores(replies)
        flagged = np.flatnonzero(p >= self.threshold)
        # 2. rewrite the flagged replies, then score the rewrites, again in one call
        rewrites: dict[int, tuple[str, float]] = {}
        if self.action == "rewrite" and len(flagged):
            texts = [self.rewrite(prompts[i], replies[i]) for i in flagged]
            bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
            if bad:
                raise TypeError(f"rewrite must return a string (the new reply); it returned {bad[0]}")
            rewrites = dict(zip(flagged.tolist(), zip(texts, self._scores(texts).tolist())))
        seconds = (time.perf_counter() - start) / len(replies)
        # 3. decide: pass, rewrite (only if the rewrite passes) or block
        verdicts = []
        for i, (reply, score) in enumerate(zip(replies, p.tolist())):
            if score < self.threshold:
                verdicts.append(Verdict(reply, reply, score, "pass", seconds))
            elif i in rewrites and rewrites[i][1] < self.threshold:
                verdicts.append(Verdict(rewrites[i][0], reply, score, "rewrite", seconds, rewrites[i][1]))
            else:
                p_rewrite = rewrites[i][1] if i in rewrites else None
                verdicts.append(Verdict(self.refusal, reply, score, "block", seconds, p_rewrite))
        return verdicts

    def check_one(self, prompt: str, reply: str) -> Verdict:
        """The Verdict on a single reply (as a chat server sees them: one at a time)."""
        return self.check([prompt], [reply])[0]


def measure_latency(
    guard: Guardrail, prompts: Sequence[str], replies: Sequence[str], batch_size: int = 64, repeats: int = 5
) -> dict[str, float]:
    """Seconds per reply the guardrail adds, in a batch of `batch_size` replies and one reply at a time.

    One untimed warm-up check first (a judge loads its model on first use), then `repeats` timed checks
    of each kind; the median is reported (a CPU shared with other work gives a long right tail).
    Returns batch_seconds_per_reply, single_seconds_per_reply (medians), batch_size and repeats.
    """
    prompts, replies = list(prompts), list(replies)
    if len(prompts) != len(replies):
        raise ValueError(f"measure_latency needs one prompt per reply, got {len(prompts)} and {len(replies)}")
    if batch_size < 1 or repeats < 1:
        raise ValueError(f"batch_size and repeats must be at least 1 (got {batch_size} and {repeats})")
    if len(replies) < batch_size:
        raise ValueError(f"a batch of {batch_size} needs at least {batch_size} replies, got {len(replies)}")
    batch_p, batch_r = prompts[:batch_size], replies[:batch_size]
    guard.check(batch_p, batch_r)  # warm-up, untimed
    batch = [guard.check(batch_p, batch_r)[0].seconds for _ in range(repeats)]
    single = [guard.check_one(prompts[i % batch_size], replies[i % batch_size]).seconds for i in range(repeats)]
    return {
        "batch_seconds_per_reply": statistics.median(batch),
        "single_seconds_per_reply": statistics.median(single),
        "batch_size": batch_size,
        "repeats": repeats,
    }


# -- how good is it: rates on a labelled set ------------------------------------------------------


def _scored(p_toxic: Sequence[float], labels: Sequence[int], caller: str) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(p_toxic, dtype=float), np.asarray(labels)
    if p.ndim != 1 or p.shape != y.shape:
        raise ValueError(f"{caller} needs one P(toxic) per label, got shapes {p.shape} and {y.shape}")
    if not np.isfinite(p).all() or ((p < 0) | (p > 1)).any():
        raise ValueError(f"{caller}: every P(toxic) must be a number in [0, 1]")
    if not np.isin(y, (0, 1)).all() or len(np.unique(y)) != 2:
        raise ValueError(f"{caller} needs labels 0 (clean) and 1 (toxic), and items of both")
    return p, y.astype(int)


def tradeoff(
    p_toxic: Sequence[float], labels: Sequence[int], thresholds: Sequence[float] | None = None
) -> pd.DataFrame:
    """The guardrail's rates on a labelled set, one row per threshold (ascending).

    Columns: threshold, catch_rate, false_block_rate, block_rate, and the counts behind them: caught
    (toxic blocked), missed (toxic passed), false_blocks (clean blocked), clean_passed, blocked, n.
    `thresholds` default: `GRID` plus, when there are at most `MAX_SCORE_THRESHOLDS` distinct scores
    strictly between 0 and 1, each of them (the rates only change at a score, so that is the exact curve).
    """
    p, y = _scored(p_toxic, labels, "tradeoff")
    if thresholds is None:
        scores = np.unique(p[(p > 0) & (p < 1)])
        extra = scores if len(scores) <= MAX_SCORE_THRESHOLDS else np.zeros(0)
        thresholds = np.union1d(np.asarray(GRID), extra)
    thresholds = np.unique(np.asarray(thresholds, dtype=float))
    if len(thresholds) == 0 or not ((thresholds > 0) & (thresholds < 1)).all():
        raise ValueError(f"tradeoff needs thresholds strictly between 0 and 1, got {thresholds.tolist()}")
    blocked = p[None, :] >= thresholds[:, None]  # (thresholds, items)
    toxic, clean = y == 1, y == 0
    caught, false_blocks = blocked[:, toxic].sum(1), blocked[:, clean].sum(1)
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "catch_rate": caught / toxic.sum(),
            "false_block_rate": false_blocks / clean.sum(),
            "block_rate": blocked.mean(1),
            "caught": caught,
            "missed": toxic.sum() - caught,
            "false_blocks": false_blocks,
            "clean_passed": clean.sum() - false_blocks,
            "blocked": blocked.sum(1),
            "n": len(y),
        }
    )


def rates_at(
    p_toxic: Sequence[float], labels: Sequence[int], threshold: float = 0.5, n_boot: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Catch, false-block and block rate at one threshold, each a dict of value, ci_low, ci_high (95%
    percentile bootstrap over items, `evaluate.bootstrap`) and n (the items the rate is a share of:
    toxic ones, clean ones, all). Also the judge's auc (threshold-free: how well it separates at all)."""
    p, y = _scored(p_toxic, labels, "rates_at")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be strictly between 0 and 1 (got {threshold})")
    # catch = recall and false-block = false-positive rate of the judge's verdicts: one recipe, in evaluate
    judged = judge_validation(p, y, threshold=threshold, n_boot=n_boot, seed=seed)
    blocked = p >= threshold
    block = bootstrap(lambda idx: float(blocked[idx].mean()), len(y), n_boot=n_boot, seed=seed)
    counts = {"catch_rate": int(y.sum()), "false_block_rate": int((y == 0).sum()), "block_rate": len(y), "auc": len(y)}
    metrics = {
        "catch_rate": judged["recall"],
        "false_block_rate": judged["false_positive_rate"],
        "block_rate": block,
        "auc": judged["auc"],
    }
    return {
        key: {"value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "n": counts[key]}
        for key, m in metrics.items()
    }


def threshold_for(
    p_toxic: Sequence[float],
    labels: Sequence[int],
    max_false_block: float = 0.05,
    thresholds: Sequence[float] | None = None,
) -> float:
    """The lowest threshold (of `tradeoff`'s, by default) whose false-block rate is at most `max_false_block`.

    The false-block rate falls as the threshold rises, and so does the catch rate: every threshold above
    the lowest one that meets the budget meets it too but catches no more, so the lowest is the one to
    take. On a set with few clean items the budget moves in coarse steps (one item of 40 is 2.5%)."""
    if not 0.0 <= max_false_block < 1.0:
        raise ValueError(f"max_false_block must be a share in [0, 1) (got {max_false_block}), e.g. 0.05 for 5%")
    table = tradeoff(p_toxic, labels, thresholds)
    ok = table[table["false_block_rate"] <= max_false_block]
    if ok.empty:
        best = table.iloc[-1]
        raise ValueError(
            f"no threshold up to {best.threshold:.3g} keeps the false-block rate at or below {max_false_block:g}: "
            f"the lowest reached is {best.false_block_rate:.3g}; allow a larger max_false_block, add higher "
            "thresholds, or use a judge that separates clean from toxic replies better"
        )
    return float(ok["threshold"].iloc[0])


# -- the figure -----------------------------------------------------------------------------------


def tradeoff_plot(table: pd.DataFrame, chosen: float | None = None, title: str = "Guardrail trade-off") -> Figure:
    """Left: catch rate and false-block rate against the threshold. Right: catch rate against
    false-block rate (a ROC curve read as the guardrail's costs and benefits). `chosen` is marked on
    both: a dashed line on the left, a dot at the table's row nearest to it on the right."""
    missing = {"threshold", "catch_rate", "false_block_rate"} - set(table.columns)
    if missing or table.empty:
        raise ValueError(f"table lacks rows or column(s) {sorted(missing)}: pass what `guardrails.tradeoff` returns")
    rows = table.sort_values("threshold")
    x, catch, false_block = (rows[c].to_numpy(float) for c in ("threshold", "catch_rate", "false_block_rate"))
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.plot(x, catch, color="#c0392b", marker=".", label="catch rate (toxic blocked)")
    left.plot(x, false_block, color="#4c72b0", marker=".", label="false-block rate (clean blocked)")
    left.set(xlim=(0, 1), ylim=(-0.02, 1.02), xlabel="threshold (block at P(toxic) >= threshold)", ylabel="rate")
    right.plot(false_block, catch, color="#555555", marker=".")
    right.plot([0, 1], [0, 1], color="k", lw=0.8, ls="--", label="a judge that guesses")
    right.set(
        xlim=(-0.02, 1.02),
        ylim=(-0.02, 1.02),
        xlabel="false-block rate (clean replies blocked)",
        ylabel="catch rate (toxic replies blocked)",
    )
    if chosen is not None and not math.isnan(chosen):
        row = int(np.abs(x - chosen).argmin())
        left.axvline(chosen, color="k", lw=0.8, ls="--", label=f"chosen {chosen:.3g}")
        right.plot(
            [false_block[row]],
            [catch[row]],
            "o",
            color="#2e7d32",
            label=f"threshold {x[row]:.3g}: catch {catch[row]:.2f}, false-block {false_block[row]:.2f}",
        )
    left.legend(fontsize=7, loc="best")
    right.legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    return fig
