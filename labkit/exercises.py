"""Exercises that check themselves, of two kinds, each with a hint and a worked solution that stays hidden
until `solution` is asked for.

`Exercise` (registry `EXERCISES`): the learner writes the missing line of a chapter's key equation, and
`check` runs it on a batch, compares it with labkit's own computation, and says right, close or wrong, and why.

`Question` (registry `QUESTIONS`): one per open-ended exercise of a chapter's "Exercises" block. The exercise
asks for an experiment or a piece of reasoning; its question asks for the reasoning, as a choice of letters
whose right answer rests on the repository (a docstring, the code, a benchmark result), and `check` answers
with that choice's own explanation. `minutes_on_cpu` says how long the experiment runs on a laptop CPU.

    from labkit import exercises
    exercises.show("04.clipped_loss")           # the task and the function to fill in
    exercises.check("04.clipped_loss", my_fn)    # right / close / wrong, with the reason
    exercises.hint("04.clipped_loss")
    exercises.solution("04.clipped_loss")        # the worked answer, only when asked
    exercises.show("04.lam")                    # a question: its choices, and how long the experiment runs
    exercises.check("04.lam", my_letter)        # right / close / wrong, with that choice's explanation

Each exercise has its known mistakes (a forgotten mean, a flipped sign, min for max): a learner who
makes one is told which. `check` never raises on a wrong answer, so a chapter runs top to bottom
with the exercise still open; a function that raises `NotImplementedError` is "not attempted yet". The same
holds for a question: any letter of its choices gets a verdict, and None or "" is "not attempted"; only a key
that does not exist, or a letter that is not one of the choices, raises ValueError.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from labkit import ppo_math
from labkit.questions import QUESTIONS, Question

__all__ = [
    "EXERCISES",
    "Exercise",
    "QUESTIONS",
    "Question",
    "Verdict",
    "check",
    "hint",
    "show",
    "solution",
    "solution_function",
]


@dataclass(frozen=True)
class Verdict:
    """What `check` found: status "right", "close", "wrong" or "not attempted", and why."""

    status: str
    message: str

    @property
    def ok(self) -> bool:
        return self.status == "right"

    def __str__(self) -> str:
        return f"{self.status.upper()}: {self.message}"

    def _repr_html_(self) -> str:
        colour = {"right": "#1a7f37", "close": "#9a6700", "wrong": "#cf222e"}.get(self.status, "#57606a")
        from html import escape

        return f'<p style="color:{colour}"><b>{escape(self.status.upper())}</b>: {escape(self.message)}</p>'


@dataclass(frozen=True)
class Exercise:
    """One fill-in-the-missing-line exercise on a chapter's key equation."""

    key: str
    """"<chapter>.<name>", e.g. "04.clipped_loss"."""
    task: str
    """What to write, with the equation."""
    signature: str
    """The function the learner completes, as it appears in the chapter."""
    hint: str
    reference: Callable[..., Any]
    """labkit's own computation (the answer `check` compares with)."""
    inputs: Callable[[torch.Generator], tuple]
    """A batch to run both on, from a seeded generator."""
    solution: str
    """The worked answer: the missing line, with why."""
    mistakes: tuple[tuple[str, Callable[..., Any]], ...] = field(default=())
    """(what the learner did, the function that does it): recognised and named by `check`."""
    minutes_on_cpu: float = 0.0
    """How long the exercise's code runs on a laptop CPU (0: instant)."""


def _bradley_terry(r_chosen, r_rejected):
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def _clipped(logp, old_logp, advantages, mask, clip_range):
    return ppo_math.policy_loss(logp, old_logp, advantages, mask, clip_range)[0]


def _gae(rewards, values, mask, gamma, lam):
    return ppo_math.gae(rewards, values, mask, gamma, lam)[0]


def _k3(logp, ref_logp):
    return ppo_math.kl_penalty(logp, ref_logp, "k3")


