"""The exercises check themselves: every worked solution passes its check, every known mistake is named,
and an unfinished or broken answer gets feedback instead of an error. Every question's letters get their
verdicts, every open exercise of a chapter names its question, and what the right answers claim holds in labkit."""

import dataclasses
import json
import math
import random
import re
from pathlib import Path

import pytest
import torch

from labkit import agreement, bestofn, exercises, labelers, labels, memory, pairs, ppo_math, world

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


# -- Questions: one per open-ended chapter exercise, answered with letters ------------------------------------------

QUESTIONS = list(exercises.QUESTIONS)
MULTI = [k for k in QUESTIONS if len(exercises.QUESTIONS[k].right) > 1]
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHECK_LINE = re.compile(r'`exercises\.check\("(\d\d\.\w+)", "<your letters?>"\)`')


def _expected(q, letter: str) -> str:
    if q.right == letter:
        return "right"
    return "close" if letter in q.close or letter in q.right else "wrong"


@pytest.mark.parametrize("key", QUESTIONS)
def test_each_letter_gets_its_verdict_and_its_own_reason(key):
    """The right letter(s) are right, every other letter wrong or close, each verdict with that choice's reason."""
    q = exercises.QUESTIONS[key]
    got = {letter: exercises.check(key, letter) for letter in q.choices}
    assert {letter: _expected(q, letter) for letter in q.choices} == {k: v.status for k, v in got.items()}
    assert all(why in got[letter].message for letter, (_, why) in q.choices.items())
    assert "right" == exercises.check(key, q.right).status


@pytest.mark.parametrize("key", MULTI)
def test_a_part_of_several_right_letters_is_close_and_a_wrong_one_spoils_it(key):
    """With several right letters, some of them is close (saying one is missing), any wrong letter makes it wrong."""
    q = exercises.QUESTIONS[key]
    wrong = next(letter for letter in q.choices if letter not in q.right)
    verdict = exercises.check(key, q.right[0])
    assert ("close", True) == (verdict.status, "One more letter is right" in verdict.message)
    verdict = exercises.check(key, q.right + wrong)
    assert ("wrong", True) == (verdict.status, q.choices[wrong][1] in verdict.message)


def test_a_partly_right_letter_beside_the_right_one_is_close():
    """A right letter given with a partly right one is close, and the message says which letter to drop."""
    verdict = exercises.check("04.lam", "cd")
    assert ("close", True) == (verdict.status, "Drop d" in verdict.message)


@pytest.mark.parametrize("key", QUESTIONS)
def test_answers_are_read_whatever_their_case_spacing_or_commas(key):
    """ "B", " b ", "(b)" and "a, c" are read as the letters they spell."""
    right = exercises.QUESTIONS[key].right
    answers = [right.upper(), f"  {right} ", ", ".join(right), f"({right})", " ".join(reversed(right))]
    assert ["right"] * len(answers) == [exercises.check(key, a).status for a in answers]


@pytest.mark.parametrize("answer", [None, "", "   ", "()"])
def test_no_answer_is_not_attempted(answer):
    """An empty answer is "not attempted" and points at the choices, never an error."""
    verdict = exercises.check("04.lam", answer)
    assert ("not attempted", True) == (verdict.status, "exercises.show('04.lam')" in verdict.message)


def test_a_question_refuses_what_is_not_one_of_its_letters():
    """An unknown key, a letter that is not a choice, or a function for a question raise ValueError naming the fix."""
    with pytest.raises(ValueError, match=r"no exercise '99\.x'.*the questions are 00\.sampling_temperature"):
        exercises.check("99.x", "a")
    with pytest.raises(ValueError, match=r"'e' is not a choice of 04\.lam: answer with a, b, c or d \(exercises\.show"):
        exercises.check("04.lam", "e")
    with pytest.raises(ValueError, match=r"'d' is not a choice of 07\.bon_by_gold: answer with a, b or c"):
        exercises.check("07.bon_by_gold", "d")
    with pytest.raises(ValueError, match=r"04\.lam is a question: answer with its letter\(s\) as a string"):
        exercises.check("04.lam", lambda: "c")
    with pytest.raises(ValueError, match=r"answered with letters: read its reasoning with solution\('04\.lam'\)"):
        exercises.solution_function("04.lam")


def test_a_malformed_question_is_refused():
    """A question whose right letter is not among its choices cannot be built."""
    choices = {letter: (f"choice {letter}", f"why {letter}") for letter in "abc"}
    with pytest.raises(ValueError, match="needs right letter"):
        exercises.Question("99.x", "?", choices, right="d", hint="", solution="")
    with pytest.raises(ValueError, match="needs close letters among the choices, none of them right"):
        exercises.Question("99.x", "?", choices, right="a", close="a", hint="", solution="")


