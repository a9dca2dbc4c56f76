"""Monitoring: intervals, bands and alerts on synthetic scored streams with a planted drift or none."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from labkit import monitoring

DRIFT_AT = 600


def synthetic_records(n: int = 1200, seed: int = 0, drift: bool = False) -> pd.DataFrame:
    """Scored replies: 2% toxic, 10% vague, reward ~ N(1, 0.5), ~30 words; with drift, from request 600
    on 15% toxic and reward ~ N(0.6, 0.5)."""
    rng = np.random.default_rng(seed)
    after = drift & (np.arange(n) >= DRIFT_AT)
    return pd.DataFrame(
        {
            "t": np.arange(n),
            "toxic": (rng.random(n) < np.where(after, 0.15, 0.02)).astype(int),
            "vague": (rng.random(n) < 0.10).astype(int),
            "reward": rng.normal(np.where(after, 0.6, 1.0), 0.5),
            "length": rng.poisson(30, n),
        }
    )


def watch(records, consecutive: int = 2):
    """The chapter's recipe: windows of 100 every 50 requests, bands from the first 600."""
    table = monitoring.rolling(records, window=100, step=50)
    bands = monitoring.bands_from_baseline(records, baseline=600, window=100)
    return table, bands, monitoring.alerts(table, bands, consecutive=consecutive)


def test_wilson_interval_hand_computed():
    """2 of 10: centre (0.2 + z^2/20) / (1 + z^2/10), Wilson's half-width; 0 of 10 reaches 0 and z^2/(10+z^2)."""
    z2 = monitoring.Z95**2
    centre = (0.2 + z2 / 20) / (1 + z2 / 10)
    half = monitoring.Z95 / (1 + z2 / 10) * math.sqrt(0.2 * 0.8 / 10 + z2 / 400)
    assert (0.0567, 0.5098) == tuple(round(v, 4) for v in monitoring.wilson_interval(2, 10))
    assert pytest.approx((centre - half, centre + half)) == monitoring.wilson_interval(2, 10)
    assert pytest.approx((0.0, z2 / (10 + z2))) == monitoring.wilson_interval(0, 10)


def test_rolling_windows_values_and_intervals():
    """Windows of 4 every 2 requests over 8 records: shares, means and their intervals by hand."""
    records = [
        {"t": t, "toxic": tox, "vague": 0, "reward": r, "length": 10 + t}
        for t, tox, r in zip(range(8), [0, 1, 0, 0, 1, 1, 0, 0], [1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 1.0, 1.0])
    ]
    table = monitoring.rolling(list(reversed(records)), window=4, step=2)  # order comes from t
    assert [0, 2, 4] == list(table[table.metric == "toxic"].start)
    assert [3, 5, 7] == list(table[table.metric == "toxic"].end)
    toxic = table[table.metric == "toxic"]
    assert [0.25, 0.5, 0.5] == list(toxic.value)
    assert pytest.approx(monitoring.wilson_interval(1, 4)) == (toxic.low.iloc[0], toxic.high.iloc[0])
    reward = table[table.metric == "reward"].iloc[0]
    half = monitoring.Z95 * np.std([1.0, 2.0, 3.0, 4.0], ddof=1) / 2
    assert pytest.approx([2.5, 2.5 - half, 2.5 + half]) == [reward.value, reward.low, reward.high]
    assert {4} == set(table.n)


