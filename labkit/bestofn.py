"""Best-of-N decoding: sample N replies, keep the one a reward scores highest.

Inputs: a policy, prompts, a reward callable `(prompts, responses) -> tensor (B,)`. Output: one
`generate.Sample` per prompt, plus a reward-vs-N table computed from ONE pool of samples.

No training, yet a strong baseline (Stiennon et al. 2020; Gao et al. 2023 use it to study reward
over-optimisation). Its distance from the base policy has a closed form,
KL(best-of-n || base) = log n - (n - 1) / n, which Beirami et al. (2024) show is an upper bound
(exact for continuous rewards without ties); `bon_kl_discrete` counts ties, which a pass/fail reward
has plenty of. The reward of best-of-n for every n <= N comes from
one pool of N samples per prompt by the unbiased estimator of E[max of n draws without
replacement]: sort the pool, weight the i-th smallest by C(i-1, n-1) / C(N, n).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

__all__ = [
    "BestOfNConfig",
    "best_of_n",
    "bestofn_stage",
    "bon_kl",
    "bon_kl_discrete",
    "bon_kl_pass_fail",
    "expected_best",
    "plot_reward_vs_n",
    "reward_vs_n",
    "select_best",
]


@dataclass
class BestOfNConfig:
    """Best-of-N settings for the main job."""

    n: int = 8
    """Samples per prompt the best is chosen from."""
    ns: tuple[int, ...] = (1, 2, 4, 8)
    """Values of n in the reward-vs-N table (each <= n; computed from the same pool)."""
    temperature: float = 1.0
    """Sampling temperature of the pool."""
    max_new_tokens: int = 48
    """Longest sampled reply, in tokens."""
    batch_size: int = 32
    """Sequences per generation batch."""
    seed: int = 0
    """Sampling seed."""
    prompting: str = "chat"
    """How prompts are put to the model (`models.render_prompts`): "chat" or "plain"."""


def bon_kl(n: int) -> float:
    """Analytic KL(best-of-n || base) = log n - (n - 1) / n, in nats (an upper bound)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return math.log(n) - (n - 1) / n


def bon_kl_discrete(scores: Sequence[float], n: int) -> float:
    """KL(best-of-n || base) for one prompt from a pool of its rewards, counting ties (nats).

    Replies with the same reward are interchangeable to best-of-n (`select_best` keeps the first of a
    tie: a uniformly random one, as the samples are i.i.d.), so a reply of reward r has its probability
    multiplied by (F(r)^n - F(r-)^n) / P(R = r), F the reward's CDF (Beirami et al. 2024, sec. 3), and
    KL = sum over reward values r of P(max of n = r) * log of that factor. The pool's frequencies
    stand in for the probabilities: a good estimate when the reward takes a few values (a pass/fail
    reward: KL = -log P(pass) when some sample passes almost surely); for a continuous reward each
    sample is its own value and the estimate stays below the analytic `bon_kl(n)`, which it approaches
    as the pool grows."""
    values = np.asarray(scores, float)
    if n < 1 or len(values) == 0:
        raise ValueError(f"need n >= 1 and at least one score, got n={n} and {len(values)} scores")
    _, counts = np.unique(values, return_counts=True)
    prob = counts / counts.sum()
    cdf = np.cumsum(prob)
    p_max = cdf**n - (cdf - prob) ** n  # P(the best of n has this value); > 0 wherever prob > 0
    return float(np.sum(p_max * np.log(p_max / prob)))


def bon_kl_pass_fail(p_pass: float, n: int) -> float:
    """KL(best-of-n || base) for a pass/fail reward that a sample passes with probability `p_pass` (nats).

    Best-of-n answers with a passing reply if any of the n passes (probability q = 1 - (1 - p)^n) and with
    a failing one otherwise, so KL = q log(q / p) + (1 - p)^n log((1 - p)^(n - 1)). It is 0 at n = 1, stays
    below the bound log n - (n - 1) / n, and reaches -log p(pass) only as n grows large enough that some
    sample passes almost surely: the "KL = -log P(pass)" of a pass/fail reward is a large-n limit.
    """
    if not 0 < p_pass <= 1 or n < 1:
        raise ValueError(f"need 0 < p_pass <= 1 and n >= 1, got p_pass={p_pass} and n={n}")
    fail_all = (1 - p_pass) ** n
    kl = (1 - fail_all) * math.log((1 - fail_all) / p_pass)
    if fail_all > 0:
        kl += fail_all * (n - 1) * math.log(1 - p_pass)
    return kl


