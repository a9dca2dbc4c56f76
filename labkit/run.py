"""The main job: every pipeline stage in order, one folder of results.

`labkit run --preset tiny --out DIR` writes to DIR:
    config.json       the preset and the stage list
    metrics.json      one flat dict, keys prefixed by stage (`generate.rude_fraction`, ...)
    samples.jsonl     the base model's completions on held-out prompts
    report.html       a self-contained report (figures embedded)
plus one sub-folder per stage that saves an artifact.

Each stage is a function `(state) -> metrics`; `state` carries what earlier stages produced.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from labkit import artifacts, config, generate, models, presets, world as world_mod
from labkit.report import Report

__all__ = ["RunState", "STAGES", "is_rude", "run", "summary"]


@dataclass
class RunState:
    """What the stages share: the preset, the output folder, and each stage's products."""

    preset: presets.Preset
    out: Path
    report: Report
    world: Any = None
    model: Any = None
    tokenizer: Any = None
    eval_prompts: list = field(default_factory=list)
    products: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def is_rude(world, prompt: str, text: str) -> bool:
    """Rude by the world's style recogniser, or by its toxicity lexicon for text outside it."""
    return world.classify_style(prompt, text) == "rude" or world.gold(prompt, text).toxicity >= 0.5


def stage_load(state: RunState) -> dict:
    """Load the policy and pick the held-out prompts every later stage evaluates on."""
    start = time.time()
    state.world = world_mod.load()
    state.model, state.tokenizer = models.load_policy(state.preset)
    heldout = state.world.prompts("heldout")
    state.eval_prompts = heldout[: state.preset.num_eval_prompts]
    params = sum(p.numel() for p in state.model.parameters())
    state.report.add_text("Model", f"preset {state.preset.name}: {type(state.model).__name__} with "
                          f"{params:,} parameters on {state.preset.torch_device}; "
                          f"{len(state.eval_prompts)} held-out prompts.")
    return {"parameters": params, "seconds": time.time() - start}


def stage_generate(state: RunState) -> dict:
    """Sample N completions per held-out prompt from the base model and score them by the world."""
    p, w = state.preset, state.world
    samples = generate.generate(state.model, state.tokenizer, [q.text for q in state.eval_prompts],
                                n=p.completions_per_prompt, prompt_ids=[q.id for q in state.eval_prompts],
                                max_new_tokens=p.max_new_tokens, batch_size=p.batch_size, seed=p.seed)
    generate.save_jsonl(samples, state.out / "samples.jsonl")
    state.products["base_samples"] = samples
    styles = [w.classify_style(s.prompt, s.text) for s in samples]
    gold = [w.gold(s.prompt, s.text).utility for s in samples]
    rude = [is_rude(w, s.prompt, s.text) for s in samples]
    shares = pd.Series([s or "unrecognised" for s in styles]).value_counts(normalize=True)
    state.report.add_table("Base model samples", pd.DataFrame(
        [{"prompt": s.prompt, "reply": s.text, "style": st or "?"} for s, st in zip(samples[:12], styles[:12])]),
        caption="First completions of the unaligned base model on held-out prompts.")
    state.report.add_table("Base model samples", shares.rename("share").reset_index(names="style"),
                           caption="Style shares recognised by the world.")
    return {"num_samples": len(samples), "rude_fraction": sum(rude) / len(rude),
            "gold_utility_mean": sum(gold) / len(gold),
            "recognised_fraction": sum(s is not None for s in styles) / len(styles),
            "mean_tokens": sum(s.num_tokens for s in samples) / len(samples)}


STAGES: dict[str, Callable[[RunState], dict]] = {
    "load": stage_load,
    "generate": stage_generate,
}


def run(preset: str | presets.Preset | None = "tiny", out: str | Path | None = None,
        stages: tuple[str, ...] | None = None, seed: int | None = None) -> RunState:
    """Run `stages` (default: all) for `preset`, writing everything under `out`."""
    if not isinstance(preset, presets.Preset):
        preset = presets.load(preset)
    if seed is not None:
        preset.seed = seed
    stages = stages or tuple(STAGES)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}: choose from {list(STAGES)}")
    if "load" not in stages:
        stages = ("load", *stages)
    out = Path(out) if out else Path("runs") / preset.name.replace(":", "_").replace("/", "_")
    out.mkdir(parents=True, exist_ok=True)
    config.seed_everything(preset.seed)
    state = RunState(preset=preset, out=out, report=Report(f"labkit run: preset {preset.name}"))
    artifacts.write_json(out / "config.json", {"preset": preset.to_dict(), "stages": list(stages),
                                               "versions": artifacts.library_versions()})
    start = time.time()
    for name in stages:
        t0 = time.time()
        stage_metrics = STAGES[name](state)
        stage_metrics.setdefault("seconds", time.time() - t0)
        state.metrics.update({f"{name}.{k}": v for k, v in stage_metrics.items()})
        artifacts.write_json(out / "metrics.json", state.metrics)  # after every stage: a crash keeps what ran
    state.metrics["run.wall_seconds"] = time.time() - start
    artifacts.write_json(out / "metrics.json", state.metrics)
    state.report.add_metrics("All metrics", state.metrics)
    state.report.write(out / "report.html")
    return state


def summary(state: RunState) -> str:
    """A few lines for the terminal: where the results are and the headline numbers."""
    m = state.metrics
    lines = [f"labkit run: preset {state.preset.name}, {m['run.wall_seconds']:.0f} s -> {state.out}/report.html"]
    for key in sorted(m):
        if key.endswith(("seconds", "parameters")):
            continue
        value = m[key]
        lines.append(f"  {key:40s} {value:.4g}" if isinstance(value, float) else f"  {key:40s} {value}")
    return "\n".join(lines)