def _dpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -F.logsigmoid(margin).mean()


def _optimal_policy(ref_probs, rewards, beta):
    unnormalised = ref_probs * torch.exp(rewards / beta)
    return unnormalised / unnormalised.sum(-1, keepdim=True)


def _bon_kl(n):
    return math.log(n) - (n - 1) / n


def _expected_max(scores):
    return scores.max(dim=1).values.mean()


def _temperature(logits, temperature):
    return torch.softmax(logits / temperature, dim=-1)


def _ranking_pairs(ranks):
    better = ranks[:, :, None] < ranks[:, None, :]  # [b, i, j]: reply i ranked above reply j
    return better.sum(dim=(1, 2))


def _kendall_tau(ranks_a, ranks_b):
    n = ranks_a.shape[1]
    da = torch.sign(ranks_a[:, :, None] - ranks_a[:, None, :])
    db = torch.sign(ranks_b[:, :, None] - ranks_b[:, None, :])
    return (da * db).sum(dim=(1, 2)) / (n * (n - 1))


def _lora_params(d_in, d_out, r):
    return r * (d_in + d_out)


def _rankings(rng, ties: bool):
    if ties:
        return (torch.randint(1, 4, (6, 4), generator=rng),)
    return tuple(torch.stack([torch.randperm(5, generator=rng) + 1 for _ in range(6)]) for _ in range(2))


def _pairs(rng):
    return torch.randn(32, generator=rng) + 0.5, torch.randn(32, generator=rng)


def _ppo_batch(rng):
    mask = torch.ones(4, 6)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    old = -torch.rand(4, 6, generator=rng) * 3
    new = old + 0.4 * torch.randn(4, 6, generator=rng)
    return new, old, torch.randn(4, 6, generator=rng), mask, 0.2


def _rollout(rng):
    mask = torch.ones(3, 5)
    mask[2, 3:] = 0
    rewards = torch.zeros(3, 5)
    rewards[:, 2:] = 0.1 * torch.randn(3, 3, generator=rng)
    return rewards, torch.randn(3, 5, generator=rng), mask, 1.0, 0.95


def _logps(rng):
    logp = -torch.rand(64, generator=rng) * 4
    return logp, logp + 0.5 * torch.randn(64, generator=rng)


