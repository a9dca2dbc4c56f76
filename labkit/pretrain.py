"""Pretraining the tiny model: the assistant world's dialogues -> a small Llama checkpoint.

Inputs: `world.dialogues` (prompts and replies in the documented style mix, train split only).
Output: `data/tiny-model/` with safetensors weights, the BPE tokenizer and a model card
(`model_card.json` and `README.md`) whose quality figures are measured on held-out prompts after
training.

The model is a LlamaForCausalLM (the same architecture as SmolLM2 and Llama), only small: its 2.2
million parameters learn the world's templates and tips in 829 s on two CPU threads (the shipped
model's card, data/tiny-model/model_card.json). Training is a plain next-token loop in the
nanoGPT manner: AdamW, linear warmup, cosine decay, gradient clipping.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM

from labkit import world as world_mod
from labkit.artifacts import atomic_folder
from labkit.config import seed_everything
from labkit.tokenizer import train_tokenizer

__all__ = ["PretrainConfig", "build_model", "measure_quality", "pretrain", "render_dialogue"]


@dataclass
class PretrainConfig:
    """Sizes and schedule of the tiny model's pretraining."""

    num_dialogues: int = 60_000
    """Distinct world dialogues generated for the corpus (train prompts only)."""
    vocab_size: int = 2048
    """BPE vocabulary size, special tokens included."""
    hidden_size: int = 192
    """Width of the residual stream."""
    num_layers: int = 4
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads (head dim = hidden_size / num_heads)."""
    intermediate_size: int = 512
    """Width of the SwiGLU MLP."""
    max_length: int = 160
    """Longest training sequence in tokens (prompt + reply); longer dialogues are cut."""
    batch_size: int = 64
    """Dialogues per optimiser step."""
    steps: int = 1500
    """Optimiser steps (1500 made the shipped data/tiny-model: its model_card.json records the config)."""
    learning_rate: float = 3e-3
    """Peak AdamW learning rate (small models tolerate a high one)."""
    warmup_steps: int = 100
    """Linear warmup before cosine decay to 10% of the peak."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices (not on norms)."""
    seed: int = 0
    """Seed for the corpus, the initial weights and the batch order."""
    eval_prompts: int = 200
    """Held-out prompt samples used to measure the model card's figures."""


