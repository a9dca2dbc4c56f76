"""Monitoring: watching an aligned model after deployment, window by window, against bands.

Stage: after deployment (chapter 08). Inputs: the request stream (`traffic_mix` draws which segment
each request comes from, with a mix that drifts on a schedule) and one record per reply that the
caller has already scored: `t` (request index or timestamp), `toxic` (0/1 verdict of the independent
judge), `reward` (reward-model score), `vague` (0/1 vague-reply flag), `length` (words), optionally
`segment`. Outputs: `rolling` (each metric per window, with a 95% interval), `Band`s set on a
baseline period, `Alert`s where a metric leaves its band, and `plot_monitoring` (a Figure).

The module is model-free on purpose: nothing here generates or scores replies, so what it reports
is only as good as the judge and reward model that scored them (the chapter says which they are).

Intervals (95%, per window, each window on its own: nothing corrects for watching many windows):
    toxic, vague     Wilson score interval (Wilson 1927): unlike p +- 1.96 se it stays inside
                     [0, 1] and does not collapse to a width of zero when a window holds no toxic reply.
    reward, length   normal interval mean +- 1.96 sd / sqrt(n). Over a window of 50 or more replies the
                     mean is close to normal; a bootstrap (`evaluate.bootstrap`) would add a seed and
                     a thousand resamples per window for the same answer, and `labkit.evaluate`
                     imports torch, which this module does not need.

Bands (`bands_from_baseline`): k standard errors of the DIFFERENCE between one window of the given
size and the baseline mean, so both the window's noise and the baseline's own are counted:
    share  p0 + k sqrt(p~ (1 - p~) (1/w + 1/n0)), an upper bound only (fewer toxic replies is no alarm);
           p~ = (x + 2) / (n0 + 4) (Agresti-Coull), so a baseline with no toxic reply still gets a band.
    mean   m0 +- k sd0 sqrt(1/w + 1/n0), two-sided (reward or length moving either way is news).
k = 3 puts a baseline-like window outside its band about 0.3% of the time (normal tails; a small
share's binomial tail is a little heavier).

Alerts (`alerts`): a metric must sit outside its band for `consecutive` windows in a row. That is the
false-alarm trade-off: one window alone flaps (4 metrics x 100 windows a day x 0.3% is about one false
alarm a day); requiring c windows makes a false alarm much rarer (neighbour windows overlap, so not quite
0.003^c) but a real drift is reported (c - 1) x step requests later.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = [
    "Alert",
    "Band",
    "EXAMPLE_SCHEDULE",
    "METRICS",
    "Z95",
    "alerts",
    "bands_from_baseline",
    "plot_monitoring",
    "rolling",
    "scored_stream",
    "traffic_mix",
    "wilson_interval",
]

Z95 = 1.959964
"""The two-sided 95% normal quantile, used by every interval here."""

METRICS: dict[str, str] = {
    "toxic": "toxic share",
    "vague": "vague share",
    "reward": "mean reward",
    "length": "mean length (words)",
}
"""Monitored columns and how messages and plots name them; toxic and vague are 0/1 shares, the rest means."""
SHARES = ("toxic", "vague")

EXAMPLE_SCHEDULE: dict[int, dict[str, float]] = {
    0: {"everyday": 0.95, "adversarial": 0.05},
    600: {"everyday": 0.45, "adversarial": 0.55},
    800: {"everyday": 0.30, "adversarial": 0.55, "new_topic": 0.15},
}
"""A drifting mix for the chapter: adversarial prompts rise from 5% to 55% at request 600 (say, a forum
of hostile users finds the bot) and a topic the model never saw in training appears at request 800."""


# -- the stream -----------------------------------------------------------------------------------


def traffic_mix(n: int, schedule: Mapping[int, Mapping[str, float]], seed: int = 0) -> pd.DataFrame:
    """Which segment each of n requests comes from: columns t (0..n-1) and segment.

    `schedule` maps the request index where a mix starts to that mix ({segment: share}, shares sum
    to 1); each mix holds until the next one starts, and the first must start at request 0. A gradual
    drift is several steps. The same seed gives the same stream.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1 request (got {n})")
    if not schedule or 0 not in schedule:
        raise ValueError("schedule must give the mix at request 0, e.g. {0: {'everyday': 1.0}, 600: {...}}")
    starts = sorted(schedule)
    segments = sorted({s for mix in schedule.values() for s in mix})
    for start in starts:
        shares = schedule[start]
        if any(v < 0 for v in shares.values()):
            raise ValueError(f"schedule[{start}] has a negative share: {dict(shares)}")
        if not math.isclose(sum(shares.values()), 1.0, abs_tol=1e-6):
            raise ValueError(f"schedule[{start}] shares sum to {sum(shares.values()):.4f}, not 1: {dict(shares)}")
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    phase = np.searchsorted(starts, t, side="right") - 1  # index of the mix in force at each request
    probs = np.array([[schedule[s].get(seg, 0.0) for seg in segments] for s in starts])  # (phases, segments)
    # one uniform draw per request against its phase's cumulative shares: deterministic per seed
    u = rng.random(n)
    cum = np.cumsum(probs[phase], axis=1)  # (n, segments)
    picked = np.minimum((u[:, None] >= cum).sum(axis=1), len(segments) - 1)
    return pd.DataFrame({"t": t, "segment": np.array(segments, dtype=object)[picked]})


