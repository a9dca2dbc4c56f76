"""PPO plots: a live figure for the notebook, the same figure rebuilt from metrics.jsonl, a sample table.

Inputs: the per-step metrics dicts `labkit.ppo` logs (keys explained in `ppo.METRIC_DOCS`) and its
(prompt, response, score, kl) samples; for `token_table`, one response's per-token log-probs.
Outputs: a matplotlib Figure, a pandas DataFrame.
The panels follow what the old TRL PPO examples and lm-human-preference-details watch: reward
(score and score minus KL penalty), KL to the reference (k1 and k3), entropy, clipping, value loss.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

__all__ = ["LivePlot", "PANELS", "load_metrics", "plot_metrics", "sample_table", "token_table"]

# (panel title, metric keys drawn in it)
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("reward", ("objective/scores", "objective/rlhf_reward")),
    ("KL to reference (nats / response)", ("objective/kl", "objective/kl_k3")),
    ("entropy (nats / token)", ("policy/entropy",)),
    ("clip fraction", ("policy/clipfrac", "val/clipfrac")),
    ("value loss", ("loss/value",)),
    ("response length (tokens)", ("ppo/mean_response_len",)),
)


def load_metrics(path: str | Path) -> list[dict]:
    """The per-step dicts of a metrics.jsonl file (a metrics folder works too)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no PPO metrics at {path}: pass the run's output_dir or its metrics.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _draw(fig: Figure, metrics: Sequence[dict]) -> Figure:
    fig.clear()
    axes = fig.subplots(2, 3).ravel()
    steps = [m.get("step", i + 1) for i, m in enumerate(metrics)]
    for ax, (title, keys) in zip(axes, PANELS):
        for key in keys:
            ax.plot(
                steps, [m.get(key, float("nan")) for m in metrics], label=key, marker="." if len(steps) < 30 else None
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("PPO step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_metrics(metrics: Sequence[dict] | str | Path) -> Figure:
    """The PPO dashboard (one line per metric key, x = step) from metrics dicts or a metrics.jsonl path."""
    if isinstance(metrics, (str, Path)):
        metrics = load_metrics(metrics)
    return _draw(Figure(figsize=(13, 6.5)), list(metrics))


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    return get_ipython() is not None


class LivePlot:
    """An `on_step` callback that redraws the PPO dashboard in place as training runs.

    In a notebook: `live = LivePlot(); display(live.widget); ppo.train(..., callbacks=[live])`.
    Outside one (tests, scripts) it just keeps `live.figure` up to date.
    """

    def __init__(self, every: int = 1):
        self.every = every
        self.metrics: list[dict] = []
        self.figure = Figure(figsize=(13, 6.5))  # not pyplot's: no duplicate inline display
        try:
            import ipywidgets

            self.widget = ipywidgets.Output()
        except ImportError:  # pragma: no cover - ipywidgets is a dependency
            self.widget = None

    def on_step(self, metrics: dict, samples=None) -> None:
        self.metrics.append(dict(metrics))
        if len(self.metrics) % self.every == 0:
            self.redraw()

    __call__ = on_step

    def redraw(self) -> Figure:
        _draw(self.figure, self.metrics)
        if self.widget is not None and _in_notebook():
            from IPython.display import clear_output, display

            with self.widget:
                clear_output(wait=True)
                display(self.figure)
        return self.figure


def sample_table(samples: Sequence[tuple[str, str, float, float]]) -> pd.DataFrame:
    """A `query | response | score | kl` table from a step's (prompt, response, score, kl) tuples."""
    return pd.DataFrame([tuple(s) for s in samples], columns=["query", "response", "score", "kl"])


def token_table(tokenizer, response_ids, logp, ref_logp, mask=None) -> pd.DataFrame:
    """One response token per row: the token, its log-prob under policy and reference, and the k1 and k3 KL terms.

    `response_ids`, `logp`, `ref_logp` (and the 0/1 `mask`) are one row of PPO's (B, T) tensors;
    rows where the mask is 0 (padding after EOS) are left out.
    """
    from labkit.ppo_math import kl_penalty

    ids, logp, ref_logp = (x.detach().cpu().reshape(-1) for x in (response_ids, logp, ref_logp))
    keep = slice(None) if mask is None else mask.detach().cpu().reshape(-1).bool()
    ids, logp, ref_logp = ids[keep], logp[keep].double(), ref_logp[keep].double()
    return pd.DataFrame(
        {
            "token": tokenizer.convert_ids_to_tokens(ids.tolist()),
            "logp_policy": logp.numpy(),
            "logp_ref": ref_logp.numpy(),
            "k1": kl_penalty(logp, ref_logp, "k1").numpy(),
            "k3": kl_penalty(logp, ref_logp, "k3").numpy(),
        }
    )
