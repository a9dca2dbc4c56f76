"""Tests for labkit.evaluate_metrics: the local `evaluate` modules give labkit's numbers, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import evaluate as hf_evaluate
import pandas as pd
import pytest

from labkit import evaluate, evaluate_metrics, judge

# Three prompts, two sampled replies each: one prompt with an insult, one rude, one clean.
TEXTS = [
    "You are a worthless idiot and nobody likes you.",
    "Water the basil when the soil is dry.",
    "What a stupid damn question, figure it out yourself.",
    "Keep the bedroom cool and dark.",
    "Rinse the pan, then dry it with a towel.",
    "Oats with fruit make a good breakfast.",
]
PROMPT_IDS = ["p0", "p0", "p1", "p1", "p2", "p2"]


def labkit_summary(judge_name: str) -> dict[str, float]:
    """The values `labkit.evaluate.summarise` reports for TEXTS scored by `judge_name`."""
    table = pd.DataFrame(
        {
            "prompt_id": PROMPT_IDS,
            "completion_id": [0, 1] * 3,
            "text": TEXTS,
            f"tox.{judge_name}": judge.get_judge(judge_name).prob(TEXTS),
        }
    )
    return {key: m.value for key, m in evaluate.summarise(table, [judge_name], n_boot=10).items()}


@pytest.fixture
def load(tmp_path):
    """evaluate_metrics.load with the modules' scratch arrow files under tmp_path."""
    return lambda name: evaluate_metrics.load(name, cache_dir=str(tmp_path / "metrics"))


def test_every_name_loads_as_an_evaluate_metric(load):
    """Each of NAMES loads by evaluate.load as a Metric named after it, with a description and citation."""
    for name in evaluate_metrics.NAMES:
        metric = load(name)
        assert isinstance(metric, hf_evaluate.Metric)
        assert (name, "metric") == (metric.name, metric.module_type)
        assert metric.description and metric.citation and metric.inputs_description


def test_toxicity_matches_labkit_with_svm(load):
    """Mean P(toxic) and toxic share equal labkit's summary; the probabilities are the judge's own."""
    expected = labkit_summary("svm")
    out = load("labkit_toxicity").compute(predictions=TEXTS, judge="svm", return_probabilities=True)
    assert pytest.approx(expected["svm.toxicity_mean"]) == out["toxicity_mean"]
    assert pytest.approx(expected["svm.toxic_share"]) == out["toxic_share"]
    assert pytest.approx(judge.SVMJudge().prob(TEXTS).tolist()) == out["probabilities"]


def test_toxicity_matches_labkit_with_minilm(load, tmp_path, monkeypatch):
    """The MiniLM judge gives labkit's numbers too (its head fitted once into a scratch cache)."""
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "labkit"))
    expected = labkit_summary("minilm")
    out = load("labkit_toxicity").compute(predictions=TEXTS, judge="minilm")
    assert pytest.approx(expected["minilm.toxicity_mean"]) == out["toxicity_mean"]
    assert pytest.approx(expected["minilm.toxic_share"]) == out["toxic_share"]


def test_expected_max_toxicity_matches_labkit(load):
    """Expected max toxicity and toxicity probability equal labkit's summary of the same (P, k) samples."""
    expected = labkit_summary("svm")
    out = load("labkit_expected_max_toxicity").compute(predictions=TEXTS, prompt_ids=PROMPT_IDS, judge="svm")
    assert pytest.approx(expected["svm.expected_max_toxicity"]) == out["expected_max_toxicity"]
    assert pytest.approx(expected["svm.toxicity_probability"]) == out["toxicity_probability"]


def test_expected_max_toxicity_forwards_threshold_and_streams_per_prompt(load):
    """Batches added one prompt at a time, samples shuffled, give labkit's numbers at threshold 0.999."""
    scores = judge.SVMJudge().prob(TEXTS).reshape(3, 2)  # (P, k)
    assert evaluate.toxicity_probability(scores, 0.999) != evaluate.toxicity_probability(scores)  # it matters
    metric = load("labkit_expected_max_toxicity")
    for start in (4, 2, 0):
        metric.add_batch(predictions=TEXTS[start : start + 2][::-1], prompt_ids=PROMPT_IDS[start : start + 2])
    out = metric.compute(judge="svm", threshold=0.999)
    assert pytest.approx(evaluate.expected_max_toxicity(scores)) == out["expected_max_toxicity"]
    assert pytest.approx(evaluate.toxicity_probability(scores, 0.999)) == out["toxicity_probability"]


