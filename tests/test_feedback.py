"""Tests of user feedback: pseudonyms, the durable store, thumbs -> pairs, the dataset and the pairs-per-hour sum."""

from __future__ import annotations

import json

import pytest

from labkit import feedback, labels, pairs
from labkit.feedback import Feedback, FeedbackStore

RAW_ID = "alice.example@users.test"


def fb(prompt="p1", reply="r1", thumb="up", user="", **kw) -> Feedback:
    return Feedback(prompt=prompt, reply=reply, thumb=thumb, user=user, **kw)


def who(name: str) -> str:
    """A pseudonym for hand-made feedback (a fixed salt: these never reach a store)."""
    return feedback.pseudonymise(name, "test-salt")


def test_pseudonym_stable_within_a_store_and_different_across_stores(tmp_path):
    """The same user gets the same pseudonym in one store (even reopened) and another in a store with another salt."""
    a, b = FeedbackStore(tmp_path / "a.jsonl"), FeedbackStore(tmp_path / "b.jsonl")
    first = a.submit(fb(), user_id=RAW_ID).user
    assert first == a.submit(fb(reply="r2"), user_id=RAW_ID).user
    assert first == FeedbackStore(tmp_path / "a.jsonl").pseudonym(RAW_ID)
    assert first != b.submit(fb(), user_id=RAW_ID).user
    assert first != a.pseudonym("bob")
    assert first.startswith("user-") and 17 == len(first)


def test_pseudonymise_is_hmac_of_the_salt():
    """pseudonymise is deterministic in (id, salt) and changes with either."""
    assert feedback.pseudonymise("u", "s1") == feedback.pseudonymise("u", "s1")
    assert feedback.pseudonymise("u", "s1") != feedback.pseudonymise("u", "s2")
    assert feedback.pseudonymise("u", "s1") != feedback.pseudonymise("v", "s1")


def test_raw_id_and_salt_never_in_the_store_file(tmp_path):
    """The store's bytes hold the pseudonym but neither the raw user id nor the salt; the salt file is apart."""
    store = FeedbackStore(tmp_path / "fb.jsonl")
    stored = store.submit(fb(comment="too long"), user_id=RAW_ID)
    data = (tmp_path / "fb.jsonl").read_bytes()
    salt = store.salt()
    assert RAW_ID.encode() not in data
    assert salt.encode() not in data
    assert stored.user.encode() in data
    assert store.salt_path == tmp_path / "fb.jsonl.salt.json"
    assert salt == json.loads(store.salt_path.read_text())["salt"]
    assert 0o600 == store.salt_path.stat().st_mode & 0o777
    assert {"schema_version", "item_id", "prompt", "reply", "thumb", "comment", "user", "timestamp"} == set(
        json.loads(data)
    )


def test_missing_salt_with_existing_feedback_is_an_error(tmp_path):
    """Losing the salt of a store with feedback raises instead of silently giving users new pseudonyms."""
    store = FeedbackStore(tmp_path / "fb.jsonl")
    store.submit(fb(), user_id=RAW_ID)
    store.salt_path.unlink()
    with pytest.raises(FileNotFoundError, match="restore the salt file"):
        FeedbackStore(tmp_path / "fb.jsonl").submit(fb(), user_id=RAW_ID)
    assert not store.salt_path.exists()


def test_submit_read_round_trip(tmp_path):
    """Submitted feedback reads back equal, in order, with the pseudonym filled in and item_id derived."""
    store = FeedbackStore(tmp_path / "fb.jsonl")
    sent = [fb(comment="thanks ✓"), fb(reply="r2", thumb="down", item_id="msg-7")]
    stored = [store.submit(f, user_id=RAW_ID) for f in sent]
    assert stored == store.read()
    assert [] == store.last_read_problems
    assert feedback.item_id_of("p1", "r1") == stored[0].item_id
    assert "msg-7" == stored[1].item_id
    assert stored[0] == Feedback.from_json(stored[0].to_json())


