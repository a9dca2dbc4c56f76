"""Shipping: merge the LoRA adapters into the weights, save with a model card, reload and check.

Stage: after evaluation (chapter 08). Inputs: a trained policy (a peft model with its adapter on, as
`policies.ppo_policy` / `dpo_policy` return it), its tokenizer and a `ModelCard`. Output: a folder a
plain `AutoModelForCausalLM.from_pretrained` loads with no peft and no labkit (config, safetensors
weights, tokenizer, README.md with YAML metadata), and a `ShipReport` saying whether the reloaded model
generates the same tokens as the adapter model it came from.

Why merge: W' = W + (alpha / r) B A is one matrix again, so serving costs exactly the base model's
matmuls; the adapter model pays two small extra matmuls per layer, and needs peft installed.
The check is greedy decoding (no sampling, so the same weights must give the same tokens) on a few
prompts, plus the largest difference between the two models' logits, which is float rounding
(the merged sum is computed once, in a different order than the adapter's x A^T B^T).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

__all__ = ["ModelCard", "ShipReport", "merge", "read_card", "ship"]


@dataclass
class ModelCard:
    """What the README.md of a shipped model says, as YAML metadata and a short text."""

    base_model: str
    """The model the adapters were trained on (a hub id, or a description of a local model)."""
    method: str
    """How it was aligned: "ppo" or "dpo" (or anything else that names the method)."""
    data: str
    """The prompts and preference data it was trained on."""
    reward: str
    """What PPO optimised (or, for DPO, whose preferences)."""
    kl: float | None = None
    """KL to the base model in nats per reply, as measured by the run."""
    evaluation: dict[str, float] = field(default_factory=dict)
    """Held-out numbers (toxicity, utility, perplexity, ...), name -> value."""
    license: str = "apache-2.0"
    notes: str = ""
    """Anything a user of the model should know: limits, what was not measured."""

    def metadata(self) -> dict[str, Any]:
        return {
            "base_model": self.base_model,
            "library_name": "transformers",
            "pipeline_tag": "text-generation",
            "license": self.license,
            "tags": ["labkit", "rlhf", self.method],
            "labkit": {
                "method": self.method,
                "data": self.data,
                "reward": self.reward,
                "kl_nats": self.kl,
                "evaluation": {k: float(v) for k, v in self.evaluation.items()},
            },
        }

    def render(self) -> str:
        """README.md: YAML front matter, then what the model is, in prose."""
        rows = "\n".join(f"| {k} | {v:.4g} |" for k, v in self.evaluation.items()) or "| (none) | |"
        kl = "not measured" if self.kl is None else f"{self.kl:.3g} nats per reply"
        return (
            "---\n"
            + yaml.safe_dump(self.metadata(), sort_keys=False, allow_unicode=True)
            + "---\n\n"
            + f"# {self.base_model}, aligned with {self.method.upper()}\n\n"
            + f"Base model: {self.base_model}. Method: {self.method}, LoRA adapters merged into the weights.\n\n"
            + f"Data: {self.data}\n\nReward: {self.reward}\n\nKL to the base model: {kl}.\n\n"
            + "## Evaluation\n\n| metric | value |\n|---|---|\n"
            + rows
            + "\n"
            + (f"\n## Notes\n\n{self.notes}\n" if self.notes else "")
        )


@dataclass
class ShipReport:
    """Where the model went and whether the reloaded copy behaves as the adapter model did."""

    folder: Path
    same_tokens: bool
    """Greedy decoding gave the same token ids on every check prompt."""
    prompts_checked: int
    first_difference: dict | None
    """The first prompt whose tokens differ, with both token lists (None when all agree)."""
    max_logit_diff: float
    """Largest |logit difference| between adapter and reloaded model on the check prompts."""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "folder": str(self.folder)}


def merge(model):
    """A plain transformers model with the adapters folded into its weights; `model` is left as it was."""
    if not hasattr(model, "merge_and_unload"):
        raise ValueError(
            f"merge needs a peft model with LoRA adapters, got {type(model).__name__}: a model without "
            "adapters has nothing to merge and can be saved with save_pretrained as it is"
        )
    return copy.deepcopy(model).merge_and_unload().eval()


@torch.no_grad()
def _greedy(model, tokenizer, rendered: Sequence[str], max_new_tokens: int) -> list[torch.Tensor]:
    """Each prompt's ids followed by its greedy continuation (one prompt at a time: no padding)."""
    device = next(model.parameters()).device
    out = []
    for text in rendered:
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
        seq = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        out.append(seq[0].cpu())
    return out


@torch.no_grad()
def _max_logit_diff(a, b, sequences: Sequence[torch.Tensor]) -> float:
    device = next(a.parameters()).device
    return max(
        (a(input_ids=s[None].to(device)).logits - b(input_ids=s[None].to(device)).logits).abs().max().item()
        for s in sequences
    )


def ship(
    model,
    tokenizer,
    folder: str | Path,
    card: ModelCard,
    check_prompts: Sequence[str],
    prompting: str = "chat",
    max_new_tokens: int = 32,
    overwrite: bool = False,
) -> ShipReport:
    """Merge `model`'s adapters, save model + tokenizer + README.md to `folder`, reload it, compare tokens.

    The folder is built beside `folder` and renamed into place only when complete, so a failure leaves
    nothing half-written; an existing `folder` is kept unless `overwrite`.
    """
    from transformers import AutoModelForCausalLM

    from labkit.artifacts import atomic_folder
    from labkit.models import render_prompts

    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} already exists and was left as it is: pass overwrite=True or another folder")
    if not check_prompts:
        raise ValueError("check_prompts is empty: give a few prompts to compare the reloaded model on")
    rendered = render_prompts(tokenizer, list(check_prompts), prompting)
    want = _greedy(model, tokenizer, rendered, max_new_tokens)
    merged = merge(model)
    with atomic_folder(folder) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(card.render(), encoding="utf-8")
    del merged
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=next(model.parameters()).dtype).eval()
    reloaded.to(next(model.parameters()).device)
    got = _greedy(reloaded, tokenizer, rendered, max_new_tokens)
    first = next(
        (
            {"prompt": p, "adapter": a.tolist(), "reloaded": b.tolist()}
            for p, a, b in zip(check_prompts, want, got)
            if not torch.equal(a, b)
        ),
        None,
    )
    # both models scored on the adapter model's own sequences, so one diverging token cannot inflate the gap
    diff = _max_logit_diff(model, reloaded, want)
    return ShipReport(folder, first is None, len(check_prompts), first, diff)


def read_card(folder: str | Path) -> dict[str, Any]:
    """The YAML metadata of a shipped model's README.md (safe_load: plain data only)."""
    path = Path(folder) / "README.md"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: ship() writes it; is {folder} a shipped model folder?")
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        raise ValueError(f"{path} has no YAML front matter between '---' lines")
    return yaml.safe_load(text[4 : text.index("\n---\n", 4)])
