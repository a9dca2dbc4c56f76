"""Benchmark: labkit's PPO against TRL's GRPOTrainer and RLOOTrainer at the same rollout budget.

Inputs: a policy (`--model tiny`, the lab's model, or `--model random`, an untrained Llama of the
same shape for debugging), the world's train prompts, a text reward (default: alt-profanity-check's
non-toxic logit). Output: one markdown table on stdout and `benchmarks/results/peer_ppo.json`.

Every method gets a fresh copy of the same base model, the same LoRA adapters (r, alpha, every
linear layer), the same learning rate, KL coefficient, sampling temperature, max_new_tokens,
reward function and total number of sampled completions (steps x prompts x generations). TRL runs
with its own defaults otherwise (transformers `generate`, one optimizer step per generation
batch); only the settings a CPU run needs are changed (see `trl_args`).

Measured per method: samples per second (completions scored / wall seconds of the training loop,
generation included), seconds per phase (generate; score, inside the shared reward function;
forward, the rest of the rollout: log-probs, values, the reference; update), the reward of the last
few training batches, a fresh evaluation (k samples per held-out prompt from the trained policy,
drawn by one shared sampler, scored by the same reward) and the KL to the reference on those
samples, computed identically for all three: mean over sequences of
sum_t log p_policy(y_t) - log p_ref(y_t), reference = adapters disabled.

    .venv/bin/python benchmarks/peer_ppo.py                       # tiny model, 20 x 8 x 4
    .venv/bin/python benchmarks/peer_ppo.py --model random --steps 2 --methods labkit,grpo
    .venv/bin/python benchmarks/peer_ppo.py --repeats 3           # median timings of 3 rounds
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import io
import math
import os
import pstats
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from labkit import artifacts, config, models, ppo, ppo_math, pretrain, rewards  # noqa: E402
from labkit import tokenizer as bpe  # noqa: E402
from labkit import world as world_mod  # noqa: E402

__all__ = [
    "BenchConfig",
    "evaluate_policy",
    "load_model",
    "load_prompts",
    "main",
    "make_reward",
    "markdown_table",
    "run_benchmark",
    "run_labkit",
    "run_trl",
]

METHODS = ("labkit", "grpo", "rloo")
ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = ROOT / "benchmarks" / "results" / "peer_ppo.json"


@dataclass
class BenchConfig:
    """One benchmark run: the shared budget and the settings every method gets."""

    model: str = "tiny"
    """"tiny" (data/tiny-model via labkit.models.load_policy) or "random" (same architecture, untrained)."""
    steps: int = 20
    """Rollout + update iterations per method."""
    batch: int = 8
    """Prompts per step for GRPO/RLOO; labkit samples batch x generations distinct prompts, one completion each."""
    generations: int = 4
    """Completions per prompt for GRPO/RLOO (their group size)."""
    max_new_tokens: int = 48
    """Longest completion in tokens, for training and evaluation alike."""
    temperature: float = 1.0
    """Sampling temperature, for training and evaluation alike (top_p is 1 everywhere)."""
    learning_rate: float = 1e-3
    """AdamW step size of the LoRA weights, constant, for all methods (labkit's LoRA default)."""
    kl_coef: float = 0.05
    """labkit's kl_coef and TRL's beta (RLOO: same k1 reward penalty; GRPO: k3 term in the loss)."""
    lora_r: int = 8
    """LoRA rank, all methods."""
    lora_alpha: int = 16
    """LoRA alpha, all methods."""
    reward: str = "toxicity"
    """Reward on the completion text: "toxicity" (non-toxic logit of alt-profanity-check)."""
    eval_prompts: int = 32
    """Held-out prompts in the fresh evaluation."""
    eval_k: int = 4
    """Completions per held-out prompt in the fresh evaluation."""
    last_n: int = 5
    """Training reward is averaged over this many final steps."""
    methods: tuple[str, ...] = METHODS
    """Which methods to run, in this order."""
    seed: int = 0
    """Seed of every run (adapter init, prompt order, sampling) and of the evaluation sampler."""
    threads: int = 2
    """torch intra-op threads."""
    profile: bool = False
    """Also cProfile one (warm) step of each method and save the top functions."""
    repeats: int = 1
    """Train every method this many times, the order rotated each round, and report the median timings
    (the rewards are the same each round: every run is seeded). One round's timings swing by 20% here."""
    labkit_set: dict = field(default_factory=dict)
    """PPOConfig fields labkit runs with instead of the lab's own (`--set ppo_epochs=1`): a lever to measure."""
    extra: dict = field(default_factory=dict)
    """Free-form notes stored with the results."""

    @property
    def completions_per_step(self) -> int:
        return self.batch * self.generations


# -- model, prompts, reward ------------------------------------------------------------------------------------


def load_model(name: str, seed: int = 0):
    """(model, tokenizer) for "tiny" (the lab's model) or "random" (the same architecture, random weights)."""
    if name == "tiny":
        return models.load_policy("tiny", device="cpu", dtype="fp32")
    if name == "random":
        return _random_model(seed)
    raise ValueError(f"unknown --model {name!r}: use 'tiny' or 'random'")


_RANDOM_TOKENIZER = None


def _random_model(seed: int):
    """An untrained Llama shaped like the tiny model (labkit.pretrain.build_model) with a freshly trained BPE."""
    global _RANDOM_TOKENIZER
    if _RANDOM_TOKENIZER is None:
        texts = [f"{d.prompt.text} {d.reply}" for d in world_mod.load().dialogues(2000, seed=0)]
        _RANDOM_TOKENIZER = models.prepare_tokenizer(bpe.train_tokenizer(texts, vocab_size=2048))
    tok = _RANDOM_TOKENIZER
    torch.manual_seed(seed)
    model = pretrain.build_model(pretrain.PretrainConfig(), tok)
    model.generation_config.pad_token_id = tok.pad_token_id
    return model.eval(), tok


def load_prompts() -> tuple[list[str], list[str]]:
    """(train prompts, held-out prompts) from the world."""
    w = world_mod.load()
    return [p.text for p in w.prompts("train")], [p.text for p in w.prompts("heldout")]


def make_reward(kind: str = "toxicity") -> Callable[[list[str]], np.ndarray]:
    """texts -> scores (higher is better). "toxicity": labkit's "toxicity:logit" reward, the classifier's
    non-toxic decision value: unbounded, so it keeps a gradient signal where the probability saturates."""
    if kind != "toxicity":
        raise ValueError(f"unknown --reward {kind!r}: only 'toxicity' is implemented")
    scorer = rewards.make_reward("toxicity:logit")
    return lambda texts: np.asarray(
        torch.as_tensor(scorer([""] * len(texts), list(texts))).float().cpu(), dtype=np.float64
    ).reshape(-1)


class RewardRecorder:
    """The reward every method calls, wrapped to count completions and keep each call's mean score."""

    def __init__(self, score_texts: Callable[[list[str]], np.ndarray]):
        self.score_texts = score_texts
        self.calls: list[tuple[int, float]] = []  # (completions, mean score) per training batch
        self.times: list[float] = []  # seconds since start() at each call
        self.score_s = 0.0  # seconds inside the reward function since start()
        self.t0 = time.perf_counter()
        # TRL's signature, reward_func(prompts, completions, **kwargs) -> list[float], plain or conversational;
        # TRL logs each reward under its callable's __name__.
        self.trl = rewards.for_trl(self.labkit, name="toxicity")

    def start(self) -> None:
        """Mark the start of training: `times` and `score_s` count from here."""
        self.t0 = time.perf_counter()
        self.score_s = 0.0

    def score(self, texts: list[str]) -> np.ndarray:
        start = time.perf_counter()
        scores = np.asarray(self.score_texts([t.strip() for t in texts]), dtype=np.float64)
        self.score_s += time.perf_counter() - start
        self.calls.append((len(texts), float(scores.mean())))
        self.times.append(time.perf_counter() - self.t0)
        return scores

    def first_reaching(self, target: float, window: int) -> dict | None:
        """The first batch where the mean reward of the last `window` batches is >= target, or None.

        Returns the completions scored and the training seconds elapsed by then (generation included).
        """
        done = 0
        for i, (n, _) in enumerate(self.calls):
            done += n
            if i + 1 >= window:
                tail = self.calls[i + 1 - window : i + 1]
                if sum(k * m for k, m in tail) / sum(k for k, _ in tail) >= target:
                    return {"batch": i + 1, "completions": done, "seconds": self.times[i]}
        return None

    # labkit's signature: reward_fn(prompts, responses) -> tensor (B,)
    def labkit(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return torch.as_tensor(self.score(responses), dtype=torch.float32)

    @property
    def completions(self) -> int:
        return sum(n for n, _ in self.calls)

    def last_mean(self, n: int) -> float:
        tail = self.calls[-n:]
        return sum(k * m for k, m in tail) / max(1, sum(k for k, _ in tail))


@contextlib.contextmanager
def timed(obj, name: str, totals: dict, key: str):
    """Temporarily wrap obj.name so that its wall time accumulates in totals[key].

    For TRL's trainers only, which report no timings of their own; labkit's step reports
    `time/generate` and `time/rollout` in its metrics.
    """
    original, own = getattr(obj, name), name in vars(obj)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - start

    setattr(obj, name, wrapper)
    try:
        yield
    finally:
        if own:  # e.g. a module function: put the original back
            setattr(obj, name, original)
        else:  # an instance attribute shadowing the class's method: remove it
            delattr(obj, name)


# -- the three methods -----------------------------------------------------------------------------------------


def _ppo_config(cfg: BenchConfig, steps: int | None = None) -> ppo.PPOConfig:
    batch = cfg.completions_per_step
    shared = ppo.PPOConfig(
        learning_rate=cfg.learning_rate,
        batch_size=batch,
        mini_batch_size=16 if batch % 16 == 0 else batch,
        kl_coef=cfg.kl_coef,
        temperature=cfg.temperature,
        top_p=1.0,
        max_new_tokens=cfg.max_new_tokens,
        total_steps=cfg.steps if steps is None else steps,
        lora=True,
        lora_r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_target_modules=None,
        seed=cfg.seed,
        log_every=0,
        sample_table_every=0,
        checkpoint_every=0,
        output_dir=None,
    )
    return dataclasses.replace(shared, **cfg.labkit_set)


def run_labkit(cfg: BenchConfig, model, tokenizer, prompts: Sequence[str], recorder: RewardRecorder):
    """Train with labkit.ppo (PPOTrainer(...).train() is labkit.ppo.train); returns (policy, record).

    generate_s is the sum of the steps' own `time/generate` (step 1: batching the prompts, sampling,
    truncating after EOS).
    """
    start = time.perf_counter()
    trainer = ppo.PPOTrainer(model, tokenizer, prompts, recorder.labkit, _ppo_config(cfg))
    setup = time.perf_counter() - start
    start = time.perf_counter()
    recorder.start()
    result = trainer.train(resume=False)
    train_s = time.perf_counter() - start
    rows = result.metrics
    record = {
        "setup_s": setup,
        "train_s": train_s,
        "generate_s": sum(m["time/generate"] for m in rows),
        "score_s": recorder.score_s,
        "rollout_s": sum(m["time/rollout"] for m in rows),
        "update_s": sum(m["time/update"] for m in rows),
        "optimizer_steps": len(rows)
        * _ppo_config(cfg).ppo_epochs
        * (_ppo_config(cfg).batch_size // _ppo_config(cfg).mini_batch_size),
        "train_kl_own": fmean(m["objective/kl"] for m in rows[-cfg.last_n :]) if rows else math.nan,
        "train_kl_own_meaning": "objective/kl: per-sequence sum of k1, mean over the batch",
        "mean_len_train": fmean(m["ppo/mean_response_len"] for m in rows[-cfg.last_n :]) if rows else math.nan,
        "settings": {
            k: v
            for k, v in dataclasses.asdict(_ppo_config(cfg)).items()
            if k
            in (
                "batch_size",
                "mini_batch_size",
                "ppo_epochs",
                "learning_rate",
                "kl_coef",
                "kl_estimator",
                "vf_coef",
                "ent_coef",
                "value_head",
            )
        },
    }
    return result.policy, record


def lora_config(cfg: BenchConfig):
    """The LoRA labkit's add_lora builds: r, alpha, no dropout, every linear layer except the LM head."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM", target_modules="all-linear"
    )


def trl_args(method: str, cfg: BenchConfig, output_dir: str, steps: int | None = None):
    """GRPOConfig / RLOOConfig: the shared budget, plus the few settings a CPU run needs."""
    from trl import GRPOConfig, RLOOConfig

    per_step = cfg.completions_per_step
    kwargs = dict(
        output_dir=output_dir,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        max_steps=cfg.steps if steps is None else steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        # the shared budget: batch prompts x generations completions per step, one generation batch per step
        num_generations=cfg.generations,
        per_device_train_batch_size=per_step,
        generation_batch_size=per_step,
        gradient_accumulation_steps=1,
        max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=1.0,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=cfg.kl_coef,
        disable_dropout=True,
        log_completions=False,
        # CPU: TRL's configs default to bf16=True and gradient_checkpointing=True (GPU-minded defaults)
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
    )
    return (GRPOConfig if method == "grpo" else RLOOConfig)(**kwargs)


def _trl_trainer(method: str, cfg: BenchConfig, model, tokenizer, prompts, recorder, output_dir, steps=None):
    from datasets import Dataset
    from trl import GRPOTrainer, RLOOTrainer

    # Conversational prompts: TRL applies the tokenizer's chat template, as labkit's chat_prompts does.
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in prompts]})
    cls = GRPOTrainer if method == "grpo" else RLOOTrainer
    return cls(
        model=model,
        reward_funcs=[recorder.trl],
        args=trl_args(method, cfg, output_dir, steps),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
    )


def run_trl(method: str, cfg: BenchConfig, model, tokenizer, prompts: Sequence[str], recorder: RewardRecorder):
    """Train with TRL's GRPOTrainer ("grpo") or RLOOTrainer ("rloo"); returns (policy, record)."""
    totals: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix=f"peer_ppo_{method}_") as out:
        start = time.perf_counter()
        trainer = _trl_trainer(method, cfg, model, tokenizer, prompts, recorder, out)
        setup = time.perf_counter() - start
        start = time.perf_counter()
        recorder.start()
        with (
            timed(trainer, "_generate_and_score_completions", totals, "rollout_s"),
            timed(trainer, "_generate_single_turn", totals, "generate_s"),
        ):
            trainer.train()
        train_s = time.perf_counter() - start
    logs = [row for row in trainer.state.log_history if "loss" in row or "reward" in row]
    tail = logs[-cfg.last_n :]

    def tail_mean(key):
        values = [row[key] for row in tail if key in row]
        return fmean(values) if values else math.nan

    record = {
        "setup_s": setup,
        "train_s": train_s,
        "generate_s": totals.get("generate_s", 0.0),
        "score_s": recorder.score_s,
        "rollout_s": totals.get("rollout_s", 0.0),
        "update_s": train_s - totals.get("rollout_s", 0.0),
        "optimizer_steps": trainer.state.global_step,
        "train_kl_own": tail_mean("kl"),
        "train_kl_own_meaning": (
            "GRPO 'kl': per-token k3, mean over tokens"
            if method == "grpo"
            else "RLOO 'kl': per-token k1, mean over tokens"
        ),
        "mean_len_train": tail_mean("completions/mean_length"),
        "settings": {
            k: getattr(trainer.args, k)
            for k in (
                "per_device_train_batch_size",
                "generation_batch_size",
                "steps_per_generation",
                "num_generations",
                "num_iterations",
                "learning_rate",
                "lr_scheduler_type",
                "beta",
                "epsilon",
                "loss_type",
                "scale_rewards",
                "normalize_advantages",
                "max_completion_length",
                "temperature",
                "top_p",
                "top_k",
            )
            if hasattr(trainer.args, k)
        },
    }
    return trainer.model, record


# -- fresh evaluation: one sampler, one KL, for every policy ---------------------------------------------------


@torch.no_grad()
def evaluate_policy(
    policy, tokenizer, prompts: Sequence[str], score_texts, cfg: BenchConfig, chunk: int = 32
) -> dict[str, float]:
    """Sample cfg.eval_k completions per prompt with labkit's sampler and a fixed seed; score and measure KL.

    KL = mean over sequences of sum over response tokens (up to and including EOS) of
    log p_policy - log p_ref, where p_ref is the same network with its LoRA adapters disabled.
    """
    policy.eval()
    queries = [p for p in prompts for _ in range(cfg.eval_k)]
    rendered = models.chat_prompts(tokenizer, queries)
    generator = torch.Generator().manual_seed(cfg.seed + 10_000)
    scores, kls, lengths = [], [], []
    for s in range(0, len(rendered), chunk):
        enc = tokenizer(
            rendered[s : s + chunk], return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
        )
        raw = ppo.sample_responses(
            policy,
            enc["input_ids"],
            enc["attention_mask"],
            cfg.max_new_tokens,
            tokenizer.eos_token_id,
            tokenizer.pad_token_id,
            cfg.temperature,
            1.0,
            generator,
        )
        response, mask = ppo_math.truncate_after_eos(raw, tokenizer.eos_token_id, tokenizer.pad_token_id)
        input_ids = torch.cat([enc["input_ids"], response], dim=1)
        attention = torch.cat([enc["attention_mask"], mask.long()], dim=1)
        start = enc["input_ids"].shape[1]
        logp = models.sequence_logprobs(policy, input_ids, attention, start, cfg.temperature)
        with models.disabled_adapter(policy):
            ref_logp = models.sequence_logprobs(policy, input_ids, attention, start, cfg.temperature)
        kls.append(((logp - ref_logp) * mask).sum(1))
        lengths.append(mask.sum(1).float())
        texts = tokenizer.batch_decode(response, skip_special_tokens=True)
        scores.append(torch.as_tensor(np.asarray(score_texts([t.strip() for t in texts])), dtype=torch.float64))
    scores, kls, lengths = torch.cat(scores), torch.cat(kls), torch.cat(lengths)
    return {
        "eval_reward": scores.mean().item(),
        "eval_reward_se": (scores.std() / math.sqrt(len(scores))).item(),
        "eval_kl": kls.mean().item(),
        "eval_len": lengths.mean().item(),
        "eval_n": len(scores),
    }


# -- profiling -------------------------------------------------------------------------------------------------


def _profile_text(profiler: cProfile.Profile, top: int = 30) -> str:
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).strip_dirs().sort_stats("cumulative").print_stats(top)
    return buffer.getvalue()


def profile_step(method: str, cfg: BenchConfig, model_factory, prompts, score_texts) -> str:
    """cProfile of one warm step (the second of two) of `method`; returns pstats' top functions."""
    model, tok = model_factory()
    recorder = RewardRecorder(score_texts)
    profiler = cProfile.Profile()
    if method == "labkit":
        trainer = ppo.PPOTrainer(model, tok, prompts, recorder.labkit, _ppo_config(cfg, steps=2))
        trainer.step()
        profiler.enable()
        trainer.step()
        profiler.disable()
        return _profile_text(profiler)
    from transformers import TrainerCallback

    class ProfileSecondStep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:
                profiler.enable()

        def on_step_end(self, args, state, control, **kwargs):
            profiler.disable()

    with tempfile.TemporaryDirectory(prefix=f"peer_ppo_prof_{method}_") as out:
        trainer = _trl_trainer(method, cfg, model, tok, prompts, recorder, out, steps=2)
        trainer.add_callback(ProfileSecondStep())
        trainer.train()
    return _profile_text(profiler)


# -- the run ---------------------------------------------------------------------------------------------------


def run_benchmark(
    cfg: BenchConfig, model_factory=None, train_prompts=None, eval_prompts=None, score_texts=None, log=print
) -> dict:
    """Train every method in cfg.methods on a fresh model from `model_factory`, evaluate, return the results
    (`main` adds the provenance block: command, date, machine, threads, versions)."""
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}: choose from {', '.join(METHODS)}")
    if cfg.generations < 2:
        raise ValueError("--generations must be at least 2 (GRPO and RLOO need a group to compare within)")
    torch.set_num_threads(cfg.threads)
    model_factory = model_factory or (lambda: load_model(cfg.model, cfg.seed))
    if train_prompts is None or eval_prompts is None:
        train_prompts, eval_prompts = load_prompts()
    eval_prompts = list(eval_prompts)[: cfg.eval_prompts]
    score_texts = score_texts or make_reward(cfg.reward)

    if cfg.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {cfg.repeats}")
    rows = {}
    base_model, base_tok = model_factory()
    rows["base"] = {"method": "base", **evaluate_policy(base_model, base_tok, eval_prompts, score_texts, cfg)}
    del base_model
    profiles, runs = {}, {method: [] for method in cfg.methods}  # runs: (record, recorder) per round
    for round_ in range(cfg.repeats):
        turn = round_ % len(cfg.methods)  # each method goes first once in len(methods) rounds
        for method in cfg.methods[turn:] + cfg.methods[:turn]:
            log(f"[peer_ppo] {method}: {cfg.steps} steps x {cfg.completions_per_step} completions")
            model, tok = model_factory()
            recorder = RewardRecorder(score_texts)
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
            runner = run_labkit if method == "labkit" else (lambda *a, _m=method: run_trl(_m, *a))
            policy, record = runner(cfg, model, tok, train_prompts, recorder)
            if round_ == 0:  # the later rounds train the same policy again: they are timed, not evaluated
                record.update(evaluate_policy(policy, tok, eval_prompts, score_texts, cfg))
            record.update(
                method=method,
                completions=recorder.completions,
                samples_per_s=recorder.completions / record["train_s"],
                train_reward_first=recorder.calls[0][1] if recorder.calls else math.nan,
                train_reward_last=recorder.last_mean(cfg.last_n),
                train_reward_per_step=[m for _, m in recorder.calls],
                loadavg_1min_at_start=load,
            )
            runs[method].append((record, recorder))
            log(
                f"[peer_ppo] {method}: {record['samples_per_s']:.1f} samples/s, "
                f"train reward {record['train_reward_last']:.3f}"
            )
            del policy, model
            if cfg.profile and round_ == 0:
                log(f"[peer_ppo] profiling one warm {method} step")
                profiles[method] = profile_step(method, cfg, model_factory, train_prompts, score_texts)
    for method, method_runs in runs.items():
        rows[method] = _median_of_rounds(method_runs)
    # At equal reward: the best final training reward any TRL method reached is the bar; how many completions
    # and seconds did each method need before its rolling mean (last_n batches) first reached it?
    peers = [m for m in runs if m != "labkit"]
    if peers:
        bar = max(rows[m]["train_reward_last"] for m in peers)
        for method, method_runs in runs.items():
            reached = [recorder.first_reaching(bar, cfg.last_n) for _, recorder in method_runs]
            rows[method]["to_peer_reward"] = {"target": bar, "window": cfg.last_n, **(reached[0] or {"reached": False})}
            if reached[0] and all(reached):
                rows[method]["to_peer_reward"]["seconds"] = statistics.median(r["seconds"] for r in reached)
            if len(reached) > 1:
                rows[method]["to_peer_reward"]["seconds_per_round"] = [r and r["seconds"] for r in reached]
    return {"config": {k: v for k, v in dataclasses.asdict(cfg).items()}, "rows": rows, "profiles": profiles}


