"""Human feedback data: the ranking widget a learner labels with in the notebook.

Stage: labelling. Inputs: items (dicts or objects with item_id, prompt, completion_ids,
completions; `labels.items_from_samples` builds them) and a `labels.RankingStore`. Output: one
`RankingRecord` per submitted item, appended to the store; the widget itself (an ipywidgets VBox).

The layout follows InstructGPT's ranking interface (Ouyang et al. 2022, appendix B): the prompt,
the guidelines, every completion with a rank (equal ranks are a tie) and flags, then Submit.
Completions are untrusted model output and are shown HTML-escaped. The widget starts at the
first item this labeler has not ranked (resume after a restarted kernel); Undo goes back one item,
and submitting it again appends a newer record that `RankingStore.latest()` treats as current.
The store is read once when the widget opens (and once per Undo); after that the widget keeps the
set of ranked item ids in memory and adds each one it saves, so a click costs the same with 20
items or 2,000. Items another kernel ranks meanwhile show up when the widget is reopened.

Tests drive it from Python: set `w.rank_controls[i].value`, tick `w.flag_controls[i]["unsafe"]`,
call `w.submit_button.click()`, then read the store (and `w.message`, the status line as plain text).
"""

from __future__ import annotations

import hashlib
import html
from typing import Any

import ipywidgets as widgets

from labkit.labels import FLAGS, RankingRecord, RankingStore, item_field

__all__ = ["CRITERIA", "GUIDELINES", "GUIDELINE_VERSION", "RankingWidget", "ranking_widget", "ranks_to_groups"]

GUIDELINE_VERSION = "1.0"
"""Version of GUIDELINES written on every record; bump it when the text changes."""
CRITERIA: dict[str, str] = {
    "helpfulness": "Which reply best helps the user do what they asked? Specific, correct, on-topic "
    "advice beats a vague, padded or off-topic reply.",
    "harmlessness": "Which reply is least harmful? Insults, dismissals and unsafe advice rank lowest; "
    "a polite reply with no content is better than a rude one with content.",
    "harmless continuation": "Which continuation of the prompt would you rather publish? Toxic, insulting or "
    "profane text ranks lowest, then repetitive, cut-off or garbled text; among the rest, prefer the fluent "
    "one that carries on what the prompt was saying.",
}
"""What each criterion asks the labeler to judge."""
GUIDELINES = """\
<b>Criterion: {criterion}.</b> {question}
<ul>
<li><b>Rank</b> every reply: 1 is best. Give two replies the <b>same rank</b> only when you truly
cannot prefer one (a tie); gaps (1, 1, 3) are fine.</li>
<li>Judge the text shown, not what the model may have meant. Cut-off endings count against a reply.</li>
<li>Tick <b>nonsensical</b> when a reply is word salad or not language; tick <b>unsafe</b> when it
insults the user, is hostile, or gives dangerous advice. Still rank flagged replies (usually last).</li>
<li><b>Skip</b> an item you cannot judge; <b>Undo</b> goes back one item to correct it.</li>
</ul>"""
"""Default labelling guidelines (HTML), formatted with the criterion."""


# Wrap long lines at spaces: JupyterLab's output area sets `word-break: break-all` on <pre>, which splits words.
_PRE = "white-space:pre-wrap;word-break:normal;overflow-wrap:break-word"


def ranks_to_groups(ids, ranks) -> tuple[tuple[str, ...], ...]:
    """Ranks (1 = best, equal = tie, gaps allowed) -> groups of ids best first; ValueError on a missing rank
    (None, or the widget's "-", which is 0)."""
    missing = [cid for cid, r in zip(ids, ranks) if not r]
    if missing:
        which = f"reply {missing[0]} has" if len(missing) == 1 else f"replies {', '.join(missing)} have"
        raise ValueError(f"give every reply a rank: {which} none")
    groups: dict[int, list[str]] = {}
    for cid, r in sorted(zip(ids, ranks), key=lambda x: x[1]):
        groups.setdefault(r, []).append(cid)
    return tuple(tuple(g) for g in groups.values())


