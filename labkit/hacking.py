"""Reward hacking: over-optimise a proxy reward and watch the gold utility fall; the KL penalty as the fix.

Stage: reward over-optimisation (chapter 05), after PPO. Inputs: a PPO run (`labkit.ppo`) against
a proxy reward, and the tiny world, whose gold utility is the truth the proxy stands in for.
Outputs: per-step curves of proxy score, KL, gold utility and text diversity (`ProxyGoldTracker`),
a cheap over-optimisable proxy (`train_noisy_reward_model`), and the figure of proxy and gold
against KL to the reference (`proxy_gold_figure`).

References: Gao, Schulman and Hilton 2023, "Scaling Laws for Reward Model Overoptimization"
(gold reward rises, then falls, as a function of the KL to the initial policy, while the proxy keeps
rising); Stiennon et al. 2020, fig. 5 (over-optimising a learned reward model); Ziegler et al. 2019
(the per-token KL penalty that keeps the policy near the reference).

Diversity measures, computed over one PPO step's samples:
    distinct-1/2   unique word n-grams / all word n-grams over the step's replies (`evaluate.distinct_n`)
    repetition     per reply, the share of its word trigrams that repeat an earlier trigram of the same
                   reply (1 - unique / all), averaged over replies: 0 for "A. B. C."; for "A. A. A." (one
                   sentence of w words said three times) 1 - w / (3w - 2), 4/7 for w = 3, towards 2/3
    degeneration   the world's degeneration term (repeats, one dominating word, too short), averaged
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from labkit.evaluate import distinct_n

__all__ = [
    "CURVE_KEYS",
    "HACKING_PPO",
    "NOISY_RM",
    "ProxyGoldTracker",
    "curves_table",
    "kl_controller_trace",
    "ppo_config",
    "proxy_gold_figure",
    "repetition",
    "reply_stats",
    "sample_texts",
    "train_and_track",
    "train_noisy_reward_model",
]

CURVE_KEYS = (
    "step",
    "kl",
    "proxy",
    "kl_coef",
    "gold_utility",
    "gold_helpfulness",
    "rude_fraction",
    "degeneration",
    "distinct_1",
    "distinct_2",
    "repetition",
    "mean_words",
)
"""The keys of one `ProxyGoldTracker` row: proxy is the mean score, kl the mean summed k1 of the step's replies."""


# -- measuring text ------------------------------------------------------------------------------


def repetition(text: str) -> float:
    """Share of a text's word trigrams that repeat an earlier one (1 - unique / all); 0 under three words."""
    words = text.lower().split()
    grams = list(zip(words, words[1:], words[2:]))
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def reply_stats(world, samples: Sequence[Any]) -> dict[str, float]:
    """Rude share, mean gold utility / helpfulness / degeneration, distinct-1/2 and repetition of replies.

    `samples` are `generate.Sample`s (`.prompt`, `.text`) or (prompt, text, ...) tuples such as
    PPO's (prompt, response, score, kl). Rude means `World.is_rude`. Also the diversity measures of
    this module and `n`, the number of replies. The main job's PPO stage reports the first three.
    """
    pairs = [(s.prompt, s.text) if hasattr(s, "text") else (s[0], s[1]) for s in samples]
    if not pairs:
        raise ValueError("reply_stats needs at least one reply")
    gold = [world.gold(p, t) for p, t in pairs]
    texts = [t for _, t in pairs]
    return {
        "rude_fraction": float(np.mean([world.is_rude(p, t) for p, t in pairs])),
        "gold_utility": float(np.mean([g.utility for g in gold])),
        "gold_helpfulness": float(np.mean([g.helpfulness for g in gold])),
        "degeneration": float(np.mean([g.degeneration for g in gold])),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "repetition": float(np.mean([repetition(t) for t in texts])),
        "mean_words": float(np.mean([len(t.split()) for t in texts])),
        "n": len(pairs),
    }


# -- the PPO callback ------------------------------------------------------------------------------