TIMINGS = ("setup_s", "train_s", "generate_s", "score_s", "rollout_s", "update_s")


def _median_of_rounds(method_runs: list[tuple[dict, RewardRecorder]]) -> dict:
    """Round 0's record (its rewards and evaluation) with each timing the median over the rounds.

    The rounds train with the same seeds, so they sample the same completions and reach the same rewards:
    `same_training` says whether every round's per-step training rewards matched round 0's.
    """
    first = dict(method_runs[0][0])
    if len(method_runs) == 1:
        return first
    records = [record for record, _ in method_runs]
    for key in TIMINGS:
        first[key] = statistics.median(record[key] for record in records)
    first["samples_per_s"] = first["completions"] / first["train_s"]
    first["rounds"] = [{key: record[key] for key in (*TIMINGS, "samples_per_s")} for record in records]
    first["same_training"] = all(
        np.allclose(record["train_reward_per_step"], first["train_reward_per_step"], rtol=0, atol=1e-6)
        for record in records
    )
    return first


def markdown_table(results: dict) -> str:
    """The side-by-side table: one row per method, the untrained base model first."""
    head = (
        "| method | completions | samples/s | wall s (train) | generate s | score s | forward s | update s "
        "| optimizer steps | train reward (first -> last) | eval reward +- se | eval KL (nats/seq) | eval len |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in results["rows"].items():
        if name == "base":
            lines.append(
                f"| base (untrained) | - | - | - | - | - | - | - | - | - | {r['eval_reward']:.3f} +- "
                f"{r['eval_reward_se']:.3f} | {r['eval_kl']:.3f} | {r['eval_len']:.1f} |"
            )
            continue
        # forward: the rest of the rollout (log-probs, values, the reference; TRL: its reference and bookkeeping)
        forward = r["rollout_s"] - r["generate_s"] - r["score_s"]
        lines.append(
            f"| {name} | {r['completions']} | {r['samples_per_s']:.1f} | {r['train_s']:.1f} | {r['generate_s']:.1f} | "
            f"{r['score_s']:.1f} | {forward:.1f} | {r['update_s']:.1f} | {r['optimizer_steps']} | "
            f"{r['train_reward_first']:.3f} -> "
            f"{r['train_reward_last']:.3f} | {r['eval_reward']:.3f} +- {r['eval_reward_se']:.3f} | "
            f"{r['eval_kl']:.3f} | "
            f"{r['eval_len']:.1f} |"
        )
    rows = results["rows"]
    reach = {name: r["to_peer_reward"] for name, r in rows.items() if "to_peer_reward" in r}
    if reach:
        target = next(iter(reach.values()))["target"]
        lines.append(
            f"\nTo reach the best final TRL training reward ({target:.3f}, rolling mean of "
            f"{next(iter(reach.values()))['window']} batches):"
        )
        for name, r in reach.items():
            lines.append(
                f"- {name}: "
                + (f"{r['completions']} completions, {r['seconds']:.1f} s" if "seconds" in r else "not reached")
            )
    rounds = len(rows.get("labkit", {}).get("rounds", []))
    if rounds:
        lines.append(
            f"\nTimings are the median of {rounds} rounds, each method first in turn. Each ratio below is the "
            "median of the rounds' ratios (in brackets): a round runs the methods back to back, so its ratio "
            "is the least touched by the machine's speed drifting."
        )
    if "labkit" in rows:
        for peer in ("grpo", "rloo"):
            if peer in rows:
                ours, theirs = rows["labkit"], rows[peer]
                speed = [ours["samples_per_s"] / theirs["samples_per_s"]]
                if rounds and len(theirs.get("rounds", [])) == rounds:
                    speed = [a["samples_per_s"] / b["samples_per_s"] for a, b in zip(ours["rounds"], theirs["rounds"])]
                lines.append(f"\nlabkit / {peer} samples/s: {_ratio_text(speed)}")
                a, b = reach.get("labkit", {}), reach.get(peer, {})
                if "seconds" in a and "seconds" in b:
                    sooner = [b["seconds"] / a["seconds"]]
                    if all(a.get("seconds_per_round", [None])) and all(b.get("seconds_per_round", [None])):
                        sooner = [y / x for x, y in zip(a["seconds_per_round"], b["seconds_per_round"])]
                    lines.append(f"{peer} / labkit seconds to that reward: {_ratio_text(sooner)}")
    return "\n".join(lines)


def _ratio_text(ratios: list[float]) -> str:
    """A ratio as the table shows it: 1.23x for one; for several rounds, their median and each round's,
    1.23x (1.21, 1.23, 1.28)."""
    if len(ratios) == 1:
        return f"{ratios[0]:.2f}x"
    return f"{statistics.median(ratios):.2f}x (" + ", ".join(f"{r:.2f}" for r in ratios) + ")"


def parse_args(argv: Sequence[str] | None = None) -> BenchConfig:
    d = BenchConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=d.model, choices=["tiny", "random"])
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch, help="prompts per step (labkit: batch x generations prompts)")
    p.add_argument("--generations", type=int, default=d.generations)
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--lr", type=float, default=d.learning_rate)
    p.add_argument("--kl-coef", type=float, default=d.kl_coef)
    p.add_argument("--eval-prompts", type=int, default=d.eval_prompts)
    p.add_argument("--eval-k", type=int, default=d.eval_k)
    p.add_argument("--methods", default=",".join(d.methods))
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--profile", action="store_true", help="cProfile one warm step of each method")
    p.add_argument("--repeats", type=int, default=d.repeats, help="rounds of training per method; median timings")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="labkit's PPOConfig fields (JSON values) instead of the lab's own, e.g. ppo_epochs=1",
    )
    p.add_argument("--output", default=str(RESULTS_PATH))
    a = p.parse_args(argv)
    cfg = BenchConfig(
        model=a.model,
        steps=a.steps,
        batch=a.batch,
        generations=a.generations,
        max_new_tokens=a.max_new_tokens,
        temperature=a.temperature,
        learning_rate=a.lr,
        kl_coef=a.kl_coef,
        eval_prompts=a.eval_prompts,
        eval_k=a.eval_k,
        methods=tuple(m.strip() for m in a.methods.split(",") if m.strip()),
        seed=a.seed,
        threads=a.threads,
        profile=a.profile,
        repeats=a.repeats,
        labkit_set=config.parse_settings(a.set),
    )
    cfg.extra["output"] = a.output
    return cfg


def main(argv: Sequence[str] | None = None) -> dict:
    cfg = parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' gradient_checkpointing rename
    results = run_benchmark(cfg)
    results = {**artifacts.provenance("benchmarks/peer_ppo.py", argv), **results}  # after run_benchmark set the threads
    table = markdown_table(results)
    print(table)
    out = Path(cfg.extra["output"])
    profiles = results.pop("profiles")
    if profiles:
        prof_path = out.with_name(out.stem + "_profile.txt")
        artifacts.atomic_write(prof_path, "".join(f"===== {m} =====\n{text}\n" for m, text in profiles.items()))
        results["profile_file"] = str(prof_path.relative_to(ROOT) if prof_path.is_relative_to(ROOT) else prof_path)
    results["table"] = table
    artifacts.write_json(out, results)
    print(f"\nwrote {out}")
    return results


if __name__ == "__main__":
    main()