class RankingWidget(widgets.VBox):
    """The ranking widget; its controls are attributes so code and tests can drive it."""

    def __init__(
        self,
        items: list[Any],
        store: RankingStore,
        labeler: str,
        criterion: str = "helpfulness",
        guidelines: str | None = None,
        guideline_version: str | None = None,
    ):
        if not items:
            raise ValueError("items is empty: pass at least one item to rank")
        if not isinstance(labeler, str) or not labeler.strip():
            raise ValueError("labeler must be a non-empty name, e.g. your initials")
        self.items, self.store, self.labeler, self.criterion = list(items), store, labeler, criterion
        if guidelines is None:
            guidelines = GUIDELINES.format(criterion=criterion, question=CRITERIA.get(criterion, ""))
            guideline_version = guideline_version or GUIDELINE_VERSION
        # custom text without a version: name it by its hash so records say which text was shown
        self.guideline_version = guideline_version or "custom-" + hashlib.sha1(guidelines.encode()).hexdigest()[:8]
        self.index: int | None = None
        self.history: list[int] = []
        self.ranked: set[str] = self.store.ranked_ids(labeler, criterion, items=self.items)
        """Ids of the items this labeler has ranked: the store's when the widget opened, plus each Submit."""
        self.rank_controls: list[widgets.Dropdown] = []
        self.flag_controls: list[dict[str, widgets.Checkbox]] = []

        self.progress = widgets.HTML()
        self.prompt_html = widgets.HTML()
        self.guidelines = widgets.Accordion(children=[widgets.HTML(guidelines)], titles=("Guidelines",))
        self.completions_box = widgets.VBox()
        self.submit_button = widgets.Button(description="Submit", button_style="success")
        self.skip_button = widgets.Button(description="Skip")
        self.undo_button = widgets.Button(description="Undo")
        self.status = widgets.HTML()
        self.message = ""
        """The last status line as plain text ("Saved item i1.", "Not saved: ..."), for code and tests."""
        self.submit_button.on_click(lambda _: self.submit())
        self.skip_button.on_click(lambda _: self.skip())
        self.undo_button.on_click(lambda _: self.undo())
        super().__init__(
            [
                self.progress,
                self.guidelines,
                self.prompt_html,
                self.completions_box,
                widgets.HBox([self.submit_button, self.skip_button, self.undo_button]),
                self.status,
            ]
        )
        self._show(self._next_unranked(0))

    # ---------------------------------------------------------------- state
    @property
    def current_item(self) -> Any | None:
        """The item on screen, or None when every item is done."""
        return None if self.index is None else self.items[self.index]

    def _next_unranked(self, start: int) -> int | None:
        return next(
            (i for i in range(start, len(self.items)) if str(item_field(self.items[i], "item_id")) not in self.ranked),
            None,
        )

    def _show(self, index: int | None, previous: RankingRecord | None = None) -> None:
        self.index = index
        n = len(self.items)
        k = sum(str(item_field(it, "item_id")) in self.ranked for it in self.items)
        where = "done" if index is None else f"item {index + 1} of {n}"
        self.progress.value = f"<b>{html.escape(self.labeler)}</b>: {k} of {n} ranked ({where})"
        self.undo_button.disabled = not self.history
        self.submit_button.disabled = self.skip_button.disabled = index is None
        if index is None:
            left = n - k
            self.prompt_html.value = (
                "<b>All items are done.</b> Thank you!"
                if not left
                else f"<b>End of the list.</b> {left} skipped item(s) stay unranked and come "
                "back when you reopen the widget."
            )
            self.rank_controls, self.flag_controls, self.completions_box.children = [], [], ()
            return
        item = self.items[index]
        ids = [str(c) for c in item_field(item, "completion_ids")]
        texts = [str(t) for t in item_field(item, "completions")]
        self.prompt_html.value = (
            f"<b>Prompt</b> ({html.escape(str(item_field(item, 'item_id')))}):"
            f"<pre style='{_PRE}'>{html.escape(str(item_field(item, 'prompt')))}</pre>"
        )
        # "-" is 0, not None: a Dropdown whose value is None shows an empty box in the browser.
        options = [("-", 0)] + [(str(r), r) for r in range(1, len(ids) + 1)]
        rows, self.rank_controls, self.flag_controls = [], [], []
        for cid, text in zip(ids, texts):
            old = next((g for g, group in enumerate(previous.ranking, 1) if cid in group), 0) if previous else 0
            rank = widgets.Dropdown(
                options=options, value=old, description="rank", layout=widgets.Layout(width="130px")
            )
            flags = {
                f: widgets.Checkbox(
                    value=bool(previous and f in previous.flags.get(cid, ())),
                    description=f,
                    indent=False,
                    layout=widgets.Layout(width="120px"),
                )
                for f in FLAGS
            }
            shown = widgets.HTML(f"<b>Reply {html.escape(cid)}</b><pre style='{_PRE}'>{html.escape(text)}</pre>")
            rows.append(widgets.VBox([shown, widgets.HBox([rank, *flags.values()])]))
            self.rank_controls.append(rank)
            self.flag_controls.append(flags)
        self.completions_box.children = tuple(rows)

    def _say(self, message: str, error: bool = False) -> None:
        self.message = message
        colour = "#c0392b" if error else "#2e7d32"
        self.status.value = f"<span style='color:{colour}'>{html.escape(message)}</span>"

    # ---------------------------------------------------------------- buttons
    def submit(self) -> RankingRecord | None:
        """Save the ranking on screen and move to the next unranked item; on bad input show why, save nothing."""
        if self.index is None:
            return None
        item = self.items[self.index]
        ids = [str(c) for c in item_field(item, "completion_ids")]
        try:
            groups = ranks_to_groups(ids, [c.value for c in self.rank_controls])
            flags = {cid: tuple(f for f, box in fc.items() if box.value) for cid, fc in zip(ids, self.flag_controls)}
            record = RankingRecord(
                item_id=str(item_field(item, "item_id")),
                prompt=str(item_field(item, "prompt")),
                completion_ids=tuple(ids),
                completions=tuple(str(t) for t in item_field(item, "completions")),
                labeler=self.labeler,
                criterion=self.criterion,
                guideline_version=self.guideline_version,
                ranking=groups,
                flags={c: f for c, f in flags.items() if f},
            )
            self.store.submit(record)
        except (ValueError, OSError) as err:
            self._say(f"Not saved: {err}", error=True)
            return None
        self.ranked.add(record.item_id)
        self.history.append(self.index)
        self._show(self._next_unranked(self.index + 1))
        self._say(f"Saved item {record.item_id}.")
        return record

    def skip(self) -> None:
        """Move to the next item without saving (a skipped item stays unranked and comes back on resume)."""
        if self.index is None:
            return
        skipped = str(item_field(self.items[self.index], "item_id"))
        self.history.append(self.index)
        self._show(self._next_unranked(self.index + 1))
        self._say(f"Skipped item {skipped}.")

    def undo(self) -> None:
        """Go back to the previous item, showing its saved ranking; submitting again replaces it."""
        if not self.history:
            self._say("Nothing to undo.", error=True)
            return
        index = self.history.pop()
        item_id = str(item_field(self.items[index], "item_id"))
        mine = [
            r
            for r in self.store.latest()
            if r.labeler == self.labeler and r.criterion == self.criterion and r.item_id == item_id
        ]
        self._show(index, previous=mine[-1] if mine else None)
        self._say(f"Back to item {item_id}. Submitting again saves a newer ranking that replaces the earlier one.")


def ranking_widget(
    items: list[Any],
    store: RankingStore,
    labeler: str,
    criterion: str = "helpfulness",
    guidelines: str | None = None,
    guideline_version: str | None = None,
) -> RankingWidget:
    """A widget to rank `items`' completions as `labeler`, saving to `store`; starts at the first unranked item."""
    return RankingWidget(items, store, labeler, criterion, guidelines, guideline_version)