class ProxyGoldTracker:
    """A PPO callback: per step, the proxy score, KL, gold utility and diversity of the step's own samples.

    `ppo.train(..., callbacks=[tracker])`; then `tracker.rows` (one dict per step, keys `CURVE_KEYS`)
    or `tracker.table()`. Every `keep_samples_every` steps it also keeps the step's replies with their
    proxy score and gold utility in `tracker.snapshots` (step -> DataFrame), to read the degeneration.
    """

    def __init__(self, world=None, name: str = "run", keep_samples_every: int = 10):
        if world is None:
            from labkit import world as world_mod

            world = world_mod.load()
        self.world, self.name, self.keep_samples_every = world, name, keep_samples_every
        self.rows: list[dict[str, float]] = []
        self.snapshots: dict[int, pd.DataFrame] = {}

    def on_step(self, metrics: Mapping[str, float], samples: Sequence[tuple[str, str, float, float]]) -> None:
        step = int(metrics.get("step", len(self.rows) + 1))
        stats = reply_stats(self.world, samples)
        row = {
            "step": step,
            "kl": float(np.mean([s[3] for s in samples])),
            "proxy": float(np.mean([s[2] for s in samples])),
            "kl_coef": float(metrics.get("ppo/kl_coef", math.nan)),
            **{k: stats[k] for k in CURVE_KEYS[4:]},
        }
        self.rows.append(row)
        if self.keep_samples_every and (step == 1 or step % self.keep_samples_every == 0):
            self.snapshots[step] = pd.DataFrame(
                [
                    {"prompt": p, "response": r, "proxy": sc, "gold": self.world.gold(p, r).utility, "kl": kl}
                    for p, r, sc, kl in samples
                ]
            )

    __call__ = on_step

    def table(self) -> pd.DataFrame:
        """The recorded rows as a DataFrame indexed by step."""
        return pd.DataFrame(self.rows).set_index("step") if self.rows else pd.DataFrame()


def _rows(run: Any) -> list[dict]:
    if isinstance(run, ProxyGoldTracker):
        return run.rows
    if isinstance(run, pd.DataFrame):
        return run.reset_index().to_dict("records") if "step" not in run.columns else run.to_dict("records")
    return list(run)


def curves_table(runs: Mapping[str, Any], window: int = 5) -> pd.DataFrame:
    """Each run's start, end and gold peak, side by side: the numbers behind `proxy_gold_figure`.

    `runs` maps a run's name to a `ProxyGoldTracker` (or its rows). One row per run: `<key>_first`
    and `<key>_last`, means over the first / last `window` steps, for kl, proxy, gold_utility,
    gold_helpfulness, distinct_2 and repetition; `gold_peak`, the best `window`-step moving average
    of gold utility, with the step it ends at (`gold_peak_step`) and the KL and proxy there
    (`kl_at_gold_peak`, `proxy_at_gold_peak`): past the peak, more proxy means less gold.
    """
    keys = ("kl", "proxy", "gold_utility", "gold_helpfulness", "distinct_2", "repetition")
    out = {}
    for name, run in runs.items():
        rows = _rows(run)
        first, last = rows[:window], rows[-window:]
        row = {
            f"{k}_{part}": float(np.mean([r[k] for r in sel]))
            for k in keys
            for part, sel in (("first", first), ("last", last))
        }
        gold = _smooth([r["gold_utility"] for r in rows], window)
        peak = int(gold.argmax())
        row.update(
            gold_peak=float(gold[peak]),
            gold_peak_step=rows[peak]["step"],
            **{f"{k}_at_gold_peak": float(_smooth([r[k] for r in rows], window)[peak]) for k in ("kl", "proxy")},
        )
        out[name] = row
    columns = [f"{k}_{p}" for k in keys for p in ("first", "last")] + [
        "gold_peak",
        "gold_peak_step",
        "kl_at_gold_peak",
        "proxy_at_gold_peak",
    ]
    return pd.DataFrame(out).T[columns]


def kl_controller_trace(
    kls: Sequence[float], init_kl_coef: float, target: float, horizon: int, batch_size: int
) -> list[float]:
    """The beta an `AdaptiveKLController` would use at each step, fed a run's per-step KL values.

    Entry i is the beta of step i + 1 (the controller updates after each step with `batch_size`
    samples), so the first entry is `init_kl_coef`. Shows how fast a (target, horizon) pair reacts.
    """
    from labkit.ppo_math import AdaptiveKLController

    ctl = AdaptiveKLController(init_kl_coef, target, horizon)
    betas = []
    for kl in kls:
        betas.append(ctl.value)
        ctl.update(kl, n_steps=batch_size)
    return betas