def test_bands_from_hand_written_baseline():
    """Baseline of 10: 1 toxic -> upper band only; reward mean 2, sd 1 -> 2 +- k sd sqrt(1/w + 1/n0)."""
    records = pd.DataFrame(
        {
            "t": range(10),
            "toxic": [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            "vague": [0] * 10,
            "reward": [1.0, 3.0] * 5,
            "length": [20] * 10,
        }
    )
    bands = monitoring.bands_from_baseline(records, baseline=10, window=5, k=2.0)
    scale = math.sqrt(1 / 5 + 1 / 10)
    p_se = 3 / 14  # Agresti-Coull: (1 + 2) / (10 + 4)
    assert bands["toxic"].low is None
    assert pytest.approx(0.1 + 2 * math.sqrt(p_se * (1 - p_se)) * scale) == bands["toxic"].high
    sd = np.std([1.0, 3.0] * 5, ddof=1)
    assert pytest.approx((2 - 2 * sd * scale, 2 + 2 * sd * scale)) == (bands["reward"].low, bands["reward"].high)
    assert (20.0, 20.0) == (bands["length"].low, bands["length"].high)
    assert bands["vague"].high > 0  # a share never seen in the baseline still gets room
    assert "baseline requests 0-9 (n=10)" in bands["toxic"].rule


def test_planted_drift_raises_toxic_alert_after_the_drift_only():
    """Toxic 2% -> 15% and reward down from request 600: a toxic alert whose firing window starts at or
    after 600 and whose run began in a window holding drifted requests; nothing fires before 600."""
    records = synthetic_records(seed=0, drift=True)
    _, _, found = watch(records)
    toxic = [a for a in found if a.metric == "toxic"]
    assert toxic, found
    assert toxic[0].start >= DRIFT_AT
    assert toxic[0].since + 100 > DRIFT_AT  # its first window outside the band held drifted requests
    assert "above" == toxic[0].direction
    assert any(a.metric == "reward" and a.direction == "below" for a in found)
    assert [] == [a for a in found if a.end < DRIFT_AT]
    assert toxic[0].message.startswith("toxic share ")
    assert f"for 2 windows since request {toxic[0].since}" in toxic[0].message


@pytest.mark.parametrize("seed", range(20))
def test_no_drift_no_alert(seed):
    """A stream like its baseline throughout raises no alert."""
    assert [] == watch(synthetic_records(seed=seed))[2]


def test_consecutive_windows_required():
    """A single window outside its band fires with consecutive=1 and not with consecutive=2."""
    table = pd.DataFrame(
        {
            "start": [0, 10, 20],
            "end": [9, 19, 29],
            "n": 10,
            "metric": "toxic",
            "value": [0.0, 0.5, 0.0],
            "low": 0.0,
            "high": 1.0,
        }
    )
    band = {"toxic": monitoring.Band("toxic", None, 0.2, "by hand")}
    assert [] == monitoring.alerts(table, band, consecutive=2)
    [alert] = monitoring.alerts(table, band, consecutive=1)
    assert (10, 10, 19, 0.5) == (alert.since, alert.start, alert.end, alert.value)
    assert "toxic share 0.5 [0, 1] above its band 0.2 for 1 window since request 10" == alert.message


def test_plot_holds_the_data():
    """One panel per metric; the first line is the window values, red dots sit on the alerts."""
    records = synthetic_records(seed=0, drift=True)
    table, bands, found = watch(records)
    fig = monitoring.plot_monitoring(table, bands, found)
    assert isinstance(fig, Figure)
    assert ["toxic share", "vague share", "mean reward", "mean length (words)"] == [a.get_title() for a in fig.axes]
    toxic = table[table.metric == "toxic"]
    line = fig.axes[0].lines[0]
    assert list(toxic.end) == list(line.get_xdata())
    assert pytest.approx(list(toxic.value)) == list(line.get_ydata())
    toxic_alerts = [a for a in found if a.metric == "toxic"]
    dots = fig.axes[0].lines[1]
    assert [a.end for a in toxic_alerts] == list(dots.get_xdata())


def test_traffic_mix_follows_schedule_and_seed():
    """Adversarial share ~5% before request 600 and ~40% after; new_topic only from 800; same seed, same stream."""
    mix = monitoring.traffic_mix(
        4000, {0: {"everyday": 0.95, "adversarial": 0.05}, 600: {"adversarial": 0.4, "everyday": 0.6}}, seed=1
    )
    before, after = mix[mix.t < 600], mix[mix.t >= 600]
    assert abs((before.segment == "adversarial").mean() - 0.05) < 0.03
    assert abs((after.segment == "adversarial").mean() - 0.40) < 0.03
    chapter = monitoring.traffic_mix(1200, monitoring.EXAMPLE_SCHEDULE, seed=0)
    assert not (chapter[chapter.t < 800].segment == "new_topic").any()
    assert (chapter[chapter.t >= 800].segment == "new_topic").mean() > 0.05
    assert chapter.equals(monitoring.traffic_mix(1200, monitoring.EXAMPLE_SCHEDULE, seed=0))
    assert not chapter.equals(monitoring.traffic_mix(1200, monitoring.EXAMPLE_SCHEDULE, seed=1))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: monitoring.rolling(r.drop(columns="vague"), 100, 50), "records lack column 'vague'"),
        (lambda r: monitoring.rolling(r.drop(columns="t"), 100, 50), "records lack column 't'"),
        (lambda r: monitoring.rolling(r, 0, 50), "window must be at least 1"),
        (lambda r: monitoring.rolling(r, 100, 0), "step must be at least 1"),
        (lambda r: monitoring.rolling(r, 5000, 50), "window of 5000 requests is longer than the stream (1200"),
        (lambda r: monitoring.rolling(r.assign(toxic=0.3), 100, 50), "'toxic' must hold 0/1 verdicts"),
        (lambda r: monitoring.bands_from_baseline(r, 0, 100), "baseline must be between 1 and"),
        (lambda r: monitoring.traffic_mix(10, {5: {"a": 1.0}}), "schedule must give the mix at request 0"),
        (lambda r: monitoring.traffic_mix(10, {0: {"a": 0.5, "b": 0.4}}), "shares sum to 0.9000, not 1"),
    ],
)
def test_errors_name_the_problem(call, message):
    """Bad input raises a ValueError that names the column or number and the fix."""
    with pytest.raises(ValueError) as err:
        call(synthetic_records())
    assert message in str(err.value)


def test_missing_column_error_offers_the_fix():
    """A missing metric column's error says how to monitor without it."""
    with pytest.raises(ValueError) as err:
        monitoring.rolling(synthetic_records().drop(columns="vague"), 100, 50)
    assert "metrics=('toxic', 'reward', 'length')" in str(err.value)


def test_imports_without_torch():
    """labkit.monitoring is pure Python: importing it loads neither torch nor ipywidgets."""
    code = "import sys, labkit.monitoring; print(sorted({'torch', 'ipywidgets'} & set(sys.modules)))"
    assert (
        "[]" == subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    )