def render_dialogue(tokenizer, prompt: str, reply: str) -> str:
    """One training sequence in the chat format the model is later prompted with."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}], tokenize=False
    )


def build_model(cfg: PretrainConfig, tokenizer) -> LlamaForCausalLM:
    """A freshly initialised Llama of the configured size speaking `tokenizer`'s ids."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def _lr(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def pretrain(
    cfg: PretrainConfig | None = None,
    out_dir: str | Path | None = None,
    world=None,
    progress: bool = True,
    measure: bool = True,
) -> dict:
    """Train the tiny model, save it to `out_dir` (default data/tiny-model) and return its card."""
    from labkit.models import TINY_MODEL_DIR

    cfg = cfg or PretrainConfig()
    out_dir = Path(out_dir) if out_dir is not None else TINY_MODEL_DIR
    world = world or world_mod.load()
    seed_everything(cfg.seed)
    start = time.time()

    # 1. corpus: world dialogues on train prompts only (held-out prompts stay unseen)
    dialogues = world.dialogues(cfg.num_dialogues, seed=cfg.seed, split="train")
    raw = [f"{d.prompt.text} {d.reply}" for d in dialogues]

    # 2. tokenizer: byte-level BPE trained on the corpus
    tokenizer = train_tokenizer(raw, vocab_size=cfg.vocab_size)
    texts = [render_dialogue(tokenizer, d.prompt.text, d.reply) for d in dialogues]
    encoded = [ids[: cfg.max_length] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    # 3. model and optimiser (no weight decay on norm gains)
    model = build_model(cfg, tokenizer)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
        betas=(0.9, 0.95),
    )

    # 4. train: shuffled batches, right-padded, loss on every real token
    rng = random.Random(cfg.seed)
    order: list[int] = []
    model.train()
    losses = []
    bar = tqdm(range(cfg.steps), desc="pretrain", disable=not progress)
    for step in bar:
        if len(order) < cfg.batch_size:
            order += rng.sample(range(len(encoded)), len(encoded))
        batch = [encoded[order.pop()] for _ in range(cfg.batch_size)]
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        labels = input_ids.masked_fill(mask == 0, -100)
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, cfg)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    train_seconds = time.time() - start
    model.eval()

    # 5. the card, measured on held-out prompts before anything is written
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    card = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": dataclasses.asdict(cfg),
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "train_seconds": round(train_seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "corpus_tokens": sum(len(ids) for ids in encoded),
    }
    if measure:
        card["quality"] = measure_quality(model, tokenizer, world, cfg.eval_prompts, seed=cfg.seed + 1)

    # 6. save atomically: the old model stays in place until the new folder is complete
    with atomic_folder(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        card["size_mb"] = round((tmp / "model.safetensors").stat().st_size / 2**20, 2)
        (tmp / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
        (tmp / "README.md").write_text(_card_markdown(card))
    return card


def measure_quality(
    model, tokenizer, world, num_prompts: int = 200, seed: int = 1, temperature: float = 1.0, max_new_tokens: int = 64
) -> dict:
    """Held-out figures at temperature 1: recognised-style share, style shares, distinct-2, gold."""
    from labkit.generate import generate

    heldout = world.prompts("heldout")
    rng = random.Random(seed)
    chosen = [rng.choice(heldout) for _ in range(num_prompts)]
    samples = generate(
        model,
        tokenizer,
        [p.text for p in chosen],
        n=1,
        prompt_ids=[p.id for p in chosen],
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        batch_size=64,
        seed=seed,
        progress=False,
    )
    styles = [world.classify_style(s.prompt, s.text) for s in samples]
    shares = {style: styles.count(style) / len(styles) for style in world_mod.STYLES}
    bigrams = [tuple(pair) for s in samples for pair in zip(s.text.split(), s.text.split()[1:])]
    return {
        "num_samples": len(samples),
        "temperature": temperature,
        "recognised_share": sum(s is not None for s in styles) / len(styles),
        "rude_share": shares["rude"],
        "style_shares": shares,
        "distinct_2": len(set(bigrams)) / max(1, len(bigrams)),
        "gold_utility_mean": sum(world.gold(s.prompt, s.text).utility for s in samples) / len(samples),
        "examples": [{"prompt": s.prompt, "reply": s.text, "style": st} for s, st in zip(samples[:8], styles)],
    }


def _card_markdown(card: dict) -> str:
    q = card.get("quality", {})
    c = card["config"]
    lines = [
        "# labkit tiny model",
        "",
        "A Llama-architecture causal LM trained from scratch by `labkit pretrain` on the assistant",
        "world's dialogues (train prompts only, the style mix in `labkit.world.PRETRAIN_MIX`). It is",
        "deliberately unaligned: it answers helpfully, vaguely, off topic, with nonsense, rudely or",
        "with empty flattery, in roughly the proportions it was trained on, so the RLHF chapters have",
        "something to remove.",
        "",
        f"- parameters: {card['parameters']:,} ({c['num_layers']} layers, width {c['hidden_size']}, "
        f"{c['num_heads']} heads, BPE vocabulary {c['vocab_size']})",
        f"- weights: {card['size_mb']} MB safetensors (fp32)",
        f"- corpus: {c['num_dialogues']:,} dialogues, {card['corpus_tokens']:,} tokens; "
        f"{c['steps']} steps of {c['batch_size']}",
        f"- training time: {card['train_seconds']:.0f} s on this machine's CPU "
        f"({card['torch_threads']} torch threads), final loss {card['final_loss']:.3f}",
        "- reproduce: `labkit pretrain` (seeded; the same command rewrote this card)",
    ]
    if q:
        lines += [
            "",
            f"## Measured on {q['num_samples']} held-out prompts at temperature {q['temperature']}",
            "",
            f"- replies the gold scorer recognises as a known style: {q['recognised_share']:.1%}",
            f"- rude share: {q['rude_share']:.1%}",
            f"- distinct-2: {q['distinct_2']:.3f}",
            f"- mean gold utility: {q['gold_utility_mean']:.3f}",
            "- style shares: " + ", ".join(f"{k} {v:.1%}" for k, v in q["style_shares"].items()),
            "",
            "## Example replies",
            "",
        ]
        lines += [f"- **{e['prompt']}** → {e['reply']} _({e['style']})_" for e in q["examples"]]
    return "\n".join(lines) + "\n"