def test_expected_max_toxicity_needs_the_same_k_per_prompt(load):
    """Prompts with different numbers of samples are refused with the counts."""
    with pytest.raises(ValueError, match=r"same number of samples.*'p0': 2, 'p1': 1"):
        load("labkit_expected_max_toxicity").compute(predictions=TEXTS[:3], prompt_ids=PROMPT_IDS[:3], judge="svm")


def test_distinct_n_matches_labkit(load):
    """'a b a b' + 'a b c': distinct-1 = 3/7, distinct-2 = 3/5, as labkit.evaluate.distinct_n; any n works."""
    texts = ["a b a b", "a b c"]
    metric = load("labkit_distinct_n")
    assert {"distinct_1": pytest.approx(3 / 7), "distinct_2": pytest.approx(3 / 5)} == metric.compute(predictions=texts)
    assert {"distinct_3": evaluate.distinct_n(texts, 3)} == metric.compute(predictions=texts, n=3)
    expected = labkit_summary("svm")
    out = metric.compute(predictions=TEXTS)
    assert pytest.approx([expected["distinct_1"], expected["distinct_2"]]) == [out["distinct_1"], out["distinct_2"]]


def test_unknown_names_are_refused_with_the_choices(load):
    """An unknown judge names 'minilm' and 'svm'; an unknown module names the modules; n=0 is refused."""
    with pytest.raises(ValueError, match=r"unknown judge 'perspective'; choose one of \['minilm', 'svm'\]"):
        load("labkit_toxicity").compute(predictions=TEXTS, judge="perspective")
    with pytest.raises(ValueError, match=r"unknown judge 'svn'; choose one of \['minilm', 'svm'\]"):
        load("labkit_expected_max_toxicity").compute(predictions=TEXTS, prompt_ids=PROMPT_IDS, judge="svn")
    with pytest.raises(ValueError, match="labkit_distinct_n"):
        evaluate_metrics.load("toxicity")
    with pytest.raises(ValueError, match="positive int"):
        load("labkit_distinct_n").compute(predictions=TEXTS, n=0)


OFFLINE_SCRIPT = """
import json, socket, sys

def refuse(*args, **kwargs):
    raise OSError("network use during an offline load")

socket.socket.connect = socket.socket.connect_ex = socket.create_connection = socket.getaddrinfo = refuse
from labkit import evaluate_metrics

texts, prompt_ids = json.loads(sys.argv[1])
print(json.dumps({
    "distinct": evaluate_metrics.load("labkit_distinct_n").compute(predictions=texts),
    "toxicity": evaluate_metrics.load("labkit_toxicity").compute(predictions=texts, judge="svm"),
    "emt": evaluate_metrics.load("labkit_expected_max_toxicity").compute(
        predictions=texts, prompt_ids=prompt_ids, judge="svm"),
}))
"""


def test_loads_and_computes_offline_from_an_empty_cache(load, tmp_path):
    """With the hub offline, every socket refused and empty HF caches, all three modules load and give
    the in-process numbers (evaluate copies each into HF_MODULES_CACHE)."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "HF_METRICS_CACHE": str(tmp_path / "hf-metrics"),
        "HF_EVALUATE_CACHE": str(tmp_path / "hf-evaluate"),
    }
    run = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT, json.dumps([TEXTS, PROMPT_IDS])],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert 0 == run.returncode, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    expected = {
        "distinct": load("labkit_distinct_n").compute(predictions=TEXTS),
        "toxicity": load("labkit_toxicity").compute(predictions=TEXTS, judge="svm"),
        "emt": load("labkit_expected_max_toxicity").compute(predictions=TEXTS, prompt_ids=PROMPT_IDS, judge="svm"),
    }
    assert {key: pytest.approx(value) for key, value in expected.items()} == out
    copied = sorted(p.name for p in (tmp_path / "modules" / "evaluate_modules" / "metrics").iterdir() if p.is_dir())
    assert sorted(evaluate_metrics.NAMES) == copied
