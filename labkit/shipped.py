"""Shipped data: a ready rankings dataset for each world, and how it is rebuilt.

Stage: labelling, done once ahead of time so later chapters and workshops can start without
ranking first. Inputs: the preset's model, its world's train prompts, the simulated personas.
Output: a folder (`rankings_dir(world)`: `data/rankings/` for the tiny preset's assistant world,
`data/rtp_rankings/` for smol's RealToxicityPrompts world) with

    samples.jsonl    the model's completions (`generate.Sample`s), `rounds` sets per prompt
    rankings.jsonl   a `labels.RankingStore`: every persona ranks every item (one record each)
    manifest.json    config, seed, library versions, hashes of the model and world it came from
    README.md        what is in it and its agreement figures, written by the build

An item is one train prompt with one set of `completions_per_item` completions; each prompt is
asked `rounds` times with fresh samples, so a prompt appears in `rounds` items (item ids
"<prompt id>~<round>"). `labkit rankings [--preset smol]` (or `make rankings`) rebuilds the folder
with the preset's `labels` settings, as `labkit run` labels; the build is seeded, so the same model,
world and config give the same rankings (timestamps aside).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from labkit import agreement, artifacts, generate, labelers, labels, rtp
from labkit.presets import DATA_DIR

__all__ = [
    "RANKINGS_DIR",
    "RANKINGS_DIRS",
    "RankingsConfig",
    "build_rankings",
    "load_rankings",
    "load_samples",
    "preset_config",
    "rankings_dir",
]

RANKINGS_DIR = DATA_DIR / "rankings"
RANKINGS_DIRS = {"assistant": RANKINGS_DIR, "rtp": DATA_DIR / "rtp_rankings"}
"""The shipped rankings of each world (`worlds.load`'s names)."""


@dataclass
class RankingsConfig:
    """How the shipped rankings are made."""

    rounds: int = 2
    """Items per train prompt, each with freshly sampled completions (240 prompts x 2 = 480 items)."""
    completions_per_item: int = 4
    """Completions shown per item (4 choose 2 = 6 pairs per ranking)."""
    max_new_tokens: int = 48
    """Longest completion, in tokens."""
    temperature: float = 1.0
    """Sampling temperature: 1.0 shows the base model's full mix of styles."""
    personas: tuple[str, ...] = tuple(labelers.PERSONAS)
    """Simulated labelers (names in `labelers.PERSONAS`)."""
    criterion: str = "helpfulness"
    """What the personas rank by (written on every record)."""
    num_prompts: int | None = None
    """Use only the first this many train prompts (None: all of them); tests use a few."""
    batch_size: int = 128
    """Sequences per generation batch."""
    seed: int = 0
    """Seed of the sampling and of every persona's noise."""
    prompting: str = "chat"
    """How prompts are put to the model (`models.render_prompts`): "chat" or "plain"."""


def rankings_dir(preset_or_world=None) -> Path:
    """The shipped rankings folder of a preset's world (a `presets.Preset`, a world, a world name, or None: tiny's)."""
    name = getattr(preset_or_world, "world", None) or getattr(preset_or_world, "name", None) or preset_or_world
    name = name or "assistant"
    if name not in RANKINGS_DIRS:
        raise ValueError(f"no shipped rankings for world {name!r}: the worlds are {sorted(RANKINGS_DIRS)}")
    return RANKINGS_DIRS[name]


def preset_config(preset, **overrides) -> RankingsConfig:
    """The preset's labelling settings (its `labels` stage, its seed, prompting and reply length): `labkit run`'s."""
    fields = dict(seed=preset.seed, prompting=preset.prompting, max_new_tokens=preset.max_new_tokens)
    return preset.stage_config("labels", RankingsConfig, **{**fields, **overrides})


def _items(samples: list[generate.Sample], cfg: RankingsConfig) -> list[labels.Item]:
    """Split each prompt's rounds * k completions into `rounds` items of k."""
    k = cfg.completions_per_item
    groups: dict[str, list[generate.Sample]] = {}
    for s in samples:
        groups.setdefault(s.prompt_id, []).append(s)
    items = []
    for round_ in range(cfg.rounds):
        for prompt_id, group in groups.items():
            shown = group[round_ * k : (round_ + 1) * k]
            items.append(
                labels.Item(
                    f"{prompt_id}~{round_}",
                    shown[0].prompt,
                    tuple(str(s.completion_id - round_ * k) for s in shown),
                    tuple(s.text for s in shown),
                )
            )
    return items


def build_rankings(
    out: str | Path | None = None,
    cfg: RankingsConfig | None = None,
    *,
    model=None,
    tokenizer=None,
    world=None,
    progress: bool = True,
) -> Path:
    """Generate, rank and write the rankings folder `out` (default: the world's `rankings_dir`); returns the folder.

    Everything is written to a temporary folder first and swapped in at the end
    (`artifacts.atomic_folder`), so a failed or interrupted build leaves the previous dataset untouched.
    """
    from labkit import models
    from labkit import world as world_mod

    cfg = cfg or RankingsConfig()
    unknown = [p for p in cfg.personas if p not in labelers.PERSONAS]
    if unknown:
        raise ValueError(f"unknown persona(s) {unknown}: choose from {sorted(labelers.PERSONAS)}")
    if cfg.rounds < 1 or cfg.completions_per_item < 2:
        raise ValueError("rounds must be >= 1 and completions_per_item >= 2 (a ranking needs two completions)")
    world = world or world_mod.load()
    out = Path(out) if out is not None else rankings_dir(world)
    if model is None:
        model, tokenizer = models.load_policy("tiny")
        model_source = artifacts.file_hash(models.TINY_MODEL_DIR / "model.safetensors")
        model_name = "the tiny model"
    else:
        model_source = getattr(model, "name_or_path", "") or type(model).__name__
        model_name = Path(str(model_source)).name or model_source
    start = time.time()
    prompts = world.prompts("train")[: cfg.num_prompts]
    samples = generate.generate(
        model,
        tokenizer,
        [p.text for p in prompts],
        n=cfg.rounds * cfg.completions_per_item,
        prompt_ids=[p.id for p in prompts],
        temperature=cfg.temperature,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        progress=progress,
        prompting=cfg.prompting,
    )
    items = _items(samples, cfg)
    with artifacts.atomic_folder(out) as tmp:
        generate.save_jsonl(samples, tmp / "samples.jsonl")
        store = labels.RankingStore(tmp / "rankings.jsonl")
        labelers.simulate(items, list(cfg.personas), store, seed=cfg.seed, world=world, criterion=cfg.criterion)
        records = store.latest()
        stats = agreement.summary(records)
        stats["seconds"] = time.time() - start
        artifacts.write_manifest(
            tmp,
            "rankings",
            config=dataclasses.asdict(cfg),
            seed=cfg.seed,
            inputs={
                "model": model_source,
                "world": world.name,
                "world_data": artifacts.file_hash(rtp.SPLIT_PATH if world.name == "rtp" else world_mod.DEFAULT_DIR),
            },
            stats=stats,
        )
        (tmp / "README.md").write_text(_readme(cfg, records, stats, world.name, model_name), encoding="utf-8")
    return out


def _readme(cfg: RankingsConfig, records: list[labels.RankingRecord], stats: dict, world: str, model: str) -> str:
    personas = "\n".join(f"- `{name}`: {labelers.PERSONAS[name].description}" for name in cfg.personas)
    preset = {"assistant": "tiny", "rtp": "smol"}.get(world, "")
    command = "labkit rankings" + (" --preset smol" if preset == "smol" else "")
    return f"""# Shipped rankings ({preset or world} preset, {world} world)

Written by `{command}` (`labkit.shipped.build_rankings`); rebuild it with that command.

- {stats["num_items"]} items: {model}'s completions on the {world} world's train prompts, {cfg.rounds}
  items per prompt, {cfg.completions_per_item} completions each (temperature {cfg.temperature}, seed {cfg.seed})
- {stats["num_labelers"]} simulated labelers, criterion `{cfg.criterion}`, {len(records)} rankings in
  `rankings.jsonl` (a `labels.RankingStore`); completions in `samples.jsonl`
- Krippendorff's alpha (ordinal) {stats["krippendorff_alpha"]:.3f}, mean Kendall tau-b
  {stats["mean_kendall_tau"]:.3f}, mean pairwise agreement {stats["mean_pairwise_agreement"]:.3f}
- build time {stats["seconds"]:.0f} s on the machine that wrote it

Personas (`labkit.labelers.PERSONAS`):
{personas}
{_SOURCES.get(world, "")}
Load it with `shipped.load_rankings(shipped.rankings_dir("{world}"))` (records) and `shipped.load_samples(...)`
(completions).
"""


_SOURCES = {
    "rtp": "\nThe prompts are RealToxicityPrompts' challenging prompts (Gehman et al. 2020, Apache-2.0; their data "
    "card is data/rtp/README.md),\ncontinued as plain text.\n",
}


def load_rankings(path: str | Path | None = None) -> list[labels.RankingRecord]:
    """The current ranking records of a rankings folder (default: the tiny preset's shipped one, `rankings_dir()`)."""
    folder = Path(path) if path is not None else RANKINGS_DIR
    store_path = folder / "rankings.jsonl" if folder.is_dir() or not folder.suffix else folder
    if not store_path.is_file():
        raise FileNotFoundError(
            f"no rankings at {store_path}: rebuild the shipped dataset with `labkit rankings` "
            "(16 s for the tiny preset's, data/rankings/README.md; `--preset smol` for data/rtp_rankings), "
            "or point at a folder written by shipped.build_rankings"
        )
    return labels.RankingStore(store_path).latest()


def load_samples(path: str | Path | None = None) -> list[generate.Sample]:
    """The completions a rankings folder was made from (default: the tiny preset's shipped one)."""
    folder = Path(path) if path is not None else RANKINGS_DIR
    if not (folder / "samples.jsonl").is_file():
        raise FileNotFoundError(f"no samples.jsonl in {folder}: rebuild it with `labkit rankings`")
    return generate.load_jsonl(folder / "samples.jsonl")
