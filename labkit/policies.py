"""Trained policies for the later chapters: load one an earlier chapter saved, or train it now.

Stage: between training (chapter 04's PPO, chapter 07's DPO) and evaluation. Inputs: a preset,
the folders where earlier chapters may have saved a run, and what training needs if none did.
Output: a `TrainedPolicy` (a peft model with its adapter on, the tokenizer, where it came from).

A saved run is a folder written by the training stage: `ppo.ppo_stage` writes `<folder>/policy`
(the LoRA adapter), `manifest.json` and `metrics.jsonl` (chapter 04 writes the same `policy/` and
`metrics.jsonl` itself); `dpo.train_dpo` writes `<folder>/adapter`, `manifest.json`, `metrics.json`
and `log_history.json`. Loading puts the adapter on a freshly loaded base model
(`peft.PeftModel.from_pretrained`), so the reference (the same model with the adapter disabled)
is the untouched base. This is what lets each chapter start cold: it loads
the earlier chapter's artifact when it exists, and otherwise trains with the preset's settings,
the same ones the main job (`labkit run`) uses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ADAPTER_SUBFOLDER", "TrainedPolicy", "dpo_policy", "find_saved", "load_adapter", "ppo_policy"]

ADAPTER_SUBFOLDER = {"ppo": "policy", "dpo": "adapter"}
"""Where each training stage saves its LoRA adapter inside its output folder."""


@dataclass
class TrainedPolicy:
    """A trained policy and where it came from."""

    model: Any
    """The policy: a peft model in eval mode, adapter active (disable it for the reference)."""
    tokenizer: Any
    """The policy's tokenizer."""
    method: str
    """"ppo" or "dpo"."""
    source: str
    """"loaded" (an earlier run's adapter) or "trained" (trained just now)."""
    folder: Path | None
    """The run folder the adapter was loaded from or saved to (None: kept in memory only)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """The run's summary metrics (from its files when loaded)."""
    history: list[dict] = field(default_factory=list)
    """One dict per logged training step (PPO: metrics.jsonl; DPO: TRL's log history)."""
    seconds: float = 0.0
    """Wall time of this call: loading, or training."""

    def describe(self) -> str:
        """One line for the notebook: which policy, from where, how long it took."""
        where = f" ({self.folder})" if self.folder is not None else ""
        return f"{self.method.upper()} policy {self.source}{where} in {self.seconds:.0f} s"


def find_saved(folders: Sequence[str | Path | None], method: str) -> Path | None:
    """The first run folder among `folders` that holds a saved `method` adapter, or None."""
    sub = _subfolder(method)
    for folder in folders:
        if folder is not None and (Path(folder) / sub / "adapter_config.json").is_file():
            return Path(folder)
    return None