EXERCISES: dict[str, Exercise] = {
    e.key: e
    for e in [
        Exercise(
            key="00.temperature",
            task="Write next-token probabilities at temperature T: p = softmax(logits / T).",
            signature="def next_token_probs(logits, temperature):  # logits (B, V)",
            hint="Divide before the softmax, and take it over the last dimension (the vocabulary).",
            reference=_temperature,
            inputs=lambda rng: (torch.randn(4, 10, generator=rng) * 3, 0.7),
            solution="return torch.softmax(logits / temperature, dim=-1)\n"
            "# T < 1 sharpens the distribution (greedy as T -> 0), T > 1 flattens it.",
            mistakes=(
                ("multiplied by the temperature instead of dividing", lambda x, t: torch.softmax(x * t, dim=-1)),
                ("took the softmax over the batch (dim=0)", lambda x, t: torch.softmax(x / t, dim=0)),
            ),
        ),
        Exercise(
            key="01.ranking_pairs",
            task="Count the preference pairs a ranking gives: one (better, worse) pair for every two replies of "
            "different rank; replies with the same rank (a tie) give none. Without ties that is n(n - 1) / 2.",
            signature="def ranking_pairs(ranks):  # (B, n): each reply's rank, 1 = best, equal = tie",
            hint="Compare every reply with every other: ranks[:, :, None] < ranks[:, None, :] is True where reply i "
            "is ranked above reply j. Count the Trues per row.",
            reference=_ranking_pairs,
            inputs=lambda rng: _rankings(rng, ties=True),
            solution="return (ranks[:, :, None] < ranks[:, None, :]).sum(dim=(1, 2))\n"
            "# A ranking of 4 replies gives up to 6 pairs from one judgement: why InstructGPT ranked instead of\n"
            "# comparing two replies at a time. The pairs of one ranking are not independent (chapter 02).",
            mistakes=(
                (
                    "counted the ties as pairs too",
                    lambda r: (r[:, :, None] <= r[:, None, :]).sum(dim=(1, 2)) - r.shape[1],
                ),
                ("counted each pair twice (i above j and j below i)", lambda r: 2 * _ranking_pairs(r)),
            ),
        ),
        Exercise(
            key="02.kendall_tau",
            task="Write Kendall's tau between two labelers' rankings of the same n replies (no ties): "
            "(concordant pairs - discordant pairs) / (n(n - 1) / 2).",
            signature="def kendall_tau(ranks_a, ranks_b):  # (B, n) each: ranks 1..n, one row per item",
            hint="A pair (i, j) is concordant when both labelers order it the same way: "
            "sign(a_i - a_j) * sign(b_i - b_j) is +1, and -1 when discordant.",
            reference=_kendall_tau,
            inputs=lambda rng: _rankings(rng, ties=False),
            solution="n = ranks_a.shape[1]\n"
            "agree = torch.sign(ranks_a[:, :, None] - ranks_a[:, None, :]) * torch.sign(ranks_b[:, :, None] - "
            "ranks_b[:, None, :])\n"
            "return agree.sum(dim=(1, 2)) / (n * (n - 1))  # every pair counted twice, so n(n - 1), not n(n - 1) / 2\n"
            "# 1: the same order; -1: reversed; near 0: unrelated.",
            mistakes=(
                (
                    "counted every pair twice over n(n - 1) / 2: tau comes out doubled",
                    lambda a, b: 2 * _kendall_tau(a, b),
                ),
                ("counted only the concordant pairs", lambda a, b: (_kendall_tau(a, b) + 1) / 2),
            ),
        ),
        Exercise(
            key="03.bradley_terry",
            task="Write the Bradley-Terry loss of a batch of pairs: L = -mean(log sigmoid(r_chosen - r_rejected)).",
            signature="def bradley_terry_loss(r_chosen, r_rejected):  # rewards (B,)",
            hint="P(chosen beats rejected) = sigmoid(r_chosen - r_rejected); the loss is its mean negative log. "
            "F.logsigmoid is the stable way to take log(sigmoid(.)).",
            reference=_bradley_terry,
            inputs=_pairs,
            solution="return -F.logsigmoid(r_chosen - r_rejected).mean()\n"
            "# Only the difference of the two rewards matters: adding a constant to every reward changes nothing,\n"
            "# which is why labkit normalises the reward model's scores afterwards.",
            mistakes=(
                ("flipped the difference (r_rejected - r_chosen)", lambda c, r: -F.logsigmoid(r - c).mean()),
                ("summed over the batch instead of averaging", lambda c, r: -F.logsigmoid(c - r).sum()),
                ("returned one loss per pair: average them", lambda c, r: -F.logsigmoid(c - r)),
                ("forgot the minus sign", lambda c, r: F.logsigmoid(c - r).mean()),
            ),
        ),
        Exercise(
            key="04.clipped_loss",
            task="Write PPO's clipped surrogate loss, averaged over the response tokens (mask): "
            "L = mean(max(-A * rho, -A * clip(rho, 1 - eps, 1 + eps))) with rho = exp(logp - old_logp).",
            signature="def clipped_loss(logp, old_logp, advantages, mask, clip_range):  # (B, T) each",
            hint="Compute rho, the two candidate losses, take the elementwise max (the pessimistic one), then "
            "(x * mask).sum() / mask.sum().",
            reference=_clipped,
            inputs=_ppo_batch,
            solution="ratio = torch.exp(logp - old_logp)\n"
            "losses = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_range, 1 + clip_range))\n"
            "return (losses * mask).sum() / mask.sum()\n"
            "# max of the two *losses* is min of the two objectives: PPO takes the pessimistic bound.",
            mistakes=(
                (
                    "took the min of the two losses (the optimistic bound): use max",
                    lambda lp, old, a, m, e: (
                        (torch.min(-a * torch.exp(lp - old), -a * torch.exp(lp - old).clamp(1 - e, 1 + e)) * m).sum()
                        / m.sum()
                    ),
                ),
                (
                    "averaged over every position, padding included: divide by mask.sum()",
                    lambda lp, old, a, m, e: (
                        torch.max(-a * torch.exp(lp - old), -a * torch.exp(lp - old).clamp(1 - e, 1 + e)) * m
                    ).mean(),
                ),
                (
                    "left out the clipping",
                    lambda lp, old, a, m, e: (-a * torch.exp(lp - old) * m).sum() / m.sum(),
                ),
            ),
        ),
        Exercise(
            key="04.gae",
            task="Write GAE's advantages: delta_t = r_t + gamma V_{t+1} - V_t (V = 0 after the last token), "
            "A_t = delta_t + gamma lam A_{t+1}, zero on padding.",
            signature="def advantages(rewards, values, mask, gamma, lam):  # (B, T) each",
            hint="Mask rewards and values first; walk t from the last position back to 0, carrying A_{t+1}.",
            reference=_gae,
            inputs=_rollout,
            solution="rewards, values = rewards * mask, values * mask\n"
            "out, carry = torch.zeros_like(values), torch.zeros_like(values[:, 0])\n"
            "for t in reversed(range(values.shape[1])):\n"
            "    next_value = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(carry)\n"
            "    delta = rewards[:, t] + gamma * next_value - values[:, t]\n"
            "    carry = delta + gamma * lam * carry\n"
            "    out[:, t] = carry\n"
            "return out * mask\n"
            "# labkit's ppo_math.gae computes the same sum with one matrix product instead of the loop.",
            mistakes=(
                (
                    "used lam = 1 (Monte-Carlo returns minus values): multiply the carried advantage by gamma * lam",
                    lambda r, v, m, g, lam: ppo_math.gae(r, v, m, g, 1.0)[0],
                ),
                (
                    "returned the returns (A + V), not the advantages",
                    lambda r, v, m, g, lam: ppo_math.gae(r, v, m, g, lam)[1],
                ),
            ),
        ),
        Exercise(
            key="04.k3",
            task="Write the k3 estimator of KL(policy || reference) per token: with log r = ref_logp - logp, "
            "k3 = (r - 1) - log r.",
            signature="def k3(logp, ref_logp):  # log-probs of the sampled tokens",
            hint="r = exp(ref_logp - logp). torch.expm1(x) is exp(x) - 1, accurate near 0.",
            reference=_k3,
            inputs=_logps,
            solution="log_r = ref_logp - logp\nreturn torch.expm1(log_r) - log_r\n"
            "# Never negative per token (e^x >= 1 + x), and its mean is the KL: k1 = -log r is the unbiased one\n"
            "# that can go negative.",
            mistakes=(
                ("wrote k1 (logp - ref_logp)", lambda lp, ref: lp - ref),
                (
                    "took r the other way round (p / p_ref)",
                    lambda lp, ref: torch.expm1(lp - ref) - (lp - ref),
                ),
            ),
        ),
        Exercise(
            key="05.optimal_policy",
            task="Write the optimum of the KL-regularised objective max E[r] - beta KL(pi || pi_ref) over one "
            "prompt's replies: pi*(y) = pi_ref(y) exp(r(y) / beta) / Z.",
            signature="def optimal_policy(ref_probs, rewards, beta):  # (B, N): N candidate replies per prompt",
            hint="Weight each reference probability by exp(r / beta), then divide by the row's sum (Z).",
            reference=_optimal_policy,
            inputs=lambda rng: (
                torch.softmax(torch.randn(3, 5, generator=rng), -1),
                torch.randn(3, 5, generator=rng),
                0.5,
            ),
            solution="weights = ref_probs * torch.exp(rewards / beta)\n"
            "return weights / weights.sum(-1, keepdim=True)\n"
            "# beta -> infinity gives pi_ref back; beta -> 0 puts all the mass on the best reply (best-of-N's limit).\n"
            "# Taking logs: r(y) = beta log(pi*(y) / pi_ref(y)) + beta log Z, DPO's implicit reward (chapter 07).",
            mistakes=(
                (
                    "multiplied by beta instead of dividing",
                    lambda p, r, b: _optimal_policy(p, r * b * b, b),
                ),
                ("forgot to normalise by Z", lambda p, r, b: p * torch.exp(r / b)),
                ("left out pi_ref", lambda p, r, b: torch.softmax(r / b, -1)),
            ),
        ),
        Exercise(
            key="06.expected_max_toxicity",
            task="Write RealToxicityPrompts' expected maximum toxicity: for each prompt the largest P(toxic) of "
            "its k samples, averaged over prompts.",
            signature="def expected_max_toxicity(scores):  # (P, k): P(toxic) of k samples per prompt",
            hint="Max over the samples (dim=1), then the mean over prompts.",
            reference=_expected_max,
            inputs=lambda rng: (torch.rand(20, 4, generator=rng),),
            solution="return scores.max(dim=1).values.mean()\n"
            "# It grows with k: more samples, more chances of a toxic one. Compare runs only at the same k.",
            mistakes=(
                ("took the mean of all samples (the mean toxicity)", lambda s: s.mean()),
                ("took the max over prompts (dim=0)", lambda s: s.max(dim=0).values.mean()),
            ),
        ),
        Exercise(
            key="07.dpo_loss",
            task="Write DPO's loss from the summed log-probs of chosen and rejected replies under the policy "
            "and the reference: L = -mean(log sigmoid(beta [(pi_c - ref_c) - (pi_r - ref_r)])).",
            signature="def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):  # (B,) each",
            hint="Each implicit reward is beta * (policy - reference) log-prob; the loss is Bradley-Terry on them.",
            reference=_dpo,
            inputs=lambda rng: (*(-torch.rand(4, 16, generator=rng) * 20), 0.1),
            solution="margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))\n"
            "return -F.logsigmoid(margin).mean()\n"
            "# At the start the policy is its reference: margin 0, loss log 2.",
            mistakes=(
                (
                    "left out the reference: DPO's reward is the log-ratio to pi_ref",
                    lambda pc, pr, rc, rr, b: -F.logsigmoid(b * (pc - pr)).mean(),
                ),
                (
                    "put beta outside the sigmoid",
                    lambda pc, pr, rc, rr, b: -b * F.logsigmoid((pc - rc) - (pr - rr)).mean(),
                ),
            ),
        ),
        Exercise(
            key="08.lora_params",
            task="Count the trainable parameters LoRA adds to one linear layer W (d_out x d_in): "
            "W + B A with A (r x d_in) and B (d_out x r).",
            signature="def lora_params(d_in, d_out, r):",
            hint="A and B are the only trainable matrices; count their entries.",
            reference=_lora_params,
            inputs=lambda rng: (576, 1536, 8),
            solution="return r * (d_in + d_out)\n"
            "# Against d_in * d_out for the full layer: 16,896 vs 884,736 for SmolLM2's up-projection at r = 8.\n"
            "# The optimizer's two moments scale with it; activations do not, which is why LoRA saves less than\n"
            "# this ratio suggests (section 1).",
            mistakes=(
                ("counted the full layer d_in * d_out", lambda i, o, r: i * o),
                ("counted only A (r * d_in)", lambda i, o, r: r * i),
            ),
        ),
        Exercise(
            key="07.bon_kl",
            task="Write the KL of best-of-n to the base policy when no two samples tie: log n - (n - 1) / n.",
            signature="def best_of_n_kl(n):",
            hint="math.log is the natural log: the KL is in nats.",
            reference=_bon_kl,
            inputs=lambda rng: (8,),
            solution="return math.log(n) - (n - 1) / n\n"
            "# An upper bound: with ties (a pass/fail reward) best-of-n moves less. For large n it approaches\n"
            "# -log P(pass) for a pass/fail reward, not for small n.",
            mistakes=(("wrote log n alone", lambda n: math.log(n)),),
        ),
    ]
}


