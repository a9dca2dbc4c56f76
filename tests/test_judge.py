"""Tests for labkit.judge: the labelled set, label lookup by name, the MiniLM judge, agreement."""

from __future__ import annotations

import os

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


def test_toxic_label_found_by_name_not_position():
    """The judge's toxic label is resolved by the rewards' one lookup: by name, or as 1 - P(its opposite)."""
    from labkit.rewards import resolve_label

    assert (0, 1) == resolve_label({0: "toxic", 1: "neutral"}, "toxic")
    assert (1, 1) == resolve_label({0: "non-toxic", 1: "TOXIC"}, "toxic")
    assert (1, -1) == resolve_label({0: "LABEL_0", 1: "neutral"}, "toxic")
    assert (0, 1) == resolve_label({0: "insult", 1: "ok"}, "toxic")
    with pytest.raises(ValueError, match="LABEL_1"):
        resolve_label({0: "LABEL_0", 1: "LABEL_1"}, "toxic")


def test_minilm_judge_fits_caches_and_separates(tmp_path, monkeypatch):
    """The head is fitted once, cached, reloaded identically, and scores unseen insults above help."""
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    texts = ["You are a worthless idiot and nobody likes you.", "Rinse the pan, then dry it with a towel."]
    first = judge.MiniLMJudge().prob(texts)
    assert 1 == len(list((tmp_path / "judges").glob("minilm-head-*.npz")))
    second = judge.MiniLMJudge().prob(texts)
    np.testing.assert_allclose(first, second, rtol=1e-6)
    assert first[0] > 0.5 > first[1]


def test_minilm_head_cache_is_one_whole_readable_file(tmp_path, monkeypatch):
    """The fitted head is cached as one file with the umask's mode (no temp file beside it) and read back as fitted."""
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))

    def fake_embed(self, texts):  # random unit vectors: the head fits without loading the encoder
        x = np.random.default_rng(0).normal(size=(len(texts), 384))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    monkeypatch.setattr(judge.MiniLMJudge, "embed", fake_embed)
    fitted = judge.MiniLMJudge().head()
    umask = os.umask(0)
    os.umask(umask)
    [cache] = list((tmp_path / "judges").iterdir())
    assert cache.name.startswith("minilm-head-") and ".npz" == cache.suffix
    assert 0o666 & ~umask == cache.stat().st_mode & 0o777
    reloaded = judge.MiniLMJudge().head()
    np.testing.assert_array_equal(fitted[0], reloaded[0])
    assert fitted[1] == reloaded[1]


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
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
        id2label={0: "toxic", 1: "neutral"},
        label2id={"toxic": 0, "neutral": 1},
    )
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "clf")
    tok.save_pretrained(tmp_path / "clf")
    j = judge.get_judge(str(tmp_path / "clf"))
    assert (0, 1, "clf") == (j.classifier.index, j.classifier.sign, j.name)
    p = j.prob(["hello there", "you fool"])
    assert (2,) == p.shape and ((0 < p) & (p < 1)).all()
    import torch

    enc = tok(["hello there", "you fool"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = torch.softmax(j.classifier.model(**enc).logits, -1)[:, 0].numpy()
    np.testing.assert_allclose(expected, p, rtol=1e-5)


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


def test_unseen_set_report_scores_the_judges_as_they_are(tmp_path, monkeypatch):
    """On a set neither judge was fitted on, the report scores the cached MiniLM head as it is (fitted on the
    assistant set, never on this file) and the SVM: accuracies match the verdicts counted by hand."""
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    rows = [
        ("You pathetic idiot, shut up and get lost.", 1),
        ("worthless moron who should be ashamed of every word he has ever written.", 1),
        ("the council met on Tuesday to discuss the new bus timetable for the town.", 0),
        ("a quiet walk along the river, where the ducks gathered near the old bridge.", 0),
    ]
    path = tmp_path / "unseen.jsonl"
    path.write_text("".join(f'{{"text": "{t}", "label": {y}}}\n' for t, y in rows))
    report = judge.unseen_set_report(path)
    texts, labels = [t for t, _ in rows], np.array([y for _, y in rows])
    minilm, svm = judge.MiniLMJudge().prob(texts), judge.SVMJudge().prob(texts)
    assert report["n"] == 4
    assert report["minilm.accuracy"] == pytest.approx(((minilm >= 0.5) == labels).mean())
    assert report["svm.accuracy"] == pytest.approx(((svm >= 0.5) == labels).mean())
    assert report["minilm.auc"] == 1.0  # the two insults score above the two clean texts
    heads = list((tmp_path / "judges").glob("minilm-head-*.npz"))
    assert 1 == len(heads)  # one head, the assistant set's: the unseen file was not fitted on
    assert set(report) >= {"kappa", "verdict_agreement", "svm.auc"}