def select_best(samples: list, scores: Sequence[float]) -> list:
    """Per prompt id (first-seen order), the sample with the highest score (first one on ties)."""
    if len(samples) != len(scores):
        raise ValueError(f"{len(samples)} samples but {len(scores)} scores")
    best: dict[str, tuple[float, object]] = {}
    for s, score in zip(samples, scores):
        if s.prompt_id not in best or float(score) > best[s.prompt_id][0]:
            best[s.prompt_id] = (float(score), s)
    return [s for _, s in best.values()]


def _score(reward: Callable, samples: list) -> np.ndarray:
    return torch.as_tensor(reward([s.prompt for s in samples], [s.text for s in samples])).float().cpu().numpy()


def best_of_n(
    model,
    tokenizer,
    prompts: Sequence,
    n: int,
    reward: Callable,
    *,
    k: int = 1,
    prompt_ids: list[str] | None = None,
    temperature: float = 1.0,
    max_new_tokens: int = 48,
    batch_size: int = 32,
    seed: int = 0,
    return_pool: bool = False,
    prompting: str = "chat",
):
    """Sample `n` replies per prompt and keep the reward's argmax; `k` > 1 repeats that k times per
    prompt (k winners, completion_id 0..k-1: what the evaluation's k samples per prompt need).
    With `return_pool`, also return (pool samples, their scores) for `reward_vs_n`."""
    from dataclasses import replace

    from labkit.generate import generate

    texts = [getattr(p, "text", p) for p in prompts]
    ids = prompt_ids or [getattr(p, "id", f"p{i}") for i, p in enumerate(prompts)]
    pool = generate(
        model,
        tokenizer,
        texts,
        n=n * k,
        prompt_ids=ids,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        progress=False,
        prompting=prompting,
    )
    scores = _score(reward, pool)
    # group g of a prompt = its completions g*n .. g*n+n-1; the best of each group is winner g
    keyed = [replace(s, prompt_id=f"{s.prompt_id}\x00{s.completion_id // n}") for s in pool]
    best = [
        replace(s, prompt_id=s.prompt_id.split("\x00")[0], completion_id=int(s.prompt_id.split("\x00")[1]))
        for s in select_best(keyed, scores)
    ]
    return (best, pool, scores) if return_pool else best


def expected_best(scores: np.ndarray, n: int, gold: np.ndarray | None = None) -> np.ndarray:
    """Per prompt, E[score of the best of n drawn without replacement from the pool]; scores (P, N).

    With `gold` (P, N), the expected GOLD value of the sample the scores pick (the over-optimisation
    curve of Gao et al. 2023)."""
    scores = np.asarray(scores, float)
    P, N = scores.shape
    if not 1 <= n <= N:
        raise ValueError(f"n={n} needs 1 <= n <= pool size {N}: sample a bigger pool or drop n from ns")
    order = np.argsort(scores, axis=1, kind="stable")  # ascending; the i-th smallest is best of n with this weight
    weights = np.array([math.comb(i, n - 1) for i in range(N)], float) / math.comb(N, n)  # C(i, n-1)/C(N, n), i 0-based
    values = np.take_along_axis(scores if gold is None else np.asarray(gold, float), order, axis=1)
    return values @ weights


def reward_vs_n(scores, ns: Sequence[int] = (1, 2, 4, 8, 16), gold=None) -> pd.DataFrame:
    """Table of n, analytic KL, mean best-of-n reward (and gold utility) with standard errors over prompts.

    `scores`: (P, N) array, or {prompt_id: [N scores]}; `gold` the same shape (gold of each sample)."""
    if isinstance(scores, dict):
        keys = list(scores)
        scores = np.array([scores[k] for k in keys], float)
        gold = None if gold is None else np.array([gold[k] for k in keys], float)
    scores = np.asarray(scores, float)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (prompts, pool size), got shape {scores.shape}")
    rows = []
    for n in ns:
        r = expected_best(scores, n)
        row = {
            "n": n,
            "kl": bon_kl(n),
            "reward": r.mean(),
            "reward_sem": r.std(ddof=1) / math.sqrt(len(r)) if len(r) > 1 else 0.0,
            "prompts": len(r),
        }
        if gold is not None:
            g = expected_best(scores, n, gold=gold)
            row.update(gold=g.mean(), gold_sem=g.std(ddof=1) / math.sqrt(len(g)) if len(g) > 1 else 0.0)
        rows.append(row)
    return pd.DataFrame(rows)


