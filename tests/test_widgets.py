"""Tests of the ranking widget, driven from Python: set controls, click buttons, read the store."""

from __future__ import annotations

import ipywidgets
import pytest

from labkit import widgets
from labkit.labels import Item, RankingStore, format_ranking


def make_items():
    return [
        Item(
            "i1",
            "How do I water basil?",
            ("a", "b", "c"),
            ("Water it daily.", "Water when the top inch is dry.", "<script>alert('x')</script>"),
        ),
        {
            "item_id": "i2",
            "prompt": "Best way to sleep?",
            "completion_ids": ("x", "y"),
            "completions": ("Keep the room dark.", "Sleep is for the weak."),
        },
        Item("i3", "Boil an egg?", ("p", "q"), ("Nine minutes.", "Eggs eggs eggs.")),
    ]


def set_ranks(w, ranks):
    for control, r in zip(w.rank_controls, ranks):
        control.value = r


def test_widget_shape_and_escaping(tmp_path):
    """The widget is a VBox showing the prompt, guidelines and progress; completions are HTML-escaped."""
    w = widgets.ranking_widget(make_items(), RankingStore(tmp_path / "r.jsonl"), "ann")
    assert isinstance(w, ipywidgets.VBox)
    assert "i1" == w.current_item.item_id
    assert "0 of 3 ranked" in w.progress.value
    assert "How do I water basil?" in w.prompt_html.value
    assert "helpfulness" in w.guidelines.children[0].value
    shown = " ".join(row.children[0].value for row in w.completions_box.children)
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in shown
    assert "<script>" not in shown
    assert [0, 0, 0] == [c.value for c in w.rank_controls]  # "-": no rank yet
    assert [("-", 0), ("1", 1), ("2", 2), ("3", 3)] == list(w.rank_controls[0].options)


def test_submit_by_clicks_writes_record(tmp_path):
    """Ranks with a tie and a flag, then Submit, append the expected record and move on."""
    store = RankingStore(tmp_path / "r.jsonl")
    w = widgets.ranking_widget(make_items(), store, "ann", criterion="harmlessness")
    set_ranks(w, [2, 1, 2])
    w.flag_controls[2]["unsafe"].value = True
    w.submit_button.click()
    [rec] = store.read()
    assert ("i1", "ann", "harmlessness") == (rec.item_id, rec.labeler, rec.criterion)
    assert (("b",), ("a", "c")) == rec.ranking
    assert {"c": ("unsafe",)} == rec.flags
    assert widgets.GUIDELINE_VERSION == rec.guideline_version
    assert "<script>alert('x')</script>" == rec.completions[2]
    assert "i2" == w.current_item["item_id"]
    assert "1 of 3 ranked" in w.progress.value
    assert "Saved" in w.status.value
    assert "Saved item i1." == w.message


def test_ranks_to_groups_names_every_missing_rank():
    """Ranks become groups best first (equal ranks tie); missing ranks are named in the error."""
    assert (("b",), ("a", "c")) == widgets.ranks_to_groups(["a", "b", "c"], [2, 1, 2])
    with pytest.raises(ValueError, match="reply b has none"):
        widgets.ranks_to_groups(["a", "b"], [1, None])
    with pytest.raises(ValueError, match="replies a, c have none"):
        widgets.ranks_to_groups(["a", "b", "c"], [None, 1, None])


def test_gaps_are_fine(tmp_path):
    """Ranks 3, 1, 1 (no rank 2) are a tie for first and one reply after it."""
    store = RankingStore(tmp_path / "r.jsonl")
    w = widgets.ranking_widget(make_items(), store, "ann")
    set_ranks(w, [3, 1, 1])
    w.submit_button.click()
    assert "b = c > a" == format_ranking(store.read()[0].ranking)


def test_invalid_submit_shows_error_and_saves_nothing(tmp_path):
    """A rank left empty shows an error in the widget, writes nothing and stays on the item."""
    store = RankingStore(tmp_path / "r.jsonl")
    w = widgets.ranking_widget(make_items(), store, "ann")
    set_ranks(w, [1, 0, 2])  # "-" left on reply b
    w.submit_button.click()
    assert not store.path.exists()
    assert "Not saved" in w.status.value and "b" in w.status.value
    assert "Not saved: give every reply a rank: reply b has none" == w.message
    assert "i1" == w.current_item.item_id