def load_adapter(base_model, adapter_dir: str | Path):
    """`base_model` with the LoRA adapter saved in `adapter_dir` on top, in eval mode (not trainable)."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    try:
        with _quiet_peft():
            model = PeftModel.from_pretrained(base_model, str(adapter_dir))
    except (RuntimeError, ValueError, KeyError) as err:  # shapes or module names of another base model
        raise ValueError(
            f"the adapter in {adapter_dir} does not fit this base model ({err.__class__.__name__}: "
            f"{str(err)[:200]}); it was trained on another preset's model: run its chapter again with "
            "this preset, or delete the folder to train a fresh one"
        ) from err
    return model.eval()


def _subfolder(method: str) -> str:
    if method not in ADAPTER_SUBFOLDER:
        raise ValueError(f"method must be one of {sorted(ADAPTER_SUBFOLDER)}, got {method!r}")
    return ADAPTER_SUBFOLDER[method]


def _base(preset, base):
    """A fresh (model, tokenizer): `base` if given (it gets adapters injected: pass a copy), else the preset's."""
    if base is not None:
        return base
    from transformers.utils import logging as hf_logging

    from labkit import models

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a notebook needs no "Loading weights" bar for a 2M-parameter model
    try:
        return models.load_policy(preset)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _quiet_peft():
    """Hide transformers' FutureWarning about `is_gradient_checkpointing`, which peft triggers on every
    adapter it adds or loads (nothing the learner can act on)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _search(folders, save_to) -> list:
    folders = [folders] if isinstance(folders, (str, Path)) else list(folders or [])
    return folders + ([save_to] if save_to is not None else [])


def _read_json(path: Path, default):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


# -- PPO ---------------------------------------------------------------------------------------


def ppo_policy(
    preset,
    folders: Sequence[str | Path] | str | Path = (),
    *,
    save_to: str | Path | None = None,
    reward: Callable | None = None,
    prompts: Sequence[str] | None = None,
    config=None,
    base: tuple | None = None,
) -> TrainedPolicy:
    """The PPO policy saved in the first of `folders` (then `save_to`) that has one; else PPO now.

    Training uses the preset's PPO settings (`ppo.preset_config(preset)`, as `labkit run` does) unless
    `config` is given, `reward` (required when training: e.g. `reward_model.PreferenceReward(folder)`
    for the preset's default, or `rewards.make_reward("toxicity:binary")`), and the world's train
    prompts unless `prompts` are; it saves the run to
    `save_to` (policy, metrics.jsonl, a resumable checkpoint; it overrides `config.output_dir`), so the
    next call loads it.
    `base`: (model, tokenizer) to put the adapter on, default a fresh copy of the preset's model.
    """
    from labkit import ppo
    from labkit.rewards import fingerprint

    start = time.perf_counter()
    search = _search(folders, save_to)
    if reward is not None:  # a run trained against another reward (a reward model retrained since) is not this one
        now = fingerprint(reward)
        stale = [f for f in search if f is not None and ppo.trained_against_other(f, now)]
        for folder in stale:
            print(f"{folder} holds PPO against another reward than this one: not used", flush=True)
        search = [f for f in search if f not in stale]
        moved = ppo.set_aside_if_stale(save_to, now) if save_to is not None else None
        if moved is not None:
            print(f"kept as {moved[0]}; training afresh into {save_to}", flush=True)
    found = find_saved(search, "ppo")
    model, tokenizer = _base(preset, base)
    if found is not None:
        policy = load_adapter(model, found / ADAPTER_SUBFOLDER["ppo"])
        manifest = _read_json(found / "manifest.json", {})
        history = []
        if (found / "metrics.jsonl").is_file():
            from labkit.ppo_plots import load_metrics

            history = load_metrics(found / "metrics.jsonl")
        return TrainedPolicy(
            policy, tokenizer, "ppo", "loaded", found, manifest.get("metrics", {}), history, time.perf_counter() - start
        )
    if reward is None:
        raise ValueError(
            "no saved PPO run in "
            + ", ".join(str(f) for f in _search(folders, save_to))
            + " and no reward to train one: pass reward= (e.g. reward_model.PreferenceReward(folder) "
            "or rewards.make_reward('toxicity:binary'))"
        )
    cfg = config if config is not None else ppo.preset_config(preset)
    if save_to is not None:
        cfg = dataclasses.replace(cfg, output_dir=str(save_to))
    if prompts is None:
        from labkit import worlds

        prompts = [p.text for p in worlds.load(preset).prompts("train")]
    with _quiet_peft():
        result, metrics = ppo.ppo_stage(model, tokenizer, list(prompts), reward, cfg)
    folder = Path(cfg.output_dir) if cfg.output_dir else None
    return TrainedPolicy(
        result.policy.eval(),
        tokenizer,
        "ppo",
        "trained",
        folder,
        metrics,
        list(result.metrics),
        time.perf_counter() - start,
    )


# -- DPO ---------------------------------------------------------------------------------------


def dpo_policy(
    preset,
    folders: Sequence[str | Path] | str | Path = (),
    pairs=None,
    *,
    save_to: str | Path | None = None,
    config=None,
    base: tuple | None = None,
) -> TrainedPolicy:
    """The DPO policy saved in the first of `folders` (then `save_to`) that has one; else DPO now.

    Training runs `dpo.train_dpo` on `pairs` (a DatasetDict with train/test splits, or a Dataset)
    with the preset's DPO settings (`preset.stage_config("dpo", dpo.LabDPOConfig, ...)`, as
    `labkit run` does) unless `config` is given, and saves the run to `save_to` (which overrides
    `config.output_dir`).
    """
    from labkit import dpo

    start = time.perf_counter()
    found = find_saved(_search(folders, save_to), "dpo")
    if found is None and pairs is None:
        raise ValueError(
            "no saved DPO run in "
            + ", ".join(str(f) for f in _search(folders, save_to))
            + " and no pairs to train one: pass pairs= (e.g. pairs.build_pairs(shipped.load_rankings()))"
        )
    model, tokenizer = _base(preset, base)
    if found is not None:
        policy = load_adapter(model, found / ADAPTER_SUBFOLDER["dpo"])
        return TrainedPolicy(
            policy,
            tokenizer,
            "dpo",
            "loaded",
            found,
            _read_json(found / "metrics.json", {}),
            _read_json(found / "log_history.json", []),
            time.perf_counter() - start,
        )
    cfg = config
    if cfg is None:
        cfg = preset.stage_config("dpo", dpo.LabDPOConfig, seed=preset.seed, prompting=preset.prompting)
    if save_to is not None:
        cfg = dataclasses.replace(cfg, output_dir=str(save_to))
    with _quiet_peft():
        policy, metrics = dpo.train_dpo(model, tokenizer, pairs, cfg)
    folder = Path(cfg.output_dir) if cfg.output_dir else None
    history = _read_json(folder / "log_history.json", []) if folder is not None else []
    return TrainedPolicy(
        policy.eval(), tokenizer, "dpo", "trained", folder, metrics, history, time.perf_counter() - start
    )