def plot_reward_vs_n(table: pd.DataFrame) -> Figure:
    """Reward (and gold) of best-of-n vs n on a log2 axis, KL of best-of-n on a second axis."""
    fig = Figure(figsize=(5.5, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.errorbar(
        table["n"], table["reward"], yerr=table["reward_sem"], marker="o", label="proxy reward", color="tab:blue"
    )
    if "gold" in table:
        ax.errorbar(
            table["n"], table["gold"], yerr=table["gold_sem"], marker="s", label="gold utility", color="tab:green"
        )
    ax.set_xscale("log", base=2)
    ax.set(
        xlabel="n (samples per prompt)",
        ylabel="score of the chosen sample",
        title=f"best-of-n (pool of {int(table['n'].max())}, {int(table['prompts'].iloc[0])} prompts)",
    )
    twin = ax.twinx()
    twin.plot(table["n"], table["kl"], ls="--", color="tab:red", label="KL (analytic)")
    twin.set_ylabel("KL to base (nats)", color="tab:red")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def bestofn_stage(
    model, tokenizer, prompts: Sequence, reward: Callable, cfg: BestOfNConfig | None = None, *, k: int = 1, world=None
) -> tuple[dict, dict[str, float]]:
    """The main job's entry point: `k` best-of-`cfg.n` winners per prompt, the reward-vs-n table and metrics.

    One pool of n * k samples per prompt serves both: each group of n gives one winner (what the
    evaluation's k samples per prompt need), and the whole pool of a prompt is one row of the
    reward-vs-n table (the estimator takes any pool of at least n; a bigger pool lowers its variance,
    and the standard errors are over prompts, the independent unit).
    Returns ({"samples": winners, "pool": all samples, "scores": the pool's rewards, "table": DataFrame},
    metrics); metrics `kl_analytic` (the bound `bon_kl(n)`) and `kl_discrete` (`bon_kl_discrete` on each
    prompt's pool, averaged over prompts: the KL once tied rewards are counted)."""
    cfg = cfg or BestOfNConfig()
    if max(cfg.ns) > cfg.n:
        raise ValueError(f"ns={cfg.ns} asks for more than the pool of n={cfg.n}; raise n or trim ns")
    best, pool, scores = best_of_n(
        model,
        tokenizer,
        prompts,
        cfg.n,
        reward,
        k=k,
        temperature=cfg.temperature,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        prompting=cfg.prompting,
        return_pool=True,
    )
    row = {p: i for i, p in enumerate(dict.fromkeys(s.prompt_id for s in pool))}
    grid = np.zeros((len(row), cfg.n * k))  # (P, n * k): every prompt's whole pool
    gold = np.zeros_like(grid) if world is not None else None
    for s, score in zip(pool, scores):
        grid[row[s.prompt_id], s.completion_id] = score
        if gold is not None:
            gold[row[s.prompt_id], s.completion_id] = world.gold(s.prompt, s.text).utility
    table = reward_vs_n(grid, cfg.ns, gold=gold)
    metrics = {
        "n": cfg.n,
        "kl_analytic": bon_kl(cfg.n),
        "kl_discrete": float(np.mean([bon_kl_discrete(r, cfg.n) for r in grid])),
        "reward_best": float(expected_best(grid, cfg.n).mean()),
        "reward_base": float(grid.mean()),
        "prompts": len(row),
    }
    if gold is not None:
        metrics.update(gold_best=float(expected_best(grid, cfg.n, gold=gold).mean()), gold_base=float(gold.mean()))
    return {"samples": best, "pool": pool, "scores": scores, "table": table}, metrics