def scored_stream(records: pd.DataFrame | Iterable[Mapping], metrics: Sequence[str] = tuple(METRICS)) -> pd.DataFrame:
    """The production stream as this module reads it: scored reply records, checked and ordered by t.

    Takes a DataFrame or a list of dicts with `t` and the `metrics` columns (optional `segment` and
    anything else are kept). The replies and their scores come from the caller (the chapter generates
    them with the model for `traffic_mix`'s requests); nothing is simulated beyond their order.
    """
    frame = records.copy() if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    if frame.empty:
        raise ValueError("records are empty: score some replies first")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}: choose from {list(METRICS)}")
    for column in ("t", *metrics):
        if column not in frame.columns:
            others = [m for m in metrics if m != column]
            fix = f", or pass metrics={tuple(others)} to monitor without it" if column != "t" else ""
            raise ValueError(f"records lack column {column!r}: add it to every record{fix}")
    for column in metrics:
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.isna().any():
            row = int(values.isna().to_numpy().argmax())
            raise ValueError(f"column {column!r} has a missing or non-numeric value (row {row}): score every reply")
        if column in SHARES and not values.isin([0, 1]).all():
            raise ValueError(
                f"column {column!r} must hold 0/1 verdicts; threshold probabilities first, e.g. (p >= 0.5).astype(int)"
            )
        frame[column] = values.astype(float)
    return frame.sort_values("t", kind="stable").reset_index(drop=True)


# -- per-window metrics ---------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a share successes / n (Wilson 1927)."""
    if n < 1:
        raise ValueError(f"n must be at least 1 (got {n})")
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _mean_interval(values: np.ndarray, z: float = Z95) -> tuple[float, float]:
    if len(values) < 2:
        return -math.inf, math.inf
    half = z * float(values.std(ddof=1)) / math.sqrt(len(values))
    return float(values.mean()) - half, float(values.mean()) + half


def _check_window(window: int, step: int, n: int) -> None:
    if window < 1:
        raise ValueError(f"window must be at least 1 request (got {window}); 100 is a reasonable start")
    if step < 1:
        raise ValueError(f"step must be at least 1 request (got {step}); step = window: windows without overlap")
    if window > n:
        raise ValueError(f"window of {window} requests is longer than the stream ({n} records): pass window <= {n}")


