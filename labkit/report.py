"""Report: one self-contained HTML page (figures embedded as PNG) for a run of the main job.

Inputs: metrics, figures and tables collected by the stages. Output: `report.html` that opens
anywhere with no network and no files beside it.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

from labkit.artifacts import atomic_write

__all__ = ["Report", "figure_to_data_uri"]


def figure_to_data_uri(fig) -> str:
    """A matplotlib Figure as a base64 PNG data URI (the figure is closed afterwards)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@dataclass
class Report:
    """Sections in the order the stages ran; each holds text, tables and figures."""

    title: str
    sections: list[tuple[str, list[str]]] = field(default_factory=list)

    def section(self, heading: str) -> list[str]:
        parts: list[str] = []
        self.sections.append((heading, parts))
        return parts

    def add_text(self, heading: str, text: str) -> None:
        self._parts(heading).append(f"<p>{html.escape(text)}</p>")

    def add_table(self, heading: str, frame, caption: str = "") -> None:
        """A pandas DataFrame, HTML-escaped (completions are untrusted text)."""
        table = frame.to_html(index=False, escape=True, float_format=lambda x: f"{x:.3f}", border=0)
        cap = f"<p class='cap'>{html.escape(caption)}</p>" if caption else ""
        self._parts(heading).append(cap + table)

    def add_figure(self, heading: str, fig, caption: str = "") -> None:
        cap = f"<p class='cap'>{html.escape(caption)}</p>" if caption else ""
        self._parts(heading).append(f"<figure><img src='{figure_to_data_uri(fig)}'/>{cap}</figure>")

    def add_headline(self, frame, caption: str = "", heading: str = "Headline") -> None:
        """A table placed first in the report, above every stage's section."""
        self.sections = [sec for sec in self.sections if sec[0] != heading]
        self.add_table(heading, frame, caption)
        self.sections.insert(0, self.sections.pop())

    def add_metrics(self, heading: str, metrics: dict) -> None:
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in sorted(metrics.items()))
        self._parts(heading).append(f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>")

    def _parts(self, heading: str) -> list[str]:
        for name, parts in self.sections:
            if name == heading:
                return parts
        return self.section(heading)

    def to_html(self) -> str:
        body = "".join(f"<h2>{html.escape(h)}</h2>{''.join(p)}" for h, p in self.sections)
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>{body}</body></html>"
        )

    def write(self, path: str | Path) -> Path:
        return atomic_write(path, self.to_html())


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
td, th { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
img { max-width: 100%; } .cap { color: #555; font-size: 0.9em; }
"""