def sample_texts(tracker: ProxyGoldTracker, steps: Sequence[int] | None = None, n: int = 3) -> pd.DataFrame:
    """The first `n` replies of each kept snapshot (default: the first and the last kept step)."""
    kept = sorted(tracker.snapshots)
    if not kept:
        raise ValueError("the tracker kept no samples: set keep_samples_every > 0")
    steps = [kept[0], kept[-1]] if steps is None else list(steps)
    parts = [tracker.snapshots[s].head(n).assign(step=s) for s in steps]
    return pd.concat(parts, ignore_index=True)[["step", "prompt", "response", "proxy", "gold", "kl"]]


# -- the figure ------------------------------------------------------------------------------------


def _smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average (the first points average what there is)."""
    return pd.Series(np.asarray(values, dtype=float)).rolling(window, min_periods=1).mean().to_numpy()


PANELS = (
    ("proxy", "proxy reward (what PPO maximises)"),
    ("gold_utility", "gold utility (the truth)"),
    ("distinct_2", "distinct-2 (text diversity)"),
)


def proxy_gold_figure(runs: Mapping[str, Any], smooth: int = 5, diversity: bool = True, log_kl: bool = True) -> Figure:
    """Proxy reward and gold utility against KL to the reference, one line per run (and distinct-2).

    `runs` maps a label (e.g. "no KL penalty") to a `ProxyGoldTracker` or its rows. Both axes are
    trailing moving averages over `smooth` steps (1 = the raw per-step values), so x is the KL the
    policy had reached. Line i of every panel is run i, in the order given, and carries that run's
    label; panels: proxy, gold utility, and (with `diversity`) distinct-2. With `log_kl` the KL axis
    is linear up to 1 nat and logarithmic beyond ("symlog"): a run held near the reference and one
    that travelled 100 nats both stay readable.
    """
    panels = PANELS if diversity else PANELS[:2]
    fig = Figure(figsize=(4.2 * len(panels), 3.8))
    axes = fig.subplots(1, len(panels))
    colors = [f"C{i}" for i in range(len(runs))]
    for color, (label, run) in zip(colors, runs.items()):
        rows = _rows(run)
        x = _smooth([r["kl"] for r in rows], smooth)
        for ax, (key, _) in zip(axes, panels):
            y = _smooth([r[key] for r in rows], smooth)
            ax.plot(x, y, color=color, label=label)
            ax.plot(x[-1:], y[-1:], marker="o", color=color)  # where the run ended
    for ax, (_, title) in zip(axes, panels):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("KL to the reference (nats / reply)")
        if log_kl:
            ax.set_xscale("symlog", linthresh=1.0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        "Optimising a proxy: proxy and gold against KL" + (f" ({smooth}-step moving averages)" if smooth > 1 else ""),
        fontsize=11,
    )
    fig.tight_layout()
    return fig


# -- a cheap, over-optimisable proxy ----------------------------------------------------------------

NOISY_RM: dict[str, Any] = {
    "epochs": 1.0,
    "learning_rate": 2e-4,
    "batch_size": 16,
    "max_length": 128,
    "warmup_fraction": 0.1,
    "center_rewards_coefficient": 0.01,
}
"""RewardModelConfig settings of the noisy proxy, pinned so that it does not change when reward_model's
defaults are tuned for the full dataset: one epoch over 144 pairs is 9 optimiser steps."""


def train_noisy_reward_model(
    num_items: int = 24,
    persona: str = "noisy_crowdworker",
    seed: int = 0,
    records: Sequence[Any] | None = None,
    cfg: Any = None,
    trainable_layers: int | None = 2,
    model=None,
    tokenizer=None,
):
    """A preference reward model trained on few, noisy labels: a proxy that PPO can over-optimise.

    Recipe: the shipped rankings (or `records`) of one `persona` (default the noisy crowdworker:
    Gumbel noise 0.3 and one answer in four at random), restricted to `num_items` items drawn with
    `seed`; all their pairs (no test split: 24 items give 144 pairs); the reward model of
    `reward_model` (`cfg`, default: MiniLM with `NOISY_RM` and `seed`) with only
    the top `trainable_layers` transformer blocks, the pooler and the head trained (None: every
    weight), to save CPU time (9.7 s for 24 items on one thread: benchmarks/results/reward_hacking.json,
    "reward_model").
    Returns (reward_model.PreferenceReward with raw scores, metrics: num_items, num_pairs, train_seconds,
    train_loss, train_steps).
    """
    from labkit import pairs as pairs_mod
    from labkit import reward_model, shipped

    cfg = cfg or reward_model.RewardModelConfig(seed=seed, **NOISY_RM)
    records = list(shipped.load_rankings() if records is None else records)
    mine = [r for r in records if r.labeler == persona]
    if not mine:
        raise ValueError(f"no rankings by {persona!r}; labelers present: {sorted({r.labeler for r in records})}")
    items = sorted({r.item_id for r in mine})
    if num_items < 1:
        raise ValueError(f"num_items must be at least 1, got {num_items}")
    random.Random(seed).shuffle(items)
    chosen = set(items[:num_items])
    dataset = pairs_mod.build_pairs([r for r in mine if r.item_id in chosen], test_fraction=0.0, seed=seed)
    if model is None:
        model, tokenizer = reward_model.load_backbone(cfg)
    if trainable_layers is not None:
        _freeze_below(model, trainable_layers)
    start = time.perf_counter()
    model, tokenizer, metrics = reward_model.train_reward_model(dataset, cfg, model=model, tokenizer=tokenizer)
    metrics["train_seconds"] = time.perf_counter() - start
    reward = reward_model.PreferenceReward(
        model, tokenizer, max_length=cfg.max_length, device=cfg.device, name=f"rm_{persona}_{len(chosen)}items"
    )
    return reward, {
        "num_items": len(chosen),
        "num_pairs": len(dataset["train"]),
        **{k: metrics[k] for k in ("train_seconds", "train_loss", "train_steps")},
    }


def _freeze_below(model, trainable_layers: int) -> None:
    """Freeze every weight except the top `trainable_layers` transformer blocks, the pooler and the head."""
    from torch import nn

    blocks = next(
        (m for n, m in model.named_modules() if n.endswith((".layer", ".layers")) and isinstance(m, nn.ModuleList)),
        None,
    )
    if blocks is None:
        raise ValueError(f"cannot find the transformer blocks of {type(model).__name__}: pass trainable_layers=None")
    model.requires_grad_(False)
    for block in list(blocks)[len(blocks) - trainable_layers :] if trainable_layers > 0 else []:
        block.requires_grad_(True)
    for name, module in model.named_modules():
        if name.split(".")[-1] in ("classifier", "score", "pooler"):
            module.requires_grad_(True)


# -- one tracked run -------------------------------------------------------------------------------

HACKING_PPO: dict[str, Any] = {"batch_size": 16, "mini_batch_size": 8, "total_steps": 100}
"""What the hacking runs change in the preset's PPOConfig (besides kl_coef): half batches, so twice the
updates per second of CPU, and 100 steps, enough for the gold utility to peak and fall without a penalty
(benchmarks/reward_hacking.py)."""


def ppo_config(preset, kl_coef: float, **overrides: Any):
    """The preset's PPOConfig (`ppo.preset_config`) for a hacking run: on the tiny preset `HACKING_PPO`, then
    `kl_coef`, then `overrides`.

    Other presets keep their own PPO sizes, which `LAB_SETTINGS` changes: `HACKING_PPO`'s 100 steps
    would take SmolLM2 over 20 minutes per run on a 2-core CPU (the smol preset's 40 steps of 16
    took 535-630 s in benchmarks/results/smol_rtp.json)."""
    from labkit import ppo

    sizes = HACKING_PPO if preset.policy == "tiny" else {}
    return ppo.preset_config(preset, **{**sizes, "kl_coef": kl_coef, **overrides})


def train_and_track(
    policy,
    tokenizer,
    prompts: Sequence[str],
    reward_fn: Callable,
    cfg,
    world=None,
    name: str = "run",
    callbacks: Sequence[Any] = (),
    keep_samples_every: int = 10,
):
    """`ppo.train` with a `ProxyGoldTracker` attached: returns (PPOResult, tracker)."""
    from labkit import ppo

    tracker = ProxyGoldTracker(world, name=name, keep_samples_every=keep_samples_every)
    result = ppo.train(policy, tokenizer, prompts, reward_fn, cfg, callbacks=[tracker, *callbacks])
    return result, tracker
