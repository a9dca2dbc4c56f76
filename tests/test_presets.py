"""Presets: names, the LAB_PRESET override, stage configs, device and dtype, seeding."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from labkit import config, presets


def test_named_presets():
    """tiny, smol and hub:<x> resolve to the right policy."""
    assert "tiny" == presets.load("tiny").policy
    assert "smol" == presets.load("smol").policy
    assert "./my-model" == presets.load("hub:./my-model").policy


def test_unknown_preset_names_the_choices():
    """An unknown preset raises a ValueError listing the valid names."""
    with pytest.raises(ValueError, match="unknown preset 'huge'.*tiny.*smol.*hub:"):
        presets.load("huge")
    with pytest.raises(ValueError, match="needs a model after the colon"):
        presets.load("hub:")


def test_lab_preset_overrides(monkeypatch):
    """LAB_PRESET wins over the name a notebook passes."""
    monkeypatch.setenv("LAB_PRESET", "hub:./my-model")
    assert "hub:./my-model" == presets.load("tiny").name


def test_default_on_cpu_is_tiny(monkeypatch):
    """Without LAB_PRESET, a machine with no GPU gets the tiny preset."""
    monkeypatch.delenv("LAB_PRESET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "tiny" == presets.load().name


def test_stage_config_applies_preset_then_overrides():
    """A stage config takes class defaults, then the preset's values, then explicit overrides."""

    @dataclass
    class Cfg:
        a: int = 1
        b: int = 2

    p = presets.load("tiny")
    p.stages["demo"] = {"a": 10}
    assert Cfg(10, 2) == p.stage_config("demo", Cfg)
    assert Cfg(10, 5) == p.stage_config("demo", Cfg, b=5)
    with pytest.raises(ValueError, match="no field"):
        p.stage_config("demo", Cfg, c=3)


def test_device_and_dtype_on_cpu(monkeypatch):
    """With no GPU, auto means cpu and fp32; explicit names are honoured."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert "cpu" == config.resolve_device("auto")
    assert torch.float32 == config.resolve_dtype("auto", "cpu")
    assert torch.bfloat16 == config.resolve_dtype("bf16", "cpu")
    with pytest.raises(ValueError, match="unknown dtype"):
        config.resolve_dtype("fp8", "cpu")


def test_seed_everything_repeats():
    """The same seed gives the same python, numpy and torch draws."""
    import random

    config.seed_everything(3)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    config.seed_everything(3)
    assert first == (random.random(), np.random.rand(), torch.rand(1).item())


def test_workdir_follows_the_environment(tmp_path, monkeypatch):
    """workdir() lives under $LABKIT_WORKDIR and creates the folder asked for."""
    monkeypatch.setenv("LABKIT_WORKDIR", str(tmp_path))
    monkeypatch.delenv("LAB_PRESET", raising=False)
    folder = presets.workdir("03", "reward_model")
    assert tmp_path / "03" / "reward_model" == folder
    assert folder.is_dir()


def test_another_preset_keeps_its_chapter_artifacts_apart(tmp_path, monkeypatch):
    """Under LAB_PRESET=smol (or a hub folder) the chapters' folders move under the preset's name: a smol
    chapter never loads the tiny preset's reward model or adapter."""
    monkeypatch.setenv("LABKIT_WORKDIR", str(tmp_path))
    monkeypatch.setenv("LAB_PRESET", "tiny")
    assert tmp_path / "04" == presets.workdir("04")
    monkeypatch.setenv("LAB_PRESET", "smol")
    assert tmp_path / "smol" / "04" == presets.workdir("04")
    monkeypatch.setenv("LAB_PRESET", "hub:./my models/gpt2")
    assert tmp_path / "hub-my-models-gpt2" / "04" == presets.workdir("04")


def test_every_preset_stage_override_names_real_fields():
    """Each preset's per-stage overrides build their stage's config (a typo would raise)."""
    from labkit import bestofn, dpo, evaluate, ppo, reward_model, shipped

    classes = {
        "ppo": ppo.PPOConfig,
        "reward": reward_model.RewardModelConfig,
        "dpo": dpo.LabDPOConfig,
        "bestofn": bestofn.BestOfNConfig,
        "evaluate": evaluate.EvalConfig,
        "labels": shipped.RankingsConfig,
    }
    for name in ("tiny", "smol", "hub:./some-folder"):
        preset = presets.load(name)
        assert set(preset.stages) <= set(classes), name
        for stage in preset.stages:
            preset.stage_config(stage, classes[stage])


def test_command_line_settings_read_values_as_json_else_text():
    """--set FIELD=VALUE: numbers, booleans, null and lists typed; other text kept; a later FIELD wins; an item
    without "=" names the form to use."""
    from labkit.config import parse_settings

    got = parse_settings(["kl_coef=0.2", "lora=false", "lora_target_modules=null", "sampling=per_prompt", "ns=[1,2]"])
    assert got == {"kl_coef": 0.2, "lora": False, "lora_target_modules": None, "sampling": "per_prompt", "ns": [1, 2]}
    assert parse_settings(["steps=1", "steps=3"]) == {"steps": 3}
    with pytest.raises(ValueError, match="FIELD=VALUE.*'kl_coef'"):
        parse_settings(["kl_coef"])


def test_lab_preset_wins_over_the_chapters_name_silently(monkeypatch, recwarn):
    """A chapter asks for "tiny"; LAB_PRESET=smol wins, with its own world (every chapter reads the preset's
    world), and no warning: there is nothing to warn about."""
    monkeypatch.setenv("LAB_PRESET", "smol")
    assert ("smol", "rtp") == (presets.load("tiny").name, presets.load("tiny").world)
    monkeypatch.setenv("LAB_PRESET", "hub:./folder")
    assert "assistant" == presets.load("tiny").world
    assert [] == [str(w.message) for w in recwarn]


def test_lab_settings_change_every_chapters_sizes_and_a_wrong_field_names_the_fields(monkeypatch):
    """LAB_SETTINGS applies FIELD=VALUE to the preset a chapter loads, STAGE.FIELD to a stage's settings, before the
    chapter's own overrides; a field the preset does not have is refused with the list of those it has."""
    from labkit.ppo import PPOConfig

    monkeypatch.delenv("LAB_PRESET", raising=False)
    monkeypatch.setenv("LAB_SETTINGS", "num_eval_prompts=3 ppo.total_steps=2 max_new_tokens=9")
    cfg = presets.load("tiny", max_new_tokens=7)
    assert (3, 7) == (cfg.num_eval_prompts, cfg.max_new_tokens)
    assert 2 == cfg.stage_config("ppo", PPOConfig).total_steps
    assert 144 == presets.by_name("tiny").num_eval_prompts  # by_name is the preset as defined, untouched
    monkeypatch.setenv("LAB_SETTINGS", "num_eval_prompt=3")
    with pytest.raises(ValueError, match="'num_eval_prompt' is not a preset field.*num_eval_prompts"):
        presets.load("tiny")
