"""Small shared plots for the chapters; each function returns a matplotlib Figure.

Stage-specific figures live with their stage (ppo_plots, eval_plots, agreement); these are the
ones several chapters use.
"""

from __future__ import annotations

from collections import Counter

from matplotlib.figure import Figure

__all__ = ["style_shares"]


def style_shares(styles: list[str | None], order: tuple[str, ...] | None = None, title: str = "Reply styles"):
    """Bar chart of the share of each recognised style (None counts as "unrecognised")."""
    counts = Counter(s or "unrecognised" for s in styles)
    labels = list(order or sorted(counts))
    if "unrecognised" in counts and "unrecognised" not in labels:
        labels.append("unrecognised")
    shares = [counts.get(label, 0) / max(1, len(styles)) for label in labels]
    fig = Figure(figsize=(7, 3))
    ax = fig.subplots()
    colours = ["#c0392b" if label == "rude" else "#4c72b0" for label in labels]
    ax.bar(labels, shares, color=colours)
    ax.set_ylabel("share of replies")
    ax.set_ylim(0, 1)
    ax.set_title(f"{title} (n={len(styles)})")
    for x, y in enumerate(shares):
        ax.text(x, y + 0.02, f"{y:.0%}", ha="center")
    fig.tight_layout()
    return fig
