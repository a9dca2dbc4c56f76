"""The shipped rankings: built from a model by simulated personas, loaded back, never half-written."""

from __future__ import annotations

import json

import pytest

from labkit import artifacts, labelers, shipped


def small_cfg(**overrides):
    return shipped.RankingsConfig(
        **{
            "num_prompts": 4,
            "rounds": 2,
            "completions_per_item": 3,
            "max_new_tokens": 8,
            "personas": ("careful", "brevity", "noisy_crowdworker"),
            **overrides,
        }
    )


def test_build_and_load(tiny_lm, tmp_path):
    """4 prompts x 2 rounds = 8 items, each ranked by the 3 personas, readable by the loaders."""
    model, tok = tiny_lm
    out = shipped.build_rankings(tmp_path / "rankings", small_cfg(), model=model, tokenizer=tok, progress=False)
    records = shipped.load_rankings(out)
    assert 8 * 3 == len(records)
    assert {"careful", "brevity", "noisy_crowdworker"} == {r.labeler for r in records}
    items = {r.item_id for r in records}
    assert 8 == len(items) and all("~" in i for i in items)
    assert all(3 == len(r.completion_ids) for r in records)
    assert 4 * 2 * 3 == len(shipped.load_samples(out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert "rankings" == manifest["stage"] and 8 == manifest["stats"]["num_items"]
    assert "Krippendorff" in (out / "README.md").read_text()


def test_same_seed_same_rankings(tiny_lm, tmp_path):
    """Two builds with one seed give the same rankings."""
    model, tok = tiny_lm
    a = shipped.load_rankings(
        shipped.build_rankings(tmp_path / "a", small_cfg(), model=model, tokenizer=tok, progress=False)
    )
    b = shipped.load_rankings(
        shipped.build_rankings(tmp_path / "b", small_cfg(), model=model, tokenizer=tok, progress=False)
    )
    assert [(r.item_id, r.labeler, r.ranking) for r in a] == [(r.item_id, r.labeler, r.ranking) for r in b]


def test_failed_build_keeps_the_old_dataset(tiny_lm, tmp_path, monkeypatch):
    """A build that fails half way leaves the previous folder exactly as it was."""
    model, tok = tiny_lm
    out = shipped.build_rankings(tmp_path / "rankings", small_cfg(), model=model, tokenizer=tok, progress=False)
    before = (out / "rankings.jsonl").read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("simulated crash while ranking")

    monkeypatch.setattr(labelers, "simulate", broken)
    with pytest.raises(RuntimeError, match="simulated crash"):
        shipped.build_rankings(out, small_cfg(seed=1), model=model, tokenizer=tok, progress=False)
    assert before == (out / "rankings.jsonl").read_bytes()
    assert [out] == [p for p in tmp_path.iterdir()]  # no temporary folder left behind


def test_build_failing_after_its_last_file_keeps_the_old_dataset(tiny_lm, tmp_path, monkeypatch):
    """A build that fails once every new file is written still leaves the previous folder as it was."""
    model, tok = tiny_lm
    out = shipped.build_rankings(tmp_path / "rankings", small_cfg(), model=model, tokenizer=tok, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_write_manifest = artifacts.write_manifest

    def write_then_fail(folder, *args, **kwargs):
        real_write_manifest(folder, *args, **kwargs)
        raise OSError("simulated disk full")

    monkeypatch.setattr(artifacts, "write_manifest", write_then_fail)
    with pytest.raises(OSError, match="simulated disk full"):
        shipped.build_rankings(out, small_cfg(seed=1), model=model, tokenizer=tok, progress=False)
    assert before == {p.name: p.read_bytes() for p in out.iterdir()}
    assert [out] == list(tmp_path.iterdir())


def test_rebuild_replaces_the_folder_whole(tiny_lm, tmp_path):
    """A second build replaces the first one's files and leaves no temporary or old folder beside it."""
    model, tok = tiny_lm
    out = shipped.build_rankings(tmp_path / "rankings", small_cfg(), model=model, tokenizer=tok, progress=False)
    (out / "stale.txt").write_text("from an earlier build")
    shipped.build_rankings(out, small_cfg(seed=1), model=model, tokenizer=tok, progress=False)
    assert 1 == json.loads((out / "manifest.json").read_text())["seed"]
    assert not (out / "stale.txt").exists()
    assert [out] == list(tmp_path.iterdir())


def test_bad_config_and_missing_folder_are_clear_errors(tmp_path):
    """An unknown persona and a folder without rankings say what to do."""
    with pytest.raises(ValueError, match="unknown persona"):
        shipped.build_rankings(tmp_path / "x", small_cfg(personas=("nobody",)))
    with pytest.raises(FileNotFoundError, match="labkit rankings"):
        shipped.load_rankings(tmp_path / "empty")


def test_each_world_has_its_rankings_folder_and_a_preset_labels_as_labkit_run_does(tiny_lm, tmp_path, monkeypatch):
    """rankings_dir picks the world's folder; preset_config is the preset's `labels` stage; a build in the
    RealToxicityPrompts world writes to that world's folder by default, ranked by its criterion."""
    from labkit import presets
    from labkit.rtp_world import RTPWorld

    assert shipped.RANKINGS_DIR == shipped.rankings_dir() == shipped.rankings_dir(presets.by_name("tiny"))
    assert shipped.rankings_dir(presets.by_name("smol")) == shipped.rankings_dir("rtp") != shipped.RANKINGS_DIR
    with pytest.raises(ValueError, match="no shipped rankings for world 'moon'"):
        shipped.rankings_dir("moon")
    assert shipped.RankingsConfig() == shipped.preset_config(presets.by_name("tiny"))
    smol = shipped.preset_config(presets.by_name("smol"), seed=3)
    assert ("plain", "harmless continuation", 1, 3) == (smol.prompting, smol.criterion, smol.rounds, smol.seed)

    monkeypatch.setitem(shipped.RANKINGS_DIRS, "rtp", tmp_path / "rtp_rankings")
    model, tok = tiny_lm
    cfg = small_cfg(rounds=1, prompting="plain", criterion="harmless continuation")
    out = shipped.build_rankings(cfg=cfg, model=model, tokenizer=tok, world=RTPWorld(), progress=False)
    assert tmp_path / "rtp_rankings" == out
    records = shipped.load_rankings(shipped.rankings_dir("rtp"))
    assert 4 * 3 == len(records) and {"harmless continuation"} == {r.criterion for r in records}
    assert "rtp" == json.loads((out / "manifest.json").read_text())["inputs"]["world"]
    assert "labkit rankings --preset smol" in (out / "README.md").read_text()


def test_the_rankings_command_labels_with_the_presets_model_world_and_settings(tmp_path, monkeypatch, capsys):
    """`labkit rankings --preset smol` builds with SmolLM2, the RTP world and smol's labels settings (the build
    itself is tested above; here it is replaced, and the model loader too, so no model loads)."""
    from labkit import cli, models

    calls = {}

    def fake_build(out=None, cfg=None, *, model=None, tokenizer=None, world=None, progress=True):
        calls.update(out=out, cfg=cfg, model=model, world=world.name)
        (tmp_path / "README.md").write_text("built")
        return tmp_path

    monkeypatch.setattr(shipped, "build_rankings", fake_build)
    monkeypatch.setattr(models, "load_policy", lambda preset: (f"model of {preset.policy}", "tokenizer"))
    assert 0 == cli.main(["rankings", "--preset", "smol", "--seed", "2"])
    assert (None, "model of smol", "rtp") == (calls["out"], calls["model"], calls["world"])
    assert ("harmless continuation", "plain", 2) == (calls["cfg"].criterion, calls["cfg"].prompting, calls["cfg"].seed)
    assert 0 == cli.main(["rankings", "--out", str(tmp_path / "t")])  # the default: tiny, its own model
    assert (str(tmp_path / "t"), None, "assistant", shipped.RankingsConfig()) == (
        calls["out"],
        calls["model"],
        calls["world"],
        calls["cfg"],
    )
    assert "built" in capsys.readouterr().out


def test_the_shipped_dataset_is_big_enough():
    """The committed dataset has at least 300 items ranked by at least 3 personas."""
    records = shipped.load_rankings()
    assert len({r.item_id for r in records}) >= 300
    assert len({r.labeler for r in records}) >= 3
