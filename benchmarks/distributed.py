"""Benchmark: labkit PPO on one process and on two (accelerate launch, data parallel), samples per second.

Each configuration runs `labkit ppo` on the tiny preset with the lab's own PPO settings (batch 32,
minibatches of 16, 48 new tokens, LoRA) against the toxicity classifier, in a fresh folder, and
reads its metrics.jsonl. Steps after the first `--warmup` are averaged: samples/s and the seconds of
each phase (generate, score, the rest of the rollout, update). Two processes get one torch thread
each and one process gets both cores, so the comparison is the same machine split two ways.

    .venv/bin/python benchmarks/distributed.py            # about 3 minutes; run it alone

On a 2-core CPU this measures the overhead of data parallelism, not a speed-up from more hardware:
the two processes share the two cores one process already used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import fmean

from labkit import artifacts

RESULTS = Path(__file__).resolve().parent / "results" / "distributed.json"
BIN = Path(sys.executable).parent

CONFIGS = [
    # name, processes, threads per process, sampling
    ("1 process, 2 threads, batch sampling", 1, 2, "batch"),
    ("1 process, 2 threads, per-prompt sampling", 1, 2, "per_prompt"),
    ("2 processes, 1 thread each, batch sampling", 2, 1, "batch"),
    ("2 processes, 1 thread each, per-prompt sampling", 2, 1, "per_prompt"),
]
PHASES = ("time/generate", "time/score", "time/rollout", "time/update", "time/step")


def one_run(processes: int, threads: int, sampling: str, steps: int, warmup: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ppo"
        args = ["ppo", "--preset", "tiny", "--out", str(out), "--steps", str(steps), "--set", f"sampling={sampling}"]
        if processes == 1:
            cmd = [sys.executable, "-m", "labkit.cli", *args]
        else:
            cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(processes)]
            cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "labkit.cli"]
            cmd += args
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "LAB_PRESET": ""}
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = rows[warmup:]
    return {
        "processes": processes,
        "threads_per_process": threads,
        "sampling": sampling,
        "steps": len(rows),
        "steps_averaged": len(timed),
        "samples_per_second": fmean(r["samples_per_second"] for r in timed),
        "seconds": {phase.removeprefix("time/"): fmean(r[phase] for r in timed) for phase in PHASES},
        "wall_seconds_with_startup": wall,
        "final_score": rows[-1]["objective/scores"],
        "final_kl": rows[-1]["objective/kl"],
        "command": " ".join(cmd),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the averages")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    runs = {}
    for name, processes, threads, sampling in CONFIGS:
        runs[name] = one_run(processes, threads, sampling, args.steps, args.warmup)
        r = runs[name]
        print(f"{name}: {r['samples_per_second']:.1f} samples/s, {r['seconds']['step']:.2f} s/step", flush=True)
    base = runs[CONFIGS[0][0]]["samples_per_second"]
    report = {
        **artifacts.provenance("benchmarks/distributed.py", argv),
        "preset": "tiny",
        "reward": "toxicity:binary",
        "runs": runs,
        "speedup_vs_one_process": {name: r["samples_per_second"] / base for name, r in runs.items()},
    }
    artifacts.write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
