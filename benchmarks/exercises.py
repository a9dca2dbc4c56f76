"""Benchmark: how long each exercise that runs an experiment takes on this CPU, timed in its chapter.

Chapters 03-07 run in order in one folder, as `labkit prepare` leaves a laptop (each loads what the one
before saved), on the tiny preset. After a chapter's last cell, the experiments its exercises ask for
run in the same kernel, written as a learner would write them from the exercise's text (`EXPERIMENTS`),
each in a cell of its own, timed alone. What an exercise asks to compare is computed too (an evaluation,
a table), since a learner waits for it as well.

    .venv/bin/python benchmarks/exercises.py                    # chapters 03-07: 33 minutes here (2026-12-01)
    .venv/bin/python benchmarks/exercises.py --chapters 03 06   # those chapters' exercises only

Writes benchmarks/results/exercises.json: `seconds` per exercise key, each chapter's own seconds, and
the command, date and versions. The minutes `labkit/questions.py` states for these exercises (and the
chapters' check lines repeat) come from this file; `tests/test_exercises.py` checks they agree.
Run it alone on the machine: a second torch process on two cores slows both many times over.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

from labkit import artifacts  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
RESULTS = Path(__file__).resolve().parent / "results" / "exercises.json"

EXPERIMENTS: dict[str, dict[str, str]] = {
    "03": {
        "03.one_labeler": """
for who in ("noisy_crowdworker", "careful"):
    one = dataset.filter(lambda row: who in row["labeler"].split(","))
    one_model, one_tok, _ = reward_model.train_reward_model(one, rm_cfg)
    acc = reward_model.evaluate_reward_model(one_model, one_tok, consensus_pairs["test"], max_length=rm_cfg.max_length)
    one_reward = reward_model.PreferenceReward.fit(one_model, one_tok, one["train"], rm_cfg)
    table = reward_model.gold_comparison(one_reward, *reward_model.replies(dataset["test"]), world=w)
    print(who, len(one["train"]), "pairs; consensus accuracy", round(acc["accuracy"], 3),
          reward_model.gold_correlation(table))
""",
    },
    "04": {
        "04.k3_penalty": """
k3_run = ppo.train(models.load_policy(cfg)[0], tokenizer, prompts, reward,
                   dataclasses.replace(ppo_cfg, kl_estimator="k3"))
print(pd.DataFrame(k3_run.metrics)[["objective/kl"]].tail(3))
print(hacking.reply_stats(w, generate.for_preset(k3_run.policy, tokenizer, heldout, cfg)))
""",
        "04.lam": """
lam_run = ppo.train(models.load_policy(cfg)[0], tokenizer, prompts, reward, dataclasses.replace(ppo_cfg, lam=0.95))
print(hacking.reply_stats(w, generate.for_preset(lam_run.policy, tokenizer, heldout, cfg)))
""",
        "04.variant_reward": """
variant = rewards.make_reward(cfg.variant_reward, world=w, preference=preference)
variant_run = ppo.train(models.load_policy(cfg)[0], tokenizer, prompts, variant, ppo_cfg)
print(hacking.reply_stats(w, generate.for_preset(variant_run.policy, tokenizer, heldout, cfg)))
""",
    },
    "05": {
        "05.more_data_proxy": """
bigger_proxy, _ = hacking.train_noisy_reward_model(num_items=120, seed=cfg.seed)
bigger = {}
for name, beta in (("no KL penalty", 0.0), ("KL penalty", 0.1)):
    _, bigger[name] = hacking.train_and_track(models.load_policy(cfg)[0], tokenizer, prompts, bigger_proxy,
                                              hacking.ppo_config(cfg, kl_coef=beta, log_every=20), world=w)
print(hacking.curves_table(bigger).T)
""",
        "05.logit_reward": """
from labkit import rewards
_, logit_run = hacking.train_and_track(models.load_policy(cfg)[0], tokenizer, prompts, rewards.ToxicityReward("logit"),
                                       hacking.ppo_config(cfg, kl_coef=0.0, log_every=20), world=w)
print(hacking.sample_texts(logit_run, n=4))
""",
        "05.adaptive_kl": """
adaptive_result, adaptive = hacking.train_and_track(
    models.load_policy(cfg)[0], tokenizer, prompts, proxy,
    hacking.ppo_config(cfg, kl_coef=0.1, adaptive_kl=True, target_kl=1.0, kl_horizon=1000, log_every=20), world=w)
print(pd.DataFrame(adaptive_result.metrics)[["ppo/kl_coef", "objective/kl"]].iloc[::10])
""",
    },
    "06": {
        "06.k_samples": """
eval_16 = evaluate.preset_config(cfg, k=16)
before_16 = evaluate.with_kl(evaluate.evaluate_model(base, tokenizer, prompts, eval_16, reference=None, **settings),
                             0.0)
after_16 = evaluate.evaluate_model(ppo_run.model, tokenizer, prompts, eval_16, reference="disable_adapter", **settings)
print(evaluate.metrics_table({"base": before_16, "PPO": after_16}))
""",
        "06.judge_order": """