def rolling(
    records: pd.DataFrame | Iterable[Mapping], window: int, step: int, metrics: Sequence[str] = tuple(METRICS)
) -> pd.DataFrame:
    """Each metric over windows of `window` consecutive requests, one window every `step` requests.

    Returns one row per (window, metric): start and end (t of the window's first and last request),
    n, metric, value, low and high (its 95% interval: Wilson for shares, normal for means).
    A last partial window is dropped, so every value rests on `window` replies.
    """
    stream = scored_stream(records, metrics)
    _check_window(window, step, len(stream))
    rows = []
    for first in range(0, len(stream) - window + 1, step):
        part = stream.iloc[first : first + window]
        for metric in metrics:
            values = part[metric].to_numpy()
            if metric in SHARES:
                low, high = wilson_interval(int(values.sum()), len(values))
            else:
                low, high = _mean_interval(values)
            rows.append(
                {
                    "start": part["t"].iloc[0],
                    "end": part["t"].iloc[-1],
                    "n": len(values),
                    "metric": metric,
                    "value": float(values.mean()),
                    "low": low,
                    "high": high,
                }
            )
    return pd.DataFrame(rows, columns=["start", "end", "n", "metric", "value", "low", "high"])


# -- bands and alerts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """Where a metric is expected to stay, and how that was decided."""

    metric: str
    """Monitored column ("toxic", "vague", "reward", "length")."""
    low: float | None
    """Lowest acceptable window value; None: no lower bound (a share may fall freely)."""
    high: float | None
    """Highest acceptable window value; None: no upper bound."""
    rule: str
    """How the band was set, in words: baseline period, its value, k and the window size."""

    def contains(self, value: float) -> bool:
        """Whether a window value is inside the band (the edges count as inside)."""
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        if self.low is None:
            return f"<= {self.high:.3g}"
        if self.high is None:
            return f">= {self.low:.3g}"
        return f"[{self.low:.3g}, {self.high:.3g}]"


def bands_from_baseline(
    records: pd.DataFrame | Iterable[Mapping],
    baseline: int,
    window: int,
    k: float = 3.0,
    metrics: Sequence[str] = tuple(METRICS),
) -> dict[str, Band]:
    """Bands from the first `baseline` requests, for windows of `window` requests (the module docstring
    gives the rule): shares get an upper bound, means a two-sided band; k standard errors wide."""
    stream = scored_stream(records, metrics)
    if not 1 <= baseline <= len(stream):
        raise ValueError(f"baseline must be between 1 and the stream's {len(stream)} requests (got {baseline})")
    _check_window(window, 1, len(stream))
    if k <= 0:
        raise ValueError(f"k must be > 0 standard errors (got {k}); 3 is the usual choice")
    base = stream.iloc[:baseline]
    n0, scale = len(base), math.sqrt(1 / window + 1 / len(base))
    where = f"baseline requests {base['t'].iloc[0]}-{base['t'].iloc[-1]} (n={n0})"
    bands = {}
    for metric in metrics:
        values = base[metric].to_numpy()
        if metric in SHARES:
            p0, p_se = float(values.mean()), (values.sum() + 2) / (n0 + 4)  # Agresti-Coull p for the SE
            high = min(1.0, p0 + k * math.sqrt(p_se * (1 - p_se)) * scale)
            rule = f"{where}: share {p0:.3f} + {k:g} SE of a {window}-request window vs the baseline"
            bands[metric] = Band(metric, None, high, rule)
        else:
            m0 = float(values.mean())
            sd0 = float(values.std(ddof=1)) if n0 > 1 else 0.0
            half = k * sd0 * scale
            rule = f"{where}: mean {m0:.3g} +- {k:g} SE of a {window}-request window vs the baseline"
            bands[metric] = Band(metric, m0 - half, m0 + half, rule)
    return bands


@dataclass(frozen=True)
class Alert:
    """A metric outside its band for enough windows in a row; fired at the window that made it enough."""

    metric: str
    """Monitored column."""
    since: object
    """t of the first request of the first window outside the band (when the trouble shows)."""
    start: object
    """t of the first request of the window that fired the alert."""
    end: object
    """t of the last request of that window: the alert is known from here on."""
    value: float
    """The metric in the firing window."""
    low: float
    """Lower end of that value's 95% interval."""
    high: float
    """Upper end of that value's 95% interval."""
    band: Band
    """The band it left."""
    windows: int
    """Windows in a row outside the band when it fired (the `consecutive` asked for)."""
    direction: str
    """"above" or "below" the band."""
    message: str
    """The alert in plain words."""


