"""Generation: N completions per prompt, batched and seeded.

Inputs: a model and tokenizer from `models.load_policy`, raw user prompts. Output: `Sample`
records (prompt id, prompt, completion id, text, token count) that save to and load from JSONL
and convert to a `datasets.Dataset`, the format the ranking chapter starts from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from labkit.artifacts import atomic_write
from labkit.models import render_prompts

__all__ = ["Sample", "for_preset", "generate", "load_jsonl", "save_jsonl", "to_dataset"]


@dataclass(frozen=True)
class Sample:
    """One completion of one prompt."""

    prompt_id: str
    prompt: str
    completion_id: int
    text: str
    num_tokens: int


def generate(
    model,
    tokenizer,
    prompts: list,
    n: int = 4,
    *,
    prompt_ids: list[str] | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 48,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    prompting: str = "chat",
) -> list[Sample]:
    """`n` completions for each prompt, sampled in batches; the same seed gives the same samples.

    `prompts` are strings or prompt records with `.text` and `.id` (world or RealToxicityPrompts
    prompts; the id is kept unless `prompt_ids` are given; a string's id is "p<index>").
    `prompting`: "chat" asks each prompt as a user turn (`models.chat_prompts`); "plain" continues
    the prompt text as it stands, the RealToxicityPrompts protocol (`models.render_prompts`); its
    samples keep their leading space, so prompt + text re-tokenizes to the tokens sampled.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if prompt_ids is None:
        prompt_ids = [getattr(p, "id", f"p{i}") for i, p in enumerate(prompts)]
    prompts = [getattr(p, "text", p) for p in prompts]
    if len(prompt_ids) != len(prompts):
        raise ValueError(f"prompt_ids has {len(prompt_ids)} entries for {len(prompts)} prompts")
    rendered = render_prompts(tokenizer, prompts, prompting)
    jobs = [(i, c) for i in range(len(prompts)) for c in range(n)]  # (prompt index, completion id)
    device = next(model.parameters()).device
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
    samples: list[Sample] = []
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]), torch.no_grad():
        torch.manual_seed(seed)
        for start in tqdm(range(0, len(jobs), batch_size), desc="generate", disable=not progress, unit="batch"):
            batch = jobs[start : start + batch_size]
            enc = tokenizer(
                [rendered[i] for i, _ in batch], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(device)
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
            new = out[:, enc["input_ids"].shape[1] :]
            for (i, c), ids in zip(batch, new):
                length = _length_to_eos(ids, tokenizer.eos_token_id, tokenizer.pad_token_id)
                text = tokenizer.decode(ids[:length], skip_special_tokens=True)
                # a continuation keeps its leading space: " idiot" and "idiot" are different tokens, and
                # KL, perplexity and DPO re-tokenize prompt + text; a chat reply starts a fresh turn.
                text = text.rstrip() if prompting == "plain" else text.strip()
                samples.append(Sample(prompt_ids[i], prompts[i], c, text, length))
    return samples


def for_preset(
    model, tokenizer, prompts: Sequence[Any], preset, stage: str = "generate", progress: bool = False
) -> list[Sample]:
    """N completions per prompt at the preset's sizes, seeded for `stage` (`Preset.seed_for`).

    The one held-out sampler of the lab: the main job, the chapters and the benchmarks call it, so
    "before" and "after" are drawn the same way everywhere. `prompts` are world `Prompt`s (their ids
    are kept) or strings.
    """
    return generate(
        model,
        tokenizer,
        list(prompts),
        n=preset.completions_per_prompt,
        max_new_tokens=preset.max_new_tokens,
        batch_size=preset.batch_size,
        seed=preset.seed_for(stage),
        progress=progress,
        prompting=preset.prompting,
    )


def _length_to_eos(ids: torch.Tensor, eos_id: int | None, pad_id: int | None) -> int:
    """Tokens generated up to and including the first EOS (padding after it does not count)."""
    ids = ids.tolist()
    if eos_id is not None and eos_id in ids:
        return ids.index(eos_id) + 1
    if pad_id is not None and pad_id != eos_id and pad_id in ids:
        return ids.index(pad_id)
    return len(ids)


def save_jsonl(samples: list[Sample], path: str | Path) -> Path:
    """Write one JSON object per sample (atomically: a temp file renamed into place)."""
    return atomic_write(path, "".join(json.dumps(asdict(s), ensure_ascii=False) + "\n" for s in samples))


def load_jsonl(path: str | Path) -> list[Sample]:
    """Read samples written by `save_jsonl`; a malformed line raises with its line number."""
    samples = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                samples.append(Sample(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as err:
                raise ValueError(
                    f"{path}, line {number}: not a sample record ({err}); expected keys "
                    "prompt_id, prompt, completion_id, text, num_tokens"
                ) from err
    return samples


def to_dataset(samples: list[Sample]):
    """A `datasets.Dataset` with one row per sample."""
    from datasets import Dataset

    return Dataset.from_list([asdict(s) for s in samples])