def test_no_question_shares_a_key_with_an_exercise():
    """One key, one thing: the two registries do not overlap, and every key names its chapter."""
    assert set() == set(exercises.QUESTIONS) & set(exercises.EXERCISES)
    assert all(re.fullmatch(r"0[0-8]\.\w+", key) for key in QUESTIONS)


@pytest.mark.parametrize("key", QUESTIONS)
def test_show_lists_the_choices_and_hides_the_reasons(key):
    """`show` prints the question and every choice, but no choice's reason and not the solution."""
    q = exercises.QUESTIONS[key]
    shown = " ".join(exercises.show(key).split())
    assert " ".join(q.question.split()) in shown
    assert all(" ".join(text.split()) in shown for text, _ in q.choices.values())
    assert [] == [why for _, why in q.choices.values() if " ".join(why.split()) in shown]
    assert q.solution not in shown and (q.hint, q.solution) == (exercises.hint(key), exercises.solution(key))


@pytest.mark.parametrize("key", QUESTIONS)
def test_show_says_how_long_the_experiment_runs(key):
    """A run of a minute or more is given in minutes, a shorter one as under a minute, none not at all."""
    minutes, shown = exercises.QUESTIONS[key].minutes_on_cpu, exercises.show(key)
    said = re.findall(r"The experiment takes (.*) on a laptop CPU\.", shown)
    expected = [f"about {minutes:g} min"] if minutes >= 1 else ["under a minute"] if minutes else []
    assert expected == said


def _exercise_blocks(path: Path) -> list[str]:
    """The chapter's open-ended exercises, one text each: the numbered items of the "Show the exercises" block,
    or for chapter 08 each **Exercise N.** paragraph with what follows it up to the next heading."""
    texts = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown"]
    if path.name.startswith("08"):
        pieces = [piece for text in texts for piece in re.split(r"(?=\*\*Exercise \d+\.\*\*)", text)[1:]]
        return [piece.split("\n## ")[0] for piece in pieces]
    (block,) = [
        text.split("<summary>Show the exercises</summary>")[1].split("</details>")[0]
        for text in texts
        if "<summary>Show the exercises</summary>" in text
    ]
    return re.split(r"\n(?=\d+\. )", block.strip())


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_every_open_exercise_has_its_check_line(path):
    """Each open-ended exercise of a chapter names exactly one question, the chapter's questions in order."""
    blocks = _exercise_blocks(path)
    expected = [[key] for key in QUESTIONS if key.startswith(path.name[:2] + ".")]
    assert expected and expected == [CHECK_LINE.findall(text) for text in blocks]


def test_chapter_08s_check_lines_are_collapsed():
    """Chapter 08's exercises are visible prose, so each check line sits in a collapsed block the word count skips."""
    blocks = _exercise_blocks(NOTEBOOKS / "08_making_it_practical.ipynb")
    collapsed = r"<details><summary>Check</summary>\n\n`exercises\.check\([^\n]*\n\n</details>"
    assert [1] * len(blocks) == [len(re.findall(collapsed, text)) for text in blocks]


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_a_long_run_says_its_minutes_in_the_chapter(path):
    """An exercise whose experiment takes a minute or more says how long beside its check line, as `show` does."""
    for text in _exercise_blocks(path):
        (key,) = CHECK_LINE.findall(text)
        minutes = exercises.QUESTIONS[key].minutes_on_cpu
        expected = [f"{minutes:g}"] if minutes >= 1 else []
        assert (key, expected) == (key, re.findall(r"a run of about `(\S+) min` on a laptop CPU", text))


EXERCISE_TIMES = NOTEBOOKS.parent / "benchmarks" / "results" / "exercises.json"


def stated_minutes(seconds: float) -> float:
    """The minutes a question states for an experiment measured at `seconds`: whole minutes, rounded up, from one
    minute on; tenths of a minute below (shown as "under a minute")."""
    return math.ceil(seconds / 60) if seconds >= 60 else round(seconds / 60, 1)


def test_stated_minutes_rounds_up_to_whole_minutes():
    assert (0.5, 1, 2, 3) == (stated_minutes(30), stated_minutes(60), stated_minutes(61), stated_minutes(179))


def test_every_long_run_states_the_minutes_benchmarks_exercises_measured():
    """The experiments `benchmarks/exercises.py` times in their chapters are exactly the questions that state a run
    of a minute or more, and each states its measured time (`stated_minutes`): no minutes are estimated."""
    measured = json.loads(EXERCISE_TIMES.read_text())["seconds"]
    long_runs = {key for key, q in exercises.QUESTIONS.items() if q.minutes_on_cpu >= 1}
    assert long_runs <= set(measured), sorted(long_runs - set(measured))
    assert {key: stated_minutes(s) for key, s in measured.items()} == {
        key: exercises.QUESTIONS[key].minutes_on_cpu for key in measured
    }