def test_torn_last_line_is_skipped_reported_and_the_next_submit_works(tmp_path):
    """Half a line left by a killed writer is skipped and reported; the next submit starts on a fresh line."""
    store = FeedbackStore(tmp_path / "fb.jsonl")
    first = store.submit(fb(), user_id=RAW_ID)
    line = json.dumps(fb(reply="r2").to_json())
    with open(store.path, "a", encoding="utf-8") as f:
        f.write(line[: len(line) // 2])
    with pytest.warns(UserWarning, match="line 2: truncated last line"):
        assert [first] == store.read()
    second = store.submit(fb(reply="r3", thumb="down"), user_id=RAW_ID)
    with pytest.warns(UserWarning, match="line 2: corrupt line"):
        assert [first, second] == store.read()
    assert 1 == len(store.last_read_problems)


def test_malformed_line_is_reported_with_its_line_number(tmp_path):
    """A line that is not JSON, or lacks a field, is skipped with a warning naming its line number."""
    store = FeedbackStore(tmp_path / "fb.jsonl")
    store.submit(fb(), user_id=RAW_ID)
    with open(store.path, "a", encoding="utf-8") as f:
        f.write("not json\n")
        f.write(json.dumps({"prompt": "p", "reply": "r", "thumb": "up"}) + "\n")
    store.submit(fb(reply="r2"), user_id=RAW_ID)
    with pytest.warns(UserWarning, match="skipped 2 bad line"):
        assert 2 == len(store.read())
    assert store.last_read_problems[0].startswith("line 2: corrupt line")
    assert store.last_read_problems[1].startswith("line 3: corrupt line")
    assert "missing field(s)" in store.last_read_problems[1]


def test_bad_thumb_names_the_allowed_values():
    """thumb="sideways" is a ValueError that lists "up" and "down"."""
    with pytest.raises(ValueError, match=r"thumb must be one of \['up', 'down'\], got 'sideways'"):
        fb(thumb="sideways")


@pytest.mark.parametrize("user_id", ["", "   ", None])
def test_empty_user_id_is_an_error_and_writes_nothing(tmp_path, user_id):
    """An empty user id is refused before anything (store or salt) is written."""
    store = FeedbackStore(tmp_path / "fb.jsonl")
    with pytest.raises(ValueError, match="user_id is empty"):
        store.submit(fb(), user_id=user_id)
    assert not store.path.exists() and not store.salt_path.exists()


def test_raw_id_in_the_user_field_is_refused():
    """Feedback.user takes only pseudonyms, so a raw id cannot be stored by mistake."""
    with pytest.raises(ValueError, match="not a pseudonym"):
        fb(user=RAW_ID)


def test_feedback_pairs_majority_ties_and_single_thumbs():
    """Majority per reply, ties dropped, a user's last thumb counts, single-thumb prompts give no pair."""
    ann, bob, cat = who("ann"), who("bob"), who("cat")
    given = [
        # p1: a is up 2-1, b is down, c is a 1-1 tie (dropped) -> one pair a > b
        fb("p1", "a", "up", ann),
        fb("p1", "a", "up", bob),
        fb("p1", "a", "down", cat),
        fb("p1", "b", "down", ann),
        fb("p1", "c", "up", ann),
        fb("p1", "c", "down", bob),
        # p2: a single thumb -> nothing
        fb("p2", "x", "up", ann),
        # p3: ann first says y is down, then corrects it to up; z is down -> y > z
        fb("p3", "y", "down", ann),
        fb("p3", "z", "down", bob),
        fb("p3", "y", "up", ann),
        # p4: all up -> nothing
        fb("p4", "u", "up", ann),
        fb("p4", "v", "up", bob),
    ]
    got = feedback.feedback_pairs(given)
    assert [("p1", "a", "b"), ("p3", "y", "z")] == [(p["prompt"], p["chosen"], p["rejected"]) for p in got]
    assert [1.0, 1.0] == [p["margin"] for p in got]
    assert ",".join(sorted({ann, bob, cat})) == got[0]["labeler"]
    assert f"{feedback.item_id_of('p1', 'a')}>{feedback.item_id_of('p1', 'b')}" == got[0]["item_id"]


def test_feedback_pairs_every_up_against_every_down():
    """Two up replies and two down replies of one prompt give 2 x 2 = 4 pairs."""
    given = [fb("p", r, t, who(r)) for r, t in [("g1", "up"), ("g2", "up"), ("b1", "down"), ("b2", "down")]]
    got = [(p["chosen"], p["rejected"]) for p in feedback.feedback_pairs(given)]
    assert [("g1", "b1"), ("g1", "b2"), ("g2", "b1"), ("g2", "b2")] == got


def _many_pairs(n_prompts=10):
    return feedback.feedback_pairs(
        [fb(f"prompt {i}", f"good {i}", "up", who("ann")) for i in range(n_prompts)]
        + [fb(f"prompt {i}", f"bad {i}", "down", who("bob")) for i in range(n_prompts)]
    )


def test_to_dataset_splits_by_prompt_in_build_pairs_layout():
    """No prompt is in both splits, the test split holds ceil(0.3 x 10) prompts, and the features equal build_pairs'."""
    ds = feedback.to_dataset(_many_pairs(), seed=1, test_fraction=0.3)
    train, test = set(ds["train"]["prompt"]), set(ds["test"]["prompt"])
    assert set() == train & test
    assert (7, 3) == (len(train), len(test))
    records = [labels.hand_record("b > a", item_id=f"i{i}", prompt=f"prompt {i}") for i in range(3)]
    reference = pairs.build_pairs(records)
    assert reference["train"].features == ds["train"].features
    assert list(feedback.PAIR_COLUMNS) == ds["train"].column_names


def test_to_dataset_refuses_no_pairs_and_bad_fraction():
    """No pairs (e.g. only single thumbs) and a test_fraction outside [0, 1) are clear errors."""
    with pytest.raises(ValueError, match="no pairs"):
        feedback.to_dataset(feedback.feedback_pairs([fb()]))
    with pytest.raises(ValueError, match="test_fraction"):
        feedback.to_dataset(_many_pairs(), test_fraction=1.0)


def test_pairs_per_hour_arithmetic():
    """Rankings give k(k-1)/2 pairs less ties per ranking; thumbs give p_pair pairs per prompt's thumbs."""
    got = feedback.pairs_per_hour(
        seconds_per_thumb=4, seconds_per_ranking=60, k=4, p_pair=0.5, thumbs_per_prompt=2, tie_fraction=0.5
    )
    assert {"ranking": 60 * 6 * 0.5, "thumbs": 900 / 2 * 0.5} == pytest.approx(got)
    with pytest.raises(ValueError, match="k must be at least 2"):
        feedback.pairs_per_hour(k=1)
    with pytest.raises(ValueError, match="p_pair"):
        feedback.pairs_per_hour(p_pair=1.5)


def test_pairs_per_hour_defaults_follow_the_cost_planner():
    """The ranking side's defaults are cost.CostInputs' (one home for the assumption)."""
    from labkit import cost

    inputs = cost.CostInputs()
    expected = (
        3600 / inputs.seconds_per_ranking * inputs.completions_per_prompt * (inputs.completions_per_prompt - 1) / 2
    )
    assert expected == pytest.approx(feedback.pairs_per_hour()["ranking"])
