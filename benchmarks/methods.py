"""Benchmark: prompting, best-of-N, PPO and DPO side by side, with what each costs to build and to serve.

The numbers behind chapter 08's decision guide (`labkit.decide`). One run of the main job (`labkit run`,
every stage, on the preset) gives each method's quality on the held-out prompts (toxic share by the
independent judge, gold utility, KL to the base, with 95% bootstrap intervals) and the compute its
training took on this machine. This script adds two measurements the main job does not make:

    prompting   the base model with an instruction in front of every held-out prompt (`INSTRUCTION`),
                evaluated like the others (gold utility scored against the original prompt); its
                weights are the base's, so it has no KL to report
    serving     milliseconds per served reply: the median of 3 timed passes over `--serving-prompts`
                held-out prompts in batches of 64 (best-of-n: n samples per prompt, scored by the
                reward model, one served); the PPO and DPO policies served with their adapters on

Training seconds per method, from the main job's stage timings: best-of-n = reward model; PPO = reward
model + PPO; DPO = DPO; base and prompting = 0. Every method but base and prompting needs the same
labels (the `labels` block says how many).

    .venv/bin/python benchmarks/methods.py                   # tiny preset, about 10 minutes alone
    .venv/bin/python benchmarks/methods.py --preset smol --runs-dir /tmp/runs/methods_smol
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from labkit import artifacts, evaluate, generate, run  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "methods.json"
INSTRUCTION = "Please answer kindly, politely and helpfully. "
"""What 'prompting' puts in front of every prompt: the cheapest alignment there is, if the model follows it."""
SERVING_BATCH = 64
REPEATS = 3


def _metric(metrics: dict, method: str, key: str) -> dict | None:
    full = f"evaluate.{method}.{key}"
    if full not in metrics:
        return None
    return {"value": metrics[full], "ci_low": metrics[full + ".ci_low"], "ci_high": metrics[full + ".ci_high"]}


def _from_result(result: evaluate.EvalResult, key: str, judge: str) -> dict:
    m = result.metrics[f"{judge}.{key}" if f"{judge}.{key}" in result.metrics else key]
    return {"value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high}


def prompted(state: run.RunState, cfg: evaluate.EvalConfig) -> evaluate.EvalResult:
    """The base model asked with `INSTRUCTION` in front; scored against the prompts as users wrote them."""
    prompts = state.eval_prompts
    instructed = [INSTRUCTION + p.text for p in prompts]
    samples = evaluate.sample(state.model, state.tokenizer, instructed, cfg, prompt_ids=[p.id for p in prompts])
    original = {p.id: p.text for p in prompts}
    samples = [dataclasses.replace(s, prompt=original[s.prompt_id]) for s in samples]
    return evaluate.evaluate_model(
        state.model, state.tokenizer, prompts, cfg, reference=None, samples=samples, world=state.world
    )


def serving_ms(model, tokenizer, prompts: list[str], preset, n: int = 1, reward=None) -> float:
    """Median milliseconds per served reply over `REPEATS` passes (n samples per prompt, the best by `reward`)."""
    times = []
    for repeat in range(REPEATS):
        start = time.perf_counter()
        samples = generate.generate(
            model,
            tokenizer,
            prompts,
            n=n,
            max_new_tokens=preset.max_new_tokens,
            batch_size=SERVING_BATCH,
            seed=repeat,
            progress=False,
            prompting=preset.prompting,
        )
        if reward is not None:
            reward([s.prompt for s in samples], [s.text for s in samples])
        times.append((time.perf_counter() - start) / len(prompts) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    # A fresh folder by default: `labkit run` into a folder that holds a finished PPO run resumes it (no training)
    parser.add_argument("--runs-dir", default=None, help="the main job's run folder (default: a new temporary one)")
    parser.add_argument("--serving-prompts", type=int, default=64)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    started = time.time()

    # 1. the main job: every method trained and evaluated on the same held-out prompts
    runs_dir = args.runs_dir or tempfile.mkdtemp(prefix="labkit_methods_")
    state = run.run(args.preset, out=runs_dir, seed=args.seed)
    m, p = state.metrics, state.preset
    judge = m["evaluate.judge"]
    n = state.products["bestofn_n"]
    bestof = f"bestof{n}"

    # 2. prompting, evaluated like the others
    cfg = evaluate.preset_config(p)
    asked = prompted(state, cfg)

    # 3. serving time per reply, every method on the same prompts
    texts = [q.text for q in state.eval_prompts[: args.serving_prompts]]
    reward = state.products["preference_reward"]
    serve = {
        "base": serving_ms(state.model, state.tokenizer, texts, p),
        "prompting": serving_ms(state.model, state.tokenizer, [INSTRUCTION + t for t in texts], p),
        bestof: serving_ms(state.model, state.tokenizer, texts, p, n=n, reward=reward),
        "ppo": serving_ms(state.products["ppo_policy"], state.tokenizer, texts, p),
        "dpo": serving_ms(state.products["dpo_policy"], state.tokenizer, texts, p),
    }

    # 4. one row per method
    seconds = {s: m.get(f"{s}.seconds", 0.0) for s in ("labels", "pairs", "reward", "ppo", "dpo")}
    build = {
        "base": (0.0, False, False, "base model, no alignment"),
        "prompting": (0.0, False, False, f"base model, instruction {INSTRUCTION.strip()!r} before each prompt"),
        bestof: (seconds["reward"], True, True, f"best of {n} base samples by the preference reward model"),
        "ppo": (seconds["reward"] + seconds["ppo"], True, True, "PPO against the preference reward model"),
        "dpo": (seconds["dpo"], True, False, "DPO on the same pairs"),
    }
    rows = []
    for method, (train_s, needs_labels, needs_rm, label) in build.items():
        if method == "prompting":
            quality = {
                "toxic_share": _from_result(asked, "toxic_share", judge),
                "gold_utility": _from_result(asked, "gold_utility", judge),
                "kl": None,
            }
        else:
            quality = {k: _metric(m, method, k) for k in ("toxic_share", "gold_utility", "kl")}
        rows.append(
            {
                "method": method,
                "label": label,
                **quality,
                "training_seconds": train_s,
                "needs_labels": needs_labels,
                "needs_reward_model": needs_rm,
                "serving_ms_per_reply": serve[method],
                "generations_per_reply": n if method == bestof else 1,
            }
        )
        q = quality
        print(
            f"{method:>10}  toxic {q['toxic_share']['value']:.3f}  utility {q['gold_utility']['value']:+.3f}  "
            f"KL {q['kl']['value'] if q['kl'] else float('nan'):.2f}  train {train_s:.0f} s  "
            f"serve {serve[method]:.1f} ms",
            flush=True,
        )

    report = {
        **artifacts.provenance("benchmarks/methods.py", argv),
        "preset": p.name,
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "judge": judge,
        "heldout": {"prompts": len(state.eval_prompts), "samples_per_prompt": cfg.k},
        "labels": {
            "items": m.get("labels.num_items"),
            "labelers": m.get("labels.num_labelers"),
            "rankings": m.get("labels.num_records"),
            "pairs": m.get("pairs.num_train", 0) + m.get("pairs.num_test", 0),
            "seconds": seconds["labels"] + seconds["pairs"],
        },
        "serving": {"prompts": len(texts), "batch_size": SERVING_BATCH, "repeats": REPEATS, "statistic": "median"},
        "main_job_seconds": m["run.wall_seconds"],
        "seconds": time.time() - started,
        "methods": rows,
    }
    artifacts.write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