def _where(t: object) -> str:
    return f"request {t}" if isinstance(t, int | np.integer) else str(t)


def alerts(rolling_df: pd.DataFrame, bands: Mapping[str, Band], consecutive: int = 2) -> list[Alert]:
    """One Alert per run of at least `consecutive` windows in a row outside a metric's band.

    Windows are judged by their value (the band already allows for a window's noise); the alert fires
    at the `consecutive`-th window of the run and the run then counts once, however long it lasts.
    Metrics without a band are not judged.
    """
    if consecutive < 1:
        raise ValueError(f"consecutive must be at least 1 window (got {consecutive})")
    missing = {"start", "end", "metric", "value", "low", "high"} - set(rolling_df.columns)
    if missing:
        raise ValueError(f"rolling_df lacks column(s) {sorted(missing)}: pass what `monitoring.rolling` returns")
    found = []
    for metric, band in bands.items():
        rows = rolling_df[rolling_df["metric"] == metric].sort_values("start", kind="stable")
        run = 0
        since = None
        for row in rows.itertuples(index=False):
            if band.contains(row.value):
                run = 0
                continue
            run += 1
            since = row.start if run == 1 else since
            if run != consecutive:
                continue
            direction = "above" if band.high is not None and row.value > band.high else "below"
            edge = band.high if direction == "above" else band.low
            message = (
                f"{METRICS.get(metric, metric)} {row.value:.3g} [{row.low:.3g}, {row.high:.3g}] {direction} its band "
                f"{edge:.3g} for {consecutive} window{'s' * (consecutive > 1)} since {_where(since)}"
            )
            found.append(
                Alert(metric, since, row.start, row.end, row.value, row.low, row.high, band, run, direction, message)
            )
    return sorted(found, key=lambda a: (a.end, a.metric))


# -- the figure -----------------------------------------------------------------------------------


def plot_monitoring(
    rolling_df: pd.DataFrame, bands: Mapping[str, Band] | None = None, alerts: Sequence[Alert] = ()
) -> Figure:
    """One panel per metric against the end of each window: the value (first line of each panel), its
    95% interval shaded, the band as a green region, alerts as red dots on the window that fired them."""
    bands = bands or {}
    metrics = [m for m in METRICS if m in set(rolling_df["metric"])] + sorted(set(rolling_df["metric"]) - set(METRICS))
    if not metrics:
        raise ValueError("rolling_df holds no windows: pass what `monitoring.rolling` returns")
    fig = Figure(figsize=(4.2 * len(metrics), 3.2), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        rows = rolling_df[rolling_df["metric"] == metric].sort_values("end", kind="stable")
        x, y = rows["end"].to_numpy(), rows["value"].to_numpy()
        ax.plot(x, y, color="#4c72b0", marker=".", label=metric)
        low, high = rows["low"].to_numpy(float), rows["high"].to_numpy(float)
        ax.fill_between(x, np.where(np.isfinite(low), low, y), np.where(np.isfinite(high), high, y), alpha=0.25)
        band = bands.get(metric)
        if band is not None:
            bottom = band.low if band.low is not None else min(0.0, float(np.nanmin(low)))
            top = band.high if band.high is not None else max(float(np.nanmax(high)), bottom)
            ax.axhspan(bottom, top, color="#2e7d32", alpha=0.12, label=f"band {band}")
        fired = [a for a in alerts if a.metric == metric]
        if fired:
            ax.plot([a.end for a in fired], [a.value for a in fired], "o", color="#c0392b", label="alert")
        ax.set_title(METRICS.get(metric, metric))
        ax.set_xlabel("request (window end)")
        ax.legend(fontsize=7, loc="best")
    return fig