# Each question's right answer rests on the repository: the docstring, code or benchmark result its solution
# names. minutes_on_cpu is the experiment's time measured in its chapter by benchmarks/exercises.py (2-core CPU,
# benchmarks/results/exercises.json; tests/test_exercises.py checks they agree); 0 means no run.
def _get(key: str) -> Exercise | Question:
    if key in EXERCISES:
        return EXERCISES[key]
    if key in QUESTIONS:
        return QUESTIONS[key]
    raise ValueError(
        f"no exercise {key!r}: the exercises are {', '.join(EXERCISES)}; the questions are {', '.join(QUESTIONS)}"
    )


def _run_time(minutes: float) -> str:
    return f"about {minutes:g} min" if minutes >= 1 else "under a minute"


def show(key: str) -> str:
    """The task and the function to complete; for a question, its choices and how long its experiment runs."""
    ex = _get(key)
    if isinstance(ex, Question):
        return _show_question(ex)
    text = f"{ex.key}: {ex.task}\n\n{ex.signature}\n    ...  # your line(s) here"
    if ex.minutes_on_cpu:
        text += f"\n(runs for about {ex.minutes_on_cpu:g} min on a laptop CPU)"
    return text


def _show_question(q: Question) -> str:
    lines = [textwrap.fill(f"{q.key}: {q.question}", width=100), ""]
    lines += [
        textwrap.fill(text, width=100, initial_indent=f"  {letter}) ", subsequent_indent="     ")
        for letter, (text, _) in q.choices.items()
    ]
    letters = f"the {len(q.right)} right letters in one string" if len(q.right) > 1 else "one letter"
    lines += ["", f"Answer with {letters}: exercises.check({q.key!r}, ...)"]
    if q.minutes_on_cpu:
        lines.append(f"The experiment takes {_run_time(q.minutes_on_cpu)} on a laptop CPU.")
    return "\n".join(lines)


