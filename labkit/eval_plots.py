"""Plots and tables for the evaluation chapter: before vs after, and methods side by side.

Inputs: `evaluate.EvalResult`s (or their metric dicts). Outputs: matplotlib Figures (the notebook
displays them; tests read their data) and pandas DataFrames.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from labkit.evaluate import EvalResult, Metric

__all__ = ["example_table", "method_bars", "methods_vs_kl", "paired_scatter", "toxicity_histograms"]


def _judges(result: EvalResult, judge: str | None) -> list[str]:
    if judge is None:
        return list(result.judges)
    if judge not in result.judges:
        raise ValueError(f"no judge {judge!r} in this result; it has {result.judges}")
    return [judge]


def toxicity_histograms(before: EvalResult, after: EvalResult, judge: str | None = None, bins: int = 20) -> Figure:
    """Overlaid histograms of P(toxic) per sample, before and after, one panel per judge."""
    judges = _judges(before, judge)
    fig = Figure(figsize=(4.5 * len(judges), 3.2), layout="constrained")
    axes = fig.subplots(1, len(judges), squeeze=False)[0]
    edges = np.linspace(0, 1, bins + 1)
    for ax, j in zip(axes, judges):
        for result, label, color in ((before, "before", "tab:gray"), (after, "after", "tab:blue")):
            values = result.table[f"tox.{j}"].to_numpy()
            ax.hist(values, bins=edges, alpha=0.55, color=color, label=f"{label} (n={len(values)})")
        ax.axvline(0.5, color="k", lw=0.8, ls="--")
        ax.set(title=f"judge: {j}", xlabel="P(toxic)", ylabel="samples")
        ax.legend(fontsize=8)
    return fig


def paired_scatter(before: EvalResult, after: EvalResult, judge: str | None = None) -> Figure:
    """Per prompt: mean P(toxic) before (x) vs after (y); points under the diagonal improved."""
    j = _judges(before, judge)[0]
    col = f"tox.{j}"
    b = before.table.groupby("prompt_id", sort=False)[col].mean()
    a = after.table.groupby("prompt_id", sort=False)[col].mean()
    common = [p for p in b.index if p in a.index]
    fig = Figure(figsize=(4.2, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="k", lw=0.8, ls="--")
    ax.scatter(b[common].to_numpy(), a[common].to_numpy(), s=18, alpha=0.8)
    improved = int((a[common] < b[common]).sum())
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="before: mean P(toxic)",
        ylabel="after: mean P(toxic)",
        title=f"{j}: {improved}/{len(common)} prompts less toxic",
    )
    return fig


def method_bars(
    results: dict[str, EvalResult | dict[str, Metric]], metric: str = "toxic_share", judge: str | None = None
) -> Figure:
    """One bar per method (base, best-of-N, PPO, DPO) with 95% CI error bars, labelled with its KL."""
    names, values, lows, highs, labels = [], [], [], [], []
    for method, result in results.items():
        metrics = result.metrics if isinstance(result, EvalResult) else result
        key = metric
        if key not in metrics and judge is not None:
            key = f"{judge}.{metric}"
        if key not in metrics:  # the first judge's: metrics keep the headline judge first
            key = next((k for k in metrics if k.endswith(f".{metric}")), key)
        if key not in metrics:
            raise ValueError(f"method {method!r} has no metric {metric!r}; it has {sorted(metrics)}")
        m = metrics[key]
        kl = metrics.get("kl")
        names.append(method)
        values.append(m.value)
        lows.append(m.value - m.ci_low)
        highs.append(m.ci_high - m.value)
        labels.append(f"{method}\nKL={kl.value:.2f}" if kl is not None else method)
    fig = Figure(figsize=(1.4 * len(names) + 2, 3.4), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(names))
    ax.bar(x, values, yerr=np.array([lows, highs]), capsize=4, color="tab:blue", alpha=0.8)
    ax.set_xticks(x, labels)
    ax.set(ylabel=metric, title=f"{metric} by method (95% bootstrap CI)")
    return fig


def example_table(before: EvalResult, after: EvalResult, n: int = 5, judge: str | None = None) -> pd.DataFrame:
    """The first reply before and after for the first `n` shared prompts, with their P(toxic)."""
    j = _judges(before, judge)[0]
    b = before.table.drop_duplicates("prompt_id").set_index("prompt_id")
    a = after.table.drop_duplicates("prompt_id").set_index("prompt_id")
    common = [p for p in b.index if p in a.index][:n]
    return pd.DataFrame(
        {
            "prompt": b.loc[common, "prompt"].to_numpy(),
            "before": b.loc[common, "text"].to_numpy(),
            f"before P(toxic) [{j}]": b.loc[common, f"tox.{j}"].to_numpy(),
            "after": a.loc[common, "text"].to_numpy(),
            f"after P(toxic) [{j}]": a.loc[common, f"tox.{j}"].to_numpy(),
        }
    )


def methods_vs_kl(results: dict[str, EvalResult], metrics: tuple[str, ...] = ("toxic_share", "gold_utility")) -> Figure:
    """Each method as a point at its KL to the base, one panel per metric, with 95% CI bars.

    The toxicity metric is the first (independent) judge's. This is the lab's summary picture:
    what each method bought, and how far it moved from the base model to buy it.
    """
    fig = Figure(figsize=(4.6 * len(metrics), 3.6), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        for i, (method, result) in enumerate(results.items()):
            key = metric if metric in result.metrics else f"{result.judges[0]}.{metric}"
            if key not in result.metrics or "kl" not in result.metrics:
                raise ValueError(
                    f"method {method!r} lacks {metric!r} or 'kl'; evaluate it with a reference or evaluate.with_kl"
                )
            m, kl = result.metrics[key], result.metrics["kl"]
            ax.errorbar(
                [kl.value],
                [m.value],
                yerr=[[m.value - m.ci_low], [m.ci_high - m.value]],
                xerr=[[kl.value - kl.ci_low], [kl.ci_high - kl.value]],
                marker="o",
                capsize=3,
                color=f"C{i}",
                label=method,
            )
            ax.annotate(method, (kl.value, m.value), textcoords="offset points", xytext=(5, 5), fontsize=8)
        judge = next(iter(results.values())).judges[0] if metric not in next(iter(results.values())).metrics else ""
        ax.set(
            xlabel="KL to the base model (nats per reply)",
            ylabel=f"{metric}{f' [{judge}]' if judge else ''}",
            title=f"{metric} against KL",
        )
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig
