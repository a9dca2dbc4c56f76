"""Pretraining the tiny model: defaults that reproduce the shipped card, a save that never loses the old model."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from labkit import cli, models, pretrain

OLD_FILES = {"config.json": "old config", "model.safetensors": "old weights", "model_card.json": "{}"}


def tiny_cfg() -> pretrain.PretrainConfig:
    """A pretraining of a few seconds: 64 dialogues, a one-layer model of width 16, two steps."""
    return pretrain.PretrainConfig(
        num_dialogues=64,
        vocab_size=300,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        max_length=64,
        batch_size=4,
        steps=2,
        warmup_steps=1,
        eval_prompts=2,
    )


@pytest.fixture
def old_model(tmp_path):
    """A model folder from an earlier pretraining (stand-in files)."""
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    for name, text in OLD_FILES.items():
        (folder / name).write_text(text)
    return folder


def test_defaults_are_the_shipped_models_config():
    """PretrainConfig() is the config data/tiny-model/model_card.json records for the shipped checkpoint."""
    card = json.loads((models.TINY_MODEL_DIR / "model_card.json").read_text())
    assert card["config"] == dataclasses.asdict(pretrain.PretrainConfig())


def test_cli_without_flags_trains_the_default_config(monkeypatch, tmp_path):
    """`labkit pretrain` with no flags trains PretrainConfig() (so the shipped card's config)."""
    seen = []

    def fake_pretrain(cfg, out_dir=None):
        seen.append(cfg)
        return {"parameters": 1, "size_mb": 0.0, "train_seconds": 0.0}

    monkeypatch.setattr(pretrain, "pretrain", fake_pretrain)
    assert 0 == cli.main(["pretrain", "--out", str(tmp_path / "m")])
    assert [pretrain.PretrainConfig()] == seen


def test_failed_save_keeps_the_old_model(old_model, monkeypatch):
    """A save that fails after writing a file leaves the old model folder exactly as it was, and no temp folder."""
    real_save = pretrain.LlamaForCausalLM.save_pretrained

    def broken_save(self, folder, *args, **kwargs):
        real_save(self, folder, *args, **kwargs)  # the weights are on disk ...
        raise OSError("simulated disk full")  # ... and then the save fails

    monkeypatch.setattr(pretrain.LlamaForCausalLM, "save_pretrained", broken_save)
    with pytest.raises(OSError, match="simulated disk full"):
        pretrain.pretrain(tiny_cfg(), out_dir=old_model, progress=False, measure=False)
    assert OLD_FILES == {p.name: p.read_text() for p in old_model.iterdir()}
    assert [old_model] == list(old_model.parent.iterdir())


def test_crash_while_swapping_in_never_loses_the_old_model(old_model, monkeypatch):
    """A crash while the new folder is renamed in leaves the old one complete beside it, and loading says where."""
    real_replace, real_rename = os.replace, os.rename

    def crash_on_new_model(real):
        def move(src, dst, *args, **kwargs):
            if (Path(src) / "tokenizer.json").is_file():  # the new model (the old stand-in has no tokenizer)
                raise OSError("simulated power cut")
            return real(src, dst, *args, **kwargs)

        return move

    monkeypatch.setattr(os, "replace", crash_on_new_model(real_replace))
    monkeypatch.setattr(os, "rename", crash_on_new_model(real_rename))
    with pytest.raises(OSError, match="simulated power cut"):
        pretrain.pretrain(tiny_cfg(), out_dir=old_model, progress=False, measure=False)
    kept = old_model.with_name("tiny-model.old")  # moved aside, as `artifacts.atomic_folder` documents
    assert OLD_FILES == {p.name: p.read_text() for p in kept.iterdir()}
    monkeypatch.setattr(models, "TINY_MODEL_DIR", old_model)
    with pytest.raises(FileNotFoundError, match=r"complete in .*tiny-model\.old.*rename it back"):
        models.load_policy("tiny")


def test_save_replaces_the_old_model_whole(old_model):
    """A finished pretraining replaces the old folder with the new model and card, leaving nothing beside it."""
    card = pretrain.pretrain(tiny_cfg(), out_dir=old_model, progress=False, measure=False)
    assert card == json.loads((old_model / "model_card.json").read_text())
    assert b"old weights" != (old_model / "model.safetensors").read_bytes()
    assert {"README.md", "model_card.json", "config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in old_model.iterdir()
    }
    assert [old_model] == list(old_model.parent.iterdir())
    model, _ = models.load_policy(f"hub:{old_model}", device="cpu")
    assert card["parameters"] == sum(p.numel() for p in model.parameters())
