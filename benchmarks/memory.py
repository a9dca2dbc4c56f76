"""Benchmark: peak memory of one PPO step, LoRA against full fine-tuning, measured and estimated.

For each preset (tiny, smol) and each of LoRA (reference = adapters off) and full fine-tuning (a frozen
reference copy), `memory.measure_ppo_step` runs the preset's PPO configuration on its own training
prompts and reports the peak tensor bytes of one step with the breakdown at that peak (weights,
reference, value head, gradients, optimizer state, activations), and on a GPU also
`torch.cuda.max_memory_allocated`. `memory.estimate` predicts the same from the model's shape; the
estimate's error against each measurement is written beside it.

Then the "PEFT saves about 50%" claim, tested with the estimator (checked above) where this machine
cannot measure: the LoRA/full ratio for three model sizes, several batch sizes and sequence lengths,
and where the ratio is near 0.5 and where it is not.

    .venv/bin/python benchmarks/memory.py
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from labkit import artifacts, memory, models, ppo, presets, worlds  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "memory.json"

# Llama-style shapes for the claim's sweep: SmolLM2-135M (measured above), SmolLM2-1.7B and Llama-2-7B,
# from their published configs (hidden, intermediate, layers, heads, kv heads, vocab, tied embeddings).
SHAPES = {
    "SmolLM2-135M": (576, 1536, 30, 9, 3, 49152, True),
    "SmolLM2-1.7B": (2048, 8192, 24, 32, 32, 49152, True),
    "Llama-2-7B": (4096, 11008, 32, 32, 32, 32000, False),
}
MiB = 2**20


def measure_preset(name: str, n_prompts: int) -> dict:
    preset = presets.load(name)
    world = worlds.load(preset)
    prompts = [getattr(q, "text", q) for q in world.prompts("train")][:n_prompts]
    out = {}
    for label, lora in (("lora", True), ("full", False)):
        policy, tokenizer = models.load_policy(preset)  # a fresh model each time: full fine-tuning trains it
        cfg = ppo.preset_config(preset, lora=lora)
        report = memory.measure_ppo_step(policy, tokenizer, prompts, cfg)
        predicted = memory.estimate(
            memory.ModelShape.from_config(policy.config),
            lora=lora,
            batch_size=cfg.batch_size,
            mini_batch_size=cfg.mini_batch_size,
            prompt_tokens=report.prompt_tokens,
            max_new_tokens=cfg.max_new_tokens,
            lora_r=cfg.lora_r,
            dtype_bytes=torch.finfo(getattr(torch, report.dtype)).bits // 8,
        )
        out[label] = {
            **report.as_dict(),
            "estimate": predicted,
            "estimate_error": predicted["total"] / report.peak_bytes - 1,
        }
        del policy
    out["lora_peak_bytes"] = out["lora"]["peak_bytes"]
    out["full_peak_bytes"] = out["full"]["peak_bytes"]
    out["lora_over_full"] = out["lora_peak_bytes"] / out["full_peak_bytes"]
    return out


def claim_sweep(lora_r: int) -> list[dict]:
    """LoRA/full ratio predicted over sizes, minibatches and sequence lengths (fp32 weights, AdamW)."""
    rows = []
    for model, dims in SHAPES.items():
        shape = memory.ModelShape.llama(*dims)
        for mini_batch in (1, 8, 32):
            for seq in (64, 512, 2048):
                kw = dict(
                    batch_size=mini_batch,
                    mini_batch_size=mini_batch,
                    prompt_tokens=seq // 2,
                    max_new_tokens=seq // 2,
                    lora_r=lora_r,
                )
                lo, full = memory.estimate(shape, lora=True, **kw), memory.estimate(shape, lora=False, **kw)
                rows.append(
                    {
                        "model": model,
                        "params": shape.params,
                        "mini_batch": mini_batch,
                        "sequence_tokens": seq,
                        "lora_gib": lo["total"] / 2**30,
                        "full_gib": full["total"] / 2**30,
                        "lora_over_full": lo["total"] / full["total"],
                        "activation_share_of_lora": lo["activations"] / lo["total"],
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "smol"])
    parser.add_argument("--prompts", type=int, default=64, help="training prompts the step samples its batch from")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    measured = {name: measure_preset(name, args.prompts) for name in args.presets}
    print(f"{'preset':6s} {'mode':5s} {'peak MiB':>9s} {'estimate':>9s} {'error':>7s}  breakdown (MiB)")
    for name, by_mode in measured.items():
        for mode in ("lora", "full"):
            r = by_mode[mode]
            parts = " ".join(f"{k}={v / MiB:.1f}" for k, v in r["breakdown"].items())
            print(
                f"{name:6s} {mode:5s} {r['peak_bytes'] / MiB:9.1f} {r['estimate']['total'] / MiB:9.1f} "
                f"{100 * r['estimate_error']:+6.1f}%  {parts}"
            )
        print(f"{name:6s} LoRA / full = {by_mode['lora_over_full']:.2f}")
    sweep = claim_sweep(lora_r=8)
    print(f"\n{'model':14s} {'mini':>4s} {'tokens':>6s} {'LoRA GiB':>9s} {'full GiB':>9s} {'ratio':>6s}")
    for row in sweep:
        print(
            f"{row['model']:14s} {row['mini_batch']:4d} {row['sequence_tokens']:6d} {row['lora_gib']:9.2f} "
            f"{row['full_gib']:9.2f} {row['lora_over_full']:6.2f}"
        )
    errors = [abs(by_mode[m]["estimate_error"]) for by_mode in measured.values() for m in ("lora", "full")]
    report = {
        **artifacts.provenance("benchmarks/memory.py", argv),
        "what": "peak tensor bytes of one PPO step (after two warm-up steps), by category at the peak",
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        **measured,
        "estimator_max_abs_error": max(errors),
        "claim_sweep": {
            "assumes": "fp32 weights and AdamW moments, LoRA rank 8 on every linear layer, the whole batch "
            "one minibatch, half prompt half reply; predicted by memory.estimate, not measured",
            "rows": sweep,
        },
    }
    artifacts.write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