eval_svm = evaluate.preset_config(cfg, judges=("svm", "minilm"))
before_svm = evaluate.with_kl(evaluate.evaluate_model(base, tokenizer, prompts, eval_svm, reference=None, **settings),
                              0.0)
after_svm = evaluate.evaluate_model(ppo_run.model, tokenizer, prompts, eval_svm, reference="disable_adapter",
                                    **settings)
print(evaluate.metrics_table({"base": before_svm, "PPO": after_svm}))
""",
    },
    "07": {
        "07.bon_n16": """
import dataclasses
bon16_cfg = dataclasses.replace(bon_cfg, n=16, ns=(1, 2, 4, 8, 16))
bon16, bon16_metrics = bestofn.bestofn_stage(base, tokenizer, prompts, reward, bon16_cfg, k=cfg.completions_per_prompt,
                                             world=w)
bon16_eval = evaluate.with_kl(evaluate.evaluate_model(base, tokenizer, prompts, eval_cfg, reference=None,
                                                      samples=bon16["samples"], **settings),
                              bon16_metrics["kl_discrete"])
print(bon16_metrics, evaluate.metrics_table({"best-of-16": bon16_eval}))
""",
        "07.dpo_consensus": """
consensus = pairs.build_pairs(pairs.consensus_records(shipped.load_rankings()), seed=cfg.seed)
dpo_consensus = policies.dpo_policy(cfg, [], consensus)
print(dpo_consensus.describe())
consensus_eval = evaluate.evaluate_model(dpo_consensus.model, tokenizer, prompts, eval_cfg, reference="disable_adapter",
                                         **settings)
print(evaluate.metrics_table({"DPO, all labelers": results["DPO"], "DPO, consensus": consensus_eval}))
""",
        "07.bon_by_gold": """
by_reward = {}
for name in ("gold", "toxicity:binary"):
    by_this = rewards.make_reward(name, world=w)
    picked, picked_metrics = bestofn.bestofn_stage(base, tokenizer, prompts, by_this, bon_cfg,
                                                   k=cfg.completions_per_prompt, world=w)
    by_reward[f"best-of-{bon_cfg.n} by {name}"] = evaluate.with_kl(
        evaluate.evaluate_model(base, tokenizer, prompts, eval_cfg, reference=None, samples=picked["samples"],
                                **settings), picked_metrics["kl_discrete"])
print(evaluate.metrics_table(by_reward))
""",
    },
}
"""chapter -> exercise key -> the experiment, run in the chapter's kernel after its last cell."""


def _timed(key: str, code: str) -> nbformat.NotebookNode:
    body = f"_t0 = time.perf_counter()\n{code.strip()}\n_exercise_seconds[{key!r}] = time.perf_counter() - _t0"
    return nbformat.v4.new_code_cell(body)


def time_chapter(chapter: str, workdir: Path) -> dict:
    """Run chapter `chapter` in `workdir`, then its exercises' experiments; their seconds and the chapter's."""
    path = next(NOTEBOOKS.glob(f"{chapter}_*.ipynb"))
    nb = nbformat.read(path, as_version=4)
    out = workdir / f"exercises-{chapter}.json"
    nb.cells.insert(0, nbformat.v4.new_code_cell("import json, time\n_chapter_t0 = time.perf_counter()"))
    nb.cells.append(
        nbformat.v4.new_code_cell("_chapter_seconds = time.perf_counter() - _chapter_t0\n_exercise_seconds = {}")
    )
    nb.cells.extend(_timed(key, code) for key, code in EXPERIMENTS[chapter].items())
    nb.cells.append(
        nbformat.v4.new_code_cell(
            f"open({str(out)!r}, 'w').write(json.dumps({{'chapter_seconds': _chapter_seconds, "
            "'seconds': _exercise_seconds}))"
        )
    )
    os.environ.update(LAB_PRESET="tiny", LABKIT_WORKDIR=str(workdir), MPLBACKEND="Agg")
    NotebookClient(nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapters", nargs="+", default=sorted(EXPERIMENTS), choices=sorted(EXPERIMENTS))
    parser.add_argument("--workdir", type=Path, default=None, help="the chapters' folder (default: a fresh temp one)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="labkit-exercises-"))
    chapters, seconds = {}, {}
    for chapter in sorted(args.chapters):
        start = time.perf_counter()
        timed = time_chapter(chapter, workdir)
        chapters[chapter] = {"chapter_seconds": timed["chapter_seconds"], "wall_seconds": time.perf_counter() - start}
        seconds.update(timed["seconds"])
        for key, s in timed["seconds"].items():
            print(f"{key}: {s:.0f} s", flush=True)
    record = {
        **artifacts.provenance("benchmarks/exercises.py", argv),
        "preset": "tiny",
        "workdir": "a fresh folder; chapters run in order, as labkit prepare runs them",
        "chapters": chapters,
        "seconds": seconds,
    }
    artifacts.write_json(args.out, record)
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