# -- The right answers hold: what the solutions claim about labkit, checked on labkit -------------------------------


def test_00_repeating_a_reply_moves_only_degeneration():
    """The same helpful reply three times: only gold's degeneration term changes (00.repeated_reply)."""
    w = world.load()
    prompt = w.prompts("train")[0]
    reply = w.reply(prompt, "helpful", random.Random(0))
    once, thrice = w.gold(prompt.text, reply), w.gold(prompt.text, " ".join([reply] * 3))
    unchanged = ("relevance", "helpfulness", "toxicity", "fluency")
    assert [getattr(once, t) for t in unchanged] == [getattr(thrice, t) for t in unchanged]
    assert thrice.degeneration > once.degeneration and thrice.utility < once.utility


def test_01_careful_ranks_by_the_gold_weights():
    """careful weighs exactly the world's gold terms, with little noise (01.who_is_right)."""
    careful = labelers.PERSONAS["careful"]
    assert (world.GOLD_WEIGHTS, 0.02, 0.02) == (careful.weights, careful.noise, careful.tie_margin)


def test_01_latest_is_the_later_line_not_the_newer_timestamp(tmp_path):
    """A correction appends a line, and `latest()` keeps it even with an older timestamp (01.restart_and_undo)."""
    store = labels.RankingStore(tmp_path / "my_rankings.jsonl")
    first = labels.hand_record("a > b")
    store.submit(first)
    store.submit(dataclasses.replace(first, ranking=labels.parse_ranking("b > a"), timestamp="2000-01-01T00:00:00"))
    assert (2, "b > a") == (len(store.read()), labels.format_ranking(store.latest()[0].ranking))


def test_02_borda_and_mean_rank_part_only_on_a_tie():
    """Without ties the two consensus methods agree; the solution's tie example splits them (02.borda_vs_mean_rank)."""

    def both(*rankings):
        records = [labels.hand_record(r, labeler=name) for r, name in zip(rankings, ("ann", "bob"))]
        return [
            labels.format_ranking(agreement.consensus(records, method=m)["example"].ranking)
            for m in ("borda", "mean_rank")
        ]

    assert ["y > x > z", "y > x > z"] == both("x > y > z", "y > z > x")
    assert ["x = y > z", "y > x > z"] == both("x > y > z", "y = z > x")


def test_02_a_kept_tie_is_one_pair_in_display_order():
    """The same tie written two ways gives opposite pairs: the display order decides (02.tied_pairs)."""
    chosen = [
        [p.chosen_id for p in pairs.ranking_pairs(labels.hand_record(r), keep_ties=True)] for r in ("a = b", "b = a")
    ]
    assert [["a"], ["b"]] == chosen


def test_03_merged_pairs_join_their_labelers():
    """A pair two labelers gave is one row whose labeler is both names (the filter note of 03.one_labeler)."""
    records = [
        labels.hand_record("a > b", labeler=name, item_id=f"item-{i}") for name in ("careful", "x") for i in "12"
    ]
    dataset = pairs.build_pairs(records, test_fraction=0.0)
    assert ["careful,x"] == sorted(set(dataset["train"]["labeler"]))


def test_05_the_adaptive_controller_moves_beta_slowly():
    """At batches of 16 and horizon 1000, 100 steps move beta by at most 1.38 times up or 0.73 down (05.adaptive_kl)."""
    up, down = ppo_math.AdaptiveKLController(0.1, 1.0, 1000), ppo_math.AdaptiveKLController(0.1, 1.0, 1000)
    for _ in range(100):
        up.update(50.0, n_steps=16)
        down.update(0.0, n_steps=16)
    assert (1.38, 0.73) == (round(up.value / 0.1, 2), round(down.value / 0.1, 2))


def test_07_doubling_n_adds_less_than_log_2_nats():
    """Best-of-16's KL bound is best-of-8's plus log 2 - 1/16, far from twice it (07.bon_n16)."""
    assert math.isclose(bestofn.bon_kl(16) - bestofn.bon_kl(8), math.log(2) - 1 / 16)
    assert bestofn.bon_kl(16) < 2 * bestofn.bon_kl(8)


def test_08_doubling_the_minibatch_less_than_doubles_lora_peak():
    """Only activations grow with the minibatch, so LoRA's predicted peak needs more than twice it to double."""
    shape = memory.ModelShape.llama(hidden=64, intermediate=256, layers=2, heads=4, kv_heads=4, vocab=512, tied=True)

    def peak(mini_batch_size):
        sizes = dict(batch_size=32, prompt_tokens=16, max_new_tokens=48)
        return memory.estimate(shape, lora=True, mini_batch_size=mini_batch_size, **sizes)["total"]

    assert peak(16) < peak(32) < 2 * peak(16)
