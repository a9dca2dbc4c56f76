"""Shared plots: the bars carry the shares they claim."""

from labkit import plots


def test_style_shares_bars():
    """Bar heights are the shares of each style, unrecognised replies counted apart."""
    fig = plots.style_shares(["rude", "helpful", "helpful", None], order=("helpful", "rude"))
    bars = fig.axes[0].patches
    assert [0.5, 0.25, 0.25] == [b.get_height() for b in bars]
    assert ["helpful", "rude", "unrecognised"] == [t.get_text() for t in fig.axes[0].get_xticklabels()]