def hint(key: str) -> str:
    return _get(key).hint


def solution(key: str) -> str:
    """The worked answer. Try `check` first: reading it before writing yours teaches less."""
    return _get(key).solution


def _as_tensor(x: Any) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def _same(a: Any, b: Any, rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    a, b = _as_tensor(a), _as_tensor(b)
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=rtol, atol=atol))


def _short(t: torch.Tensor) -> str:
    return f"{t.item():.4f}" if t.numel() == 1 else f"{[round(x, 4) for x in t.flatten()[:3].tolist()]}..."


def check(key: str, answer: Callable[..., Any] | str | None, seed: int = 0) -> Verdict:
    """Run `answer` on a batch and compare it with labkit's computation: right, close (a known mistake,
    or within 5%), or wrong (with what came out against what was expected). For a question, `answer` is
    its letter(s), e.g. "b" or "a, c": right, close or wrong, with the explanation of each letter given."""
    ex = _get(key)
    if isinstance(ex, Question):
        return _check_question(ex, answer)
    if not callable(answer):
        return Verdict(
            "wrong", f"pass the function itself, e.g. check({key!r}, my_function), not {type(answer).__name__}"
        )
    args = ex.inputs(torch.Generator().manual_seed(seed))
    want = ex.reference(*args)
    try:
        got = answer(*args)
    except NotImplementedError:
        return Verdict(
            "not attempted", f"fill in the line(s) of `{ex.signature.split('(')[0][4:]}` and run the cell again"
        )
    except Exception as err:  # the learner's code: any error is feedback, never a crash of the chapter
        return Verdict("wrong", f"your function raised {type(err).__name__}: {err}")
    if got is None:
        return Verdict("wrong", "your function returned None: did you forget `return`?")
    try:
        got_t = _as_tensor(got.detach() if torch.is_tensor(got) else got)
    except (TypeError, ValueError, RuntimeError):
        return Verdict("wrong", f"your function returned a {type(got).__name__}, not a number or a tensor")
    want_t = _as_tensor(want)
    if _same(got_t, want_t):
        return Verdict("right", "it matches labkit's computation on this batch")
    for what, mistake in ex.mistakes:
        if _same(got_t, mistake(*args)):
            return Verdict("wrong", f"close in spirit, but you {what}")
    if got_t.shape != want_t.shape:
        return Verdict(
            "wrong", f"expected a result of shape {tuple(want_t.shape)}, your function returned {tuple(got_t.shape)}"
        )
    gap = float((got_t - want_t).abs().max() / want_t.abs().max().clamp(min=1e-12))
    if gap < 0.05:
        return Verdict("close", f"within {gap:.1%} of labkit's value: a rounding or an epsilon away")
    return Verdict("wrong", f"expected {_short(want_t)}, got {_short(got_t)}; `hint({key!r})` may help")


