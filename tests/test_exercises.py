"""The exercises check themselves: every worked solution passes its check, every known mistake is named,
and an unfinished or broken answer gets feedback instead of an error."""

import json
from pathlib import Path

import pytest
import torch

from labkit import exercises

KEYS = list(exercises.EXERCISES)


def test_every_chapter_has_one_and_runs_its_checks():
    """Each chapter has a fill-in-the-line exercise, and its last cell checks the learner's answers."""
    chapters = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert {k.split(".")[0] for k in KEYS} == {p.name[:2] for p in chapters}
    for path in chapters:
        last = "".join(json.loads(path.read_text())["cells"][-1]["source"])
        for key in (k for k in KEYS if k.startswith(path.name[:2])):
            assert f'"{key}"' in last and "exercises.check(" in last, (path.name, key)


@pytest.mark.parametrize("key", KEYS)
def test_the_worked_solution_is_right(key):
    verdict = exercises.check(key, exercises.solution_function(key))
    assert verdict.ok, verdict


@pytest.mark.parametrize("key", KEYS)
def test_each_known_mistake_is_named(key):
    for what, mistake in exercises.EXERCISES[key].mistakes:
        verdict = exercises.check(key, mistake)
        assert verdict.status == "wrong" and what in verdict.message, (what, verdict)


@pytest.mark.parametrize("key", KEYS)
def test_an_unknown_wrong_answer_is_wrong_with_the_numbers(key):
    ex = exercises.EXERCISES[key]
    args = ex.inputs(torch.Generator().manual_seed(0))
    want = torch.as_tensor(ex.reference(*args), dtype=torch.float64)
    verdict = exercises.check(key, lambda *a: want * 1.7 + 0.3)
    assert verdict.status == "wrong" and "expected" in verdict.message, verdict


def test_close_is_close():
    verdict = exercises.check("03.bradley_terry", lambda c, r: -torch.nn.functional.logsigmoid(c - r).mean() * 1.01)
    assert verdict.status == "close" and "1.0%" in verdict.message


def test_unfinished_broken_and_empty_answers_get_feedback():
    def todo(r_chosen, r_rejected):
        raise NotImplementedError

    assert exercises.check("03.bradley_terry", todo).status == "not attempted"
    broken = exercises.check("03.bradley_terry", lambda c, r: c @ torch.zeros(3, 3))
    assert broken.status == "wrong" and "raised RuntimeError" in broken.message
    assert "forget `return`" in exercises.check("03.bradley_terry", lambda c, r: None).message
    assert "returned (2,)" in exercises.check("03.bradley_terry", lambda c, r: torch.zeros(2)).message
    assert "not str" in exercises.check("03.bradley_terry", "my answer").message
    with pytest.raises(ValueError, match="no exercise '99.x'"):
        exercises.check("99.x", todo)


def test_the_solution_is_hidden_until_asked():
    shown = exercises.show("04.clipped_loss")
    assert "def clipped_loss(" in shown and exercises.solution("04.clipped_loss") not in shown
    assert "torch.max" in exercises.solution("04.clipped_loss")