def test_skip_undo_resume(tmp_path):
    """Skip saves nothing; Undo goes back with the saved ranking filled in; a new widget resumes."""
    store = RankingStore(tmp_path / "r.jsonl")
    w = widgets.ranking_widget(make_items(), store, "ann")
    set_ranks(w, [1, 2, 3])
    w.submit_button.click()
    w.skip_button.click()
    assert "i3" == w.current_item.item_id
    assert 1 == len(store.read())
    w.undo_button.click()  # back to the skipped i2: nothing saved, empty ranks
    assert "i2" == w.current_item["item_id"]
    assert [0, 0] == [c.value for c in w.rank_controls]
    w.undo_button.click()  # back to i1, showing what was saved
    assert "i1" == w.current_item.item_id
    assert [1, 2, 3] == [c.value for c in w.rank_controls]
    set_ranks(w, [3, 2, 1])
    w.submit_button.click()  # resubmission appends; latest() holds the correction
    assert 2 == len(store.read())
    assert "c > b > a" == format_ranking(store.latest()[0].ranking)
    assert "i2" == w.current_item["item_id"]

    again = widgets.ranking_widget(make_items(), store, "ann")
    assert "i2" == again.current_item["item_id"]
    assert "1 of 3 ranked" in again.progress.value
    other = widgets.ranking_widget(make_items(), store, "bob")
    assert "i1" == other.current_item.item_id


def test_done_state(tmp_path):
    """After the last item the widget shows it is done and disables Submit and Skip."""
    store = RankingStore(tmp_path / "r.jsonl")
    w = widgets.ranking_widget(make_items()[2:], store, "ann")
    set_ranks(w, [1, 1])
    w.submit_button.click()
    assert w.current_item is None
    assert w.submit_button.disabled and w.skip_button.disabled
    assert "done" in w.prompt_html.value
    assert (("p", "q"),) == store.read()[0].ranking


def test_custom_guidelines_get_a_version(tmp_path):
    """Custom guideline text is shown, and records carry a version derived from it."""
    store = RankingStore(tmp_path / "r.jsonl")
    w = widgets.ranking_widget(make_items()[2:], store, "ann", guidelines="Prefer <b>short</b> answers.")
    assert "Prefer <b>short</b> answers." == w.guidelines.children[0].value
    set_ranks(w, [2, 1])
    w.submit_button.click()
    assert store.read()[0].guideline_version.startswith("custom-")


def test_store_reads_per_click_do_not_grow_with_the_items(tmp_path, monkeypatch):
    """Submitting reads the store as often with 60 items as with 3 (at most once per click)."""
    reads = []
    read = RankingStore.read
    monkeypatch.setattr(RankingStore, "read", lambda self: reads.append(self.path) or read(self))
    per_click = {}
    for n in (3, 60):
        items = [Item(f"i{k}", "Boil an egg?", ("p", "q"), ("Nine minutes.", "Eggs eggs eggs.")) for k in range(n)]
        w = widgets.ranking_widget(items, RankingStore(tmp_path / f"{n}.jsonl"), "ann")
        before = len(reads)
        for _ in range(3):
            set_ranks(w, [1, 2])
            w.submit_button.click()
        w.skip_button.click()
        per_click[n] = (len(reads) - before) / 4
    assert per_click[3] == per_click[60] <= 1
    assert ({"i0", "i1", "i2"}, "i4") == (w.ranked, w.current_item.item_id)
    assert "3 of 60 ranked" in w.progress.value


def test_replies_wrap_at_spaces_not_inside_words(tmp_path):
    """JupyterLab's output area breaks <pre> text anywhere (`word-break: break-all`); the widget overrides it."""
    w = widgets.ranking_widget(make_items(), RankingStore(tmp_path / "r.jsonl"), "ann")
    shown = [w.prompt_html.value] + [row.children[0].value for row in w.completions_box.children]
    assert all("word-break:normal" in html for html in shown)
