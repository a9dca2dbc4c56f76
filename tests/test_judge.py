"""Tests for labkit.judge: the labelled set, label lookup by name, the MiniLM judge, agreement."""
from __future__ import annotations

import numpy as np
import pytest

from labkit import judge


def test_labelled_set_is_balanced_and_unique():
    """The project-authored set has a few hundred unique texts of both classes."""
    texts, labels = judge.load_labelled()
    assert len(texts) >= 200
    assert len(set(texts)) == len(texts)
    assert 0.3 < labels.mean() < 0.7


def test_load_labelled_bad_line_names_line(tmp_path):
    """A malformed record is reported with its line number."""
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "hi", "label": 0}\n{"text": "x", "label": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        judge.load_labelled(path)


def test_find_label_index_by_name_not_position():
    """The toxic label is found by name whatever its index; an unknown name raises with the labels."""
    assert 0 == judge.find_label_index({0: "toxic", 1: "neutral"})
    assert 1 == judge.find_label_index({0: "non-toxic", 1: "TOXIC"})
    with pytest.raises(ValueError, match="neutral"):
        judge.find_label_index({0: "LABEL_0", 1: "neutral"})


def test_minilm_judge_fits_caches_and_separates(tmp_path, monkeypatch):
    """The head is fitted once, cached, reloaded identically, and scores unseen insults above help."""
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    texts = ["You are a worthless idiot and nobody likes you.", "Rinse the pan, then dry it with a towel."]
    first = judge.MiniLMJudge().prob(texts)
    assert 1 == len(list((tmp_path / "judges").glob("minilm-head-*.npz")))
    second = judge.MiniLMJudge().prob(texts)
    np.testing.assert_allclose(first, second, rtol=1e-6)
    assert first[0] > 0.5 > first[1]


def test_svm_judge_returns_probabilities():
    """The PPO reward's SVM gives one probability per text."""
    p = judge.SVMJudge().prob(["you are a damn idiot", "have a nice day"])
    assert (2,) == p.shape
    assert p[0] > p[1]
    assert ((0 <= p) & (p <= 1)).all()


def test_hf_classifier_judge_uses_named_label(tmp_path):
    """A sequence classifier folder is a judge; its toxic column is chosen by name (index 0 here)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(judge._minilm_path())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, num_labels=2, id2label={0: "toxic", 1: "neutral"},
                     label2id={"toxic": 0, "neutral": 1})
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "clf")
    tok.save_pretrained(tmp_path / "clf")
    j = judge.get_judge(str(tmp_path / "clf"))
    assert (0, "clf") == (j.index, j.name)
    p = j.prob(["hello there", "you fool"])
    assert (2,) == p.shape and ((0 < p) & (p < 1)).all()


def test_agreement_by_hand():
    """Kappa, verdict agreement and accuracies on four hand-made scores."""
    out = judge.agreement([0.9, 0.1, 0.8, 0.2], [0.9, 0.1, 0.2, 0.2], labels=[1, 0, 1, 0])
    # verdicts a=[1,0,1,0], b=[1,0,0,0]: p_o = 0.75, p_e = 0.5*0.25 + 0.5*0.75 = 0.5, kappa = 0.5
    assert pytest.approx(0.5) == out["kappa"]
    assert 0.75 == out["verdict_agreement"]
    assert (1.0, 0.75) == (out["accuracy_a"], out["accuracy_b"])


def test_get_judge_rejects_non_judges():
    """Objects without .name/.prob and duplicate names are refused with a clear message."""
    with pytest.raises(TypeError, match="prob"):
        judge.get_judge(3)
    with pytest.raises(ValueError, match="unique"):
        judge.load_judges(("svm", "svm"))


def test_minilm_encoder_is_loaded_once_per_process():
    """Two MiniLM judges share one encoder: an evaluation of four policies loads it once, not four times."""
    texts = ["Rinse the pan, then dry it with a towel."]
    first, second = judge.MiniLMJudge(), judge.MiniLMJudge()
    first.embed(texts)
    second.embed(texts)
    assert first._encoder[1] is second._encoder[1]