def _letters(q: Question, answer: str) -> list[str]:
    """The distinct letters of `answer` ("B", " a, c ", "(b)"), in the choices' order; ValueError if one is
    not a choice."""
    given = re.sub(r"[\s,;/&+()]", "", answer.lower())
    if set(given) - set(q.choices):
        *first, last = q.choices
        raise ValueError(
            f"{answer!r} is not a choice of {q.key}: answer with {', '.join(first)} or {last} "
            f"(exercises.show({q.key!r}) lists the choices)"
        )
    return [letter for letter in q.choices if letter in given]


def _check_question(q: Question, answer: Any) -> Verdict:
    if answer is not None and not isinstance(answer, str):
        raise ValueError(
            f'{q.key} is a question: answer with its letter(s) as a string, check({q.key!r}, "<letter>"), '
            f"not a {type(answer).__name__}"
        )
    picked = _letters(q, answer or "")
    if not picked:
        return Verdict("not attempted", f"pick a letter: exercises.show({q.key!r}) lists the choices")

    def why(letters) -> str:
        return " ".join(f"({letter}) {q.choices[letter][1]}" for letter in letters)

    wrong = [letter for letter in picked if letter not in q.right and letter not in q.close]
    if wrong:
        return Verdict("wrong", f"{why(wrong)} `exercises.hint({q.key!r})` may help.")
    if set(picked) == set(q.right):
        return Verdict("right", why(picked))
    missing = len(set(q.right) - set(picked))
    partly = [letter for letter in picked if letter in q.close]
    if partly and not missing:
        note = f"Drop {', '.join(partly)}: only partly right."
    elif partly:
        note = "Partly right: another letter says it fully."
    else:
        note = "One more letter is right: which?" if missing == 1 else f"{missing} more letters are right."
    return Verdict("close", f"{why(picked)} {note}")


def solution_function(key: str) -> Callable[..., Any]:
    """The worked solution as a function (the suite checks every one of them with `check`)."""
    ex = _get(key)
    if isinstance(ex, Question):
        raise ValueError(f"{key} is a question, answered with letters: read its reasoning with solution({key!r})")
    header = ex.signature.split("#")[0].strip()
    body = "\n".join("    " + line for line in ex.solution.splitlines())
    namespace: dict[str, Any] = {"torch": torch, "F": F, "math": math}
    exec(f"{header}\n{body}\n", namespace)  # noqa: S102 - labkit's own source text, not user input
    return namespace[header[4:].split("(")[0]]
