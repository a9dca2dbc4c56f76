"""PPO: fine-tune a policy against any reward callable, with a per-token KL penalty.

Inputs: a causal LM and its tokenizer, raw user prompts, and `reward_fn(prompts, responses) ->
tensor (B,)` that reads *text* (so the reward model may use any tokenizer, or be plain Python).
Output: `PPOResult` (the trained policy, its value head, one metrics dict per step), plus
`output_dir/metrics.jsonl` and a resumable `output_dir/checkpoint/`.

Checkpoints hold no pickle: tensors go to safetensors files and everything else to JSON, so a
run folder a classmate sends can be resumed without running any code it carries (`torch.load`
of a pickle runs whatever the file says before a single check).

The step reads top to bottom in the chapter's order: 1. rollout, 2. score, 3. log-probs and
values, 4. KL-penalised rewards, 5. GAE advantages, 6. PPO epochs, 7. log. It follows Ziegler et
al. 2019 ("Fine-Tuning Language Models from Human Preferences"), the old TRL `PPOTrainer`
(removed in TRL 1.13) and cleanrl's `ppo.py`; the tensor maths lives in `labkit.ppo_math`.

With LoRA (the default) the reference model is the policy with its adapters switched off, so the
frozen copy costs nothing; full fine-tuning keeps a frozen deep copy instead.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

import numpy as np
import torch
from torch import nn

from labkit import fast_decode
from labkit.artifacts import atomic_folder, atomic_write
from labkit.config import seed_everything
from labkit.models import add_lora, disabled_adapter, merged_adapter, position_ids, render_prompts
from labkit.parallel import Processes, full_tensor, set_full
from labkit.ppo_math import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    explained_variance,
    gae,
    kl_penalty,
    logprobs_and_entropy,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_logprobs,
    top_p_filter,
    truncate_after_eos,
    value_loss,
)

__all__ = [
    "AdaptiveKLController",
    "DECODERS",
    "FixedKLController",
    "METRIC_DOCS",
    "PPOConfig",
    "PPOResult",
    "PPOTrainer",
    "ValueHead",
    "checkpoint_reward",
    "ppo_stage",
    "preset_config",
    "read_checkpoint_step",
    "sample_responses",
    "set_aside",
    "set_aside_if_stale",
    "train",
    "trained_against_other",
]

DECODERS = ("auto", "transformers")
"""How the rollout decodes (`PPOConfig.decoder`): "auto" uses `fast_decode.LlamaDecoder` where it applies."""

PIECE_OVERHEAD_TOKENS = 128
"""What one extra forward (and backward) pass costs, in tokens' worth of arithmetic: about 128 for the tiny
model on a 2-core CPU (15-20 ms a pass, 0.12 ms a token), fewer on bigger models. `_length_pieces` splits
a minibatch only where the padding it saves costs more than this."""


@dataclass
class PPOConfig:
    """Every knob of labkit's PPO loop; the defaults run the tiny preset on a CPU in minutes."""

    learning_rate: float = 1e-3
    """AdamW step size for the trainable weights (LoRA adapters + value head); use ~1e-5 for full fine-tuning."""
    batch_size: int = 32
    """Prompts per rollout (one response each): the samples behind one PPO step."""
    mini_batch_size: int = 16
    """Responses per gradient step; batch_size / mini_batch_size updates per PPO epoch."""
    ppo_epochs: int = 2
    """Passes over each rollout batch before sampling fresh responses."""
    gamma: float = 1.0
    """Discount factor; 1.0 because the episode is one short response and only its end is scored."""
    lam: float = 1.0
    """GAE lambda: 1 is Monte-Carlo returns (low bias, high variance), 0 is one-step TD. 1.0 because the
    only score comes at the last token: with 0.95 (old TRL's default) a 40-token reply passes 0.95^40 = 13%
    of it back to its first tokens, where the style is chosen, against 36% for a 20-token one, so short
    vague replies win (compare on the tiny preset: benchmarks/ppo_targets.py --set lam=0.95)."""
    clip_range: float = 0.2
    """PPO's epsilon: the probability ratio is clipped to [1 - eps, 1 + eps]."""
    clip_range_value: float = 0.2
    """How far a value prediction may move from its rollout value before its loss is clipped."""
    vf_coef: float = 0.1
    """Weight of the value loss in the total loss (small: the shared trunk also serves the policy)."""
    ent_coef: float = 0.001
    """Weight of the entropy bonus (subtracted from the loss); keeps sampling diverse."""
    max_grad_norm: float = 1.0
    """Gradients are rescaled to at most this global L2 norm before each optimizer step."""
    kl_coef: float = 0.1
    """beta: per-token penalty beta * KL(policy || reference) subtracted from the reward (initial value if adaptive)."""
    kl_estimator: str = "k1"
    """Per-token KL estimator used in the penalty: "k1" (log ratio), "k3", "abs" or "mse" (see ppo_math.kl_penalty)."""
    adaptive_kl: bool = False
    """Adapt beta towards `target_kl` (Ziegler et al. 2019) instead of keeping it fixed."""
    target_kl: float = 6.0
    """Target per-sequence KL (nats) for the adaptive controller (Ziegler et al. used 6)."""
    kl_horizon: int = 10000
    """Adaptive controller horizon in samples: larger means beta changes more slowly."""
    temperature: float = 1.0
    """Sampling temperature; log-probs of policy and reference use the same logits / temperature."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1.0 = sample from the full distribution, which PPO's maths assumes)."""
    max_new_tokens: int = 48
    """Longest response in tokens; responses stop earlier at EOS."""
    prompting: str = "chat"
    """How prompts are put to the policy (`models.render_prompts`): "chat" or "plain" (continue the text)."""
    total_steps: int = 40
    """PPO steps (rollout + update) in the whole run, counting steps done before a resume."""
    whiten_rewards: bool = False
    """Rescale per-token rewards to unit variance before GAE (keeps their mean)."""
    lora: bool = True
    """Train LoRA adapters (reference = adapters off, no copy); False fine-tunes every weight against a frozen copy."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling numerator: the adapter update is scaled by lora_alpha / lora_r."""
    lora_target_modules: list[str] | None = None
    """Modules that get adapters; None means every linear layer except the LM head."""
    value_head: str = "shared"
    """"shared": a Linear on the policy's last hidden state (no extra model, but value gradients also move
    the policy's adapters; hence the small vf_coef). "separate": a copy of the initial model as critic
    (value and policy cannot interfere, at twice the memory and forward cost)."""
    seed: int = 0
    """Seed for adapter init, prompt order, sampling and minibatch shuffling: a CPU run repeats exactly."""
    sampling: str = "batch"
    """Random streams of the rollout. "batch": one stream for the batch (one per process when launched on
    several). "per_prompt": one per reply, seeded by (seed, step, row), so a run samples the same replies on
    any number of processes, and its checkpoint resumes on any number (`labkit.parallel`)."""
    mixed_precision: str = "no"
    """"no" (float32 maths, as the weights) or "bf16": forward passes under bfloat16 autocast, weights and
    optimizer state stay float32. Must equal `accelerate launch --mixed_precision`."""
    decoder: str = "auto"
    """How the rollout decodes: "auto" runs a Llama-family model (the tiny model, SmolLM2) through
    `labkit.fast_decode` (a static KV cache and fewer calls per token, the same numbers) and any other
    through its own forward; "transformers" always uses the model's own forward (to compare the two)."""
    parallelism: str = "ddp"
    """Launched on several processes: "ddp" holds the whole model in each and averages gradients; "fsdp" splits
    weights, gradients and optimizer state across them, for full fine-tuning (lora=False) of a model one device
    cannot hold (`labkit.parallel`). One process ignores it."""
    gradient_accumulation_steps: int = 1
    """Each process's share of a minibatch goes through forward and backward in this many pieces before the
    one optimizer step: the same update in less activation memory."""
    log_every: int = 1
    """Print a one-line summary every this many steps (0 = silent)."""
    sample_table_every: int = 10
    """Print a query | response | score | kl table every this many steps (0 = never)."""
    checkpoint_every: int = 10
    """Save a resumable checkpoint every this many steps and at the end (0 = only at the end)."""
    output_dir: str | None = None
    """Folder for metrics.jsonl and checkpoint/; None keeps everything in memory (no resume)."""

    def __post_init__(self):
        checks = [
            (self.batch_size >= 2, "batch_size must be at least 2 (advantages are whitened over the batch)"),
            (
                self.mini_batch_size >= 1 and self.batch_size % self.mini_batch_size == 0,
                f"mini_batch_size ({self.mini_batch_size}) must divide batch_size ({self.batch_size})",
            ),
            (self.ppo_epochs >= 1, "ppo_epochs must be at least 1"),
            (self.temperature > 0, "temperature must be > 0 (PPO needs a sampling distribution)"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.max_new_tokens >= 1, "max_new_tokens must be at least 1"),
            (self.kl_estimator in KL_ESTIMATORS, f"kl_estimator must be one of {KL_ESTIMATORS}"),
            (self.value_head in ("shared", "separate"), "value_head must be 'shared' or 'separate'"),
            (self.total_steps >= 0, "total_steps must be >= 0"),
            (self.prompting in ("chat", "plain"), "prompting must be 'chat' or 'plain'"),
            (self.sampling in ("batch", "per_prompt"), "sampling must be 'batch' or 'per_prompt'"),
            (self.mixed_precision in ("no", "bf16"), "mixed_precision must be 'no' or 'bf16'"),
            (self.parallelism in ("ddp", "fsdp"), "parallelism must be 'ddp' or 'fsdp'"),
            (self.decoder in DECODERS, f"decoder must be one of {DECODERS}"),
            (
                self.parallelism != "fsdp" or not self.lora,
                "parallelism='fsdp' shards a fully fine-tuned model: set lora=False (LoRA's adapters are small "
                "enough for 'ddp')",
            ),
            (
                self.gradient_accumulation_steps >= 1 and self.mini_batch_size % self.gradient_accumulation_steps == 0,
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps}) must divide mini_batch_size "
                f"({self.mini_batch_size})",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"PPOConfig: {message}")


def preset_config(preset, **overrides: Any) -> PPOConfig:
    """The preset's PPOConfig, as the main job, the chapters and the benchmarks use it: the class
    defaults, then the preset's "ppo" overrides, its seed and reply length, quiet logging, then
    `overrides`."""
    values = {
        "seed": preset.seed,
        "max_new_tokens": preset.max_new_tokens,
        "prompting": preset.prompting,
        "log_every": 0,
        "sample_table_every": 0,
        **overrides,
    }
    return preset.stage_config("ppo", PPOConfig, **values)


METRIC_DOCS: dict[str, str] = {
    "objective/kl": "mean over responses of the summed per-token k1 = log p(y) - log p_ref(y): how far the "
    "policy has moved from the reference",
    "objective/kl_k3": "the same KL from the k3 estimator (r - 1) - log r, never negative per token; agrees "
    "with k1 on average",
    "objective/scores": "mean reward-function score of the responses (what we want up)",
    "objective/non_score_reward": "mean summed KL penalty -beta * KL per response (the price paid for moving)",
    "objective/rlhf_reward": "scores + non_score_reward: the quantity PPO actually maximises",
    "objective/entropy": "mean over responses of -sum log p(y): the surprise of the sampled responses, in nats",
    "policy/entropy": "mean per-token entropy of the policy's next-token distribution during the update",
    "policy/clipfrac": "fraction of tokens whose probability ratio hit the clip range (high = updates too big)",
    "policy/approxkl": "0.5 * mean (log ratio)^2 between the rollout policy and the updated policy",
    "loss/policy": "clipped surrogate loss, averaged over minibatches",
    "loss/value": "clipped value loss 0.5 * (V - return)^2, averaged over minibatches",
    "val/mean": "mean value prediction over response tokens at rollout time",
    "val/clipfrac": "fraction of tokens whose value loss was clipped",
    "val/explained_var": "1 - Var(return - V) / Var(return): how much of the return the critic predicts (1 is perfect)",
    "ppo/kl_coef": "beta used in this step's penalty (changes only with adaptive_kl)",
    "ppo/mean_response_len": "mean response length in tokens, EOS included",
    "time/step": "seconds for the whole step",
    "time/rollout": "seconds for steps 1-5: sampling, scoring, reference log-probs, advantages",
    "time/generate": "seconds of step 1: sampling the responses token by token",
    "time/score": "seconds of step 2: decoding the responses and running the reward function",
    "time/update": "seconds for step 6: the PPO epochs",
    "samples_per_second": "responses processed per second (batch_size / time/step)",
    "step": "PPO steps done so far (1-based)",
}


class ValueHead(nn.Module):
    """V(s_t): one Linear from a hidden state to a scalar, zero-initialised so the first values are 0.

    Zero init also means the value loss sends no gradient into a shared trunk until the head has
    learnt something, so the first updates do not disturb the policy.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)  # (B, T)


@dataclass
class PPOResult:
    """What a PPO run returns."""

    policy: nn.Module
    """The trained policy (a peft model when cfg.lora)."""
    value_head: ValueHead
    """The trained value head."""
    metrics: list[dict[str, float]]
    """One metrics dict per step, keys explained in METRIC_DOCS."""
    samples: list[tuple[str, str, float, float]] = field(default_factory=list)
    """The last step's (prompt, response, score, kl) tuples."""
    output_dir: Path | None = None
    """Where metrics.jsonl and checkpoint/ were written, if anywhere."""


class _ModelDecoder:
    """Decodes with the model's own forward and its KV cache (any causal LM); the interface of
    `fast_decode.LlamaDecoder`: `start` reads the prompts, each `next` one token per row."""

    def __init__(self, model, with_states: bool):
        self.model, self.with_states = model, with_states

    def _last(self, out):
        return out.logits[:, -1, :], out.hidden_states[-1][:, -1] if self.with_states else None

    def start(self, ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int):
        self.mask = attention_mask.long()
        positions = position_ids(self.mask)
        self.out = self.model(
            input_ids=ids,
            attention_mask=self.mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            output_hidden_states=self.with_states,
        )
        self.position = positions[:, -1:]
        return self._last(self.out)

    def next(self, tokens: torch.Tensor):
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        self.position = self.position + 1
        self.out = self.model(
            input_ids=tokens[:, None],
            attention_mask=self.mask,
            position_ids=self.position,
            past_key_values=self.out.past_key_values,
            use_cache=True,
            output_hidden_states=self.with_states,
        )
        return self._last(self.out)


@torch.no_grad()
def sample_responses(
    model,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    max_new_tokens: int,
    eos_id: int | None,
    pad_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
    all_done: Callable[[bool], bool] | None = None,
    with_states: bool = False,
    decoder: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample (B, <= max_new_tokens) response ids with a KV cache; finished rows are padded.

    A plain loop instead of `model.generate`: readable, and it draws from its own `generator`, so a
    resumed run continues the exact random stream. A list of B generators gives each row its own
    stream (one uniform draw per row and token, see `_draw`), so a row's reply does not depend on which
    other rows share its batch. `all_done(flag)` decides when to stop
    from this batch's flag (a sharded model's processes must all make the same forward passes).

    `with_states=True` returns (ids, log-probs, hidden): each sampled token's log-prob under
    softmax(logits / temperature) before any top-p cut (B, T), and the last hidden state whose logits
    chose it (B, T, H). They are what PPO's rollout would otherwise recompute in a second forward pass
    over the whole batch (the old log-probs, and the value head's input).

    `decoder="auto"` decodes a Llama-family model with `fast_decode.LlamaDecoder` (a static KV cache,
    fewer calls per token; the same numbers) and anything else, or a sharded model, with its own
    forward; "transformers" always uses the model's own forward.
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    lean = fast_decode.decoder_for(model) if decoder == "auto" and all_done is None else None
    stepper = lean or _ModelDecoder(model, with_states)
    logits, state = stepper.start(query_ids, query_mask, max_new_tokens)
    batch = query_ids.shape[0]
    held = torch.arange(batch, device=query_ids.device)  # the rows the decoder computes: LlamaDecoder drops ended ones
    finished = torch.zeros(batch, dtype=torch.bool, device=query_ids.device)
    tokens, logprobs, hidden = [], [], []
    for _ in range(max_new_tokens):
        logits = logits.float() / temperature  # (rows held, V)
        drawn = _draw(top_p_filter(logits, top_p) if top_p < 1.0 else logits, generator, held, batch)
        next_token = held.new_full((batch,), pad_id).index_copy_(0, held, drawn)
        next_token = torch.where(finished, torch.full_like(next_token, pad_id), next_token)
        tokens.append(next_token)
        if with_states:  # an ended row's entries are zeros: the caller masks them
            logprobs.append(logits.new_zeros(batch).index_copy_(0, held, token_logprobs(logits, next_token[held])))
            hidden.append(state.new_zeros(batch, state.shape[-1]).index_copy_(0, held, state))
        if eos_id is not None:
            finished |= next_token == eos_id
        done = bool(finished.all())
        if all_done(done) if all_done is not None else done:
            break
        going = (~finished[held]).nonzero().squeeze(1)
        if lean is not None and len(going) <= 0.75 * len(held):  # copying the cache costs: only now and then
            lean.keep(going)
            held = held[going]
        logits, state = stepper.next(next_token[held])
    if with_states:
        return torch.stack(tokens, dim=1), torch.stack(logprobs, dim=1), torch.stack(hidden, dim=1)
    return torch.stack(tokens, dim=1)


def _draw(
    logits: torch.Tensor,
    generator: torch.Generator | list[torch.Generator] | None,
    rows: torch.Tensor | None = None,
    batch: int | None = None,
) -> torch.Tensor:
    """One token per row from softmax(logits): from one stream, or from each row's own stream.

    Inverse transform sampling: the first token whose cumulative probability exceeds one uniform draw
    per row. It samples softmax(logits) exactly (in float64) and draws B numbers, not B x V: on this
    CPU about 20x faster per token than torch.multinomial at batch 32, at the tiny vocabulary and at SmolLM2's.

    `logits` may hold only some `rows` of a `batch` (the replies still going): one stream still draws
    `batch` numbers and uses those rows' (so the stream, and every later token, is what it would be with
    every row present), and a list of streams draws from those rows' own.
    """
    cumulative = torch.softmax(logits, dim=-1, dtype=torch.float64).cumsum_(dim=-1)  # (B, V)
    if isinstance(generator, list):
        streams = generator if rows is None else [generator[r] for r in rows.tolist()]
        uniform = torch.cat([torch.rand(1, generator=g, device=logits.device, dtype=torch.float64) for g in streams])
    else:
        n = logits.shape[0] if batch is None else batch
        uniform = torch.rand(n, generator=generator, device=logits.device, dtype=torch.float64)
        uniform = uniform if rows is None else uniform[rows]
    target = uniform[:, None] * cumulative[:, -1:]
    # right=True: the first index whose cumulative sum is above the draw, so a token of probability 0 is never chosen
    return torch.searchsorted(cumulative, target, right=True).squeeze(-1).clamp_(max=logits.shape[-1] - 1)


def _length_pieces(
    rows: torch.Tensor, query_mask: torch.Tensor, response_mask: torch.Tensor
) -> list[tuple[torch.Tensor, int, int]]:
    """`rows` of the batch in pieces of similar length, each as (rows, first column, response length).

    The batch is padded to its longest prompt (on the left) and its longest reply (on the right), and a
    third of what a forward pass reads can be padding. A piece reads only the columns its own rows use,
    and rows of similar length go together; a piece costs PIECE_OVERHEAD_TOKENS more, so the split is the
    one with the least padding plus overhead (a search over the rows sorted by length). The rows'
    log-probs and values are those of the whole, up to float rounding: padding never reaches them.
    """
    n = rows.numel()
    if n == 0:
        return [(rows, 0, response_mask.shape[1])]
    prompt_len = query_mask[rows].sum(1).tolist()
    reply_len = response_mask[rows].sum(1).tolist()
    order = sorted(range(n), key=lambda i: (reply_len[i], prompt_len[i]))
    # best[j]: least cost of the first j sorted rows; cut[j]: where its last piece starts.
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        longest_prompt = 0
        for i in range(j - 1, -1, -1):  # the last piece is sorted rows i..j-1; the longest reply is j-1's
            longest_prompt = max(longest_prompt, prompt_len[order[i]])
            cost = best[i] + PIECE_OVERHEAD_TOKENS + (j - i) * (longest_prompt + reply_len[order[j - 1]])
            if cost < best[j]:
                best[j], cut[j] = cost, i
    pieces, j = [], n
    while j > 0:
        i = cut[j]
        members = [order[k] for k in range(i, j)]
        width = max(prompt_len[k] for k in members)
        pieces.append((rows[members], query_mask.shape[1] - width, reply_len[order[j - 1]]))
        j = i
    return pieces[::-1]


def _derived_seed(*keys: int) -> int:
    """A seed that is a function of `keys` alone: (seed, process) for a process's stream, (seed, step, row) for
    one reply's stream under sampling="per_prompt"."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def _check_processes(cfg: PPOConfig, procs: Processes) -> None:
    """Clear errors for a config that cannot be split over the processes it was launched on."""
    n, pieces = procs.size, cfg.gradient_accumulation_steps
    if cfg.batch_size % n:
        raise ValueError(
            f"PPOConfig: batch_size ({cfg.batch_size}) must be a multiple of the number of processes ({n}): "
            "each process samples an equal share of the batch"
        )
    if cfg.mini_batch_size % (n * pieces):
        raise ValueError(
            f"PPOConfig: mini_batch_size ({cfg.mini_batch_size}) must be a multiple of processes x "
            f"gradient_accumulation_steps ({n} x {pieces}): each process takes an equal share of a minibatch"
        )
    launched_with = getattr(procs.accelerator, "mixed_precision", "no")
    if launched_with not in ("no", cfg.mixed_precision):
        raise ValueError(
            f"accelerate was launched with mixed_precision={launched_with!r} but PPOConfig.mixed_precision is "
            f"{cfg.mixed_precision!r}: set the config's to match (labkit supports 'no' and 'bf16')"
        )


def _hidden_size(model) -> int:
    return getattr(model.config, "hidden_size", None) or model.get_input_embeddings().embedding_dim


class _PolicyAndValue(nn.Module):
    """The policy, its value head (and a separate critic): every trainable weight in one module, so that
    DistributedDataParallel averages all their gradients. `forward` is the update's forward pass."""

    def __init__(self, policy, value_head: ValueHead, value_model, temperature: float):
        super().__init__()
        self.policy, self.value_head, self.value_model = policy, value_head, value_model
        self.temperature = temperature

    def forward(self, input_ids, attention_mask, response_mask):
        """Temperature-scaled logits (N, V) choosing the N response tokens (`_model_inputs`), and values (B, T)."""
        kwargs = _model_inputs(input_ids, attention_mask, response_mask)
        out = self.policy(**kwargs, output_hidden_states=True)
        logits = _at_temperature(out.logits, self.temperature)
        # V(s_t) reads the same position whose logits choose token t: the state before the action.
        if self.value_model is None:
            hidden = out.hidden_states[-1]
        else:
            hidden = self.value_model(**{**kwargs, "logits_to_keep": 1}, output_hidden_states=True).hidden_states[-1]
        response_len = response_mask.shape[1]
        return logits, self.value_head(hidden[:, -response_len - 1 : -1]).float()


def _model_inputs(input_ids, attention_mask, response_mask) -> dict[str, torch.Tensor]:
    """Keyword arguments for a causal LM's forward pass over prompt + response (the response is the last T
    columns) that computes logits only where they choose a real response token: response_mask's True
    entries, row by row, as one (N, V) tensor. The vocabulary-wide work then skips the padding."""
    keep = torch.zeros_like(attention_mask, dtype=torch.bool)
    length, response_len = attention_mask.shape[1], response_mask.shape[1]
    keep[:, length - response_len - 1 : length - 1] = response_mask
    return dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids(attention_mask),
        logits_to_keep=keep,
    )


def _at_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits in float32 divided by the sampling temperature, as the sampler used them."""
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


def _per_token(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The N values of mask's True entries (row by row) laid out as mask's (B, T), 0 elsewhere."""
    return values.new_zeros(mask.shape).masked_scatter(mask, values)


class PPOTrainer:
    """Owns the models, optimizer and KL controller; `step()` is one numbered PPO iteration.

    `accelerator` (an `accelerate.Accelerator`) spreads the run over processes; without one, a run
    started by `accelerate launch` on several processes makes its own, and any other runs alone.
    """

    def __init__(
        self,
        policy,
        tokenizer,
        prompts: Sequence[str],
        reward_fn: Callable,
        cfg: PPOConfig | None = None,
        callbacks: Sequence[Any] = (),
        accelerator: Any = None,
    ):
        self.cfg = cfg = cfg or PPOConfig()
        if len(prompts) == 0:
            raise ValueError("prompts is empty: PPO needs at least one user prompt to sample responses for")
        if not callable(reward_fn):
            raise ValueError(
                f"reward_fn must be callable as reward_fn(prompts, responses) -> tensor (B,), "
                f"got {type(reward_fn).__name__}"
            )
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token: set tokenizer.pad_token (models.prepare_tokenizer does)")
        self.tokenizer, self.reward_fn, self.callbacks = tokenizer, reward_fn, list(callbacks)
        self.prompts = list(prompts)
        self.rendered = render_prompts(tokenizer, self.prompts, cfg.prompting)
        self.procs = procs = Processes.for_run(accelerator)
        _check_processes(cfg, procs)
        if procs.device is not None:
            policy = policy.to(procs.device)
        self.device = next(policy.parameters()).device
        seed_everything(cfg.seed)  # adapter init is random: seed it so a rebuilt run starts identical

        # Models. Dropout off everywhere: it would make log-probs differ between rollout and update.
        is_peft = hasattr(policy, "peft_config")
        self.ref_model = None
        if cfg.lora and not is_peft:
            policy = add_lora(
                policy, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=0.0, target_modules=cfg.lora_target_modules
            )
        elif not cfg.lora:
            if is_peft:
                raise ValueError("cfg.lora is False but the policy already has LoRA adapters: pass the base model")
            self.ref_model = copy.deepcopy(policy).eval().requires_grad_(False)
        self.policy = policy.eval()
        self.value_model = None
        if cfg.value_head == "separate":
            self.value_model = copy.deepcopy(policy).eval()
        self.value_head = ValueHead(_hidden_size(policy)).to(self.device)
        self.trainable = _PolicyAndValue(self.policy, self.value_head, self.value_model, cfg.temperature)
        if cfg.parallelism == "fsdp":  # split every model across the processes (before the optimizer sees them)
            for model in (self.ref_model, self.value_model, self.policy, self.value_head):
                if model is not None:
                    procs.shard(model)
            self.trainable_ddp = self.trainable
        else:  # a separate critic computes logits it never uses: DDP must not wait for their gradients
            self.trainable_ddp = procs.wrap(self.trainable, find_unused_parameters=cfg.value_head == "separate")
        trainable = [p for p in self.trainable.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, eps=1e-5)  # eps as cleanrl
        self.kl_ctl = (
            AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon)
            if cfg.adaptive_kl
            else FixedKLController(cfg.kl_coef)
        )
        # One sampling stream per process ("batch" sampling); process 0's is the one-process run's.
        sample_seed = cfg.seed if procs.rank == 0 else _derived_seed(cfg.seed, procs.rank)
        self.sample_rng = torch.Generator(self.device).manual_seed(sample_seed)
        self.shuffle_rng = torch.Generator().manual_seed(cfg.seed + 1)
        self.step_count = 0
        self.metrics: list[dict[str, float]] = []
        self.last_samples: list[tuple[str, str, float, float]] = []
        self.output_dir = Path(cfg.output_dir) if cfg.output_dir else None

    # -- forward passes ------------------------------------------------------------------------
    def _forward(self, input_ids, attention_mask, response_mask, reference: bool = False):
        """Temperature-scaled logits (N, V) choosing the N real response tokens (response_mask's True
        entries, row by row; the response is the last T columns), and values (B, T) (None for the
        reference). Gradients reach the weights through the DDP wrapper when launched."""
        with self._autocast():
            if not reference:
                model = self.trainable_ddp if torch.is_grad_enabled() else self.trainable
                return model(input_ids, attention_mask, response_mask)
            kwargs = _model_inputs(input_ids, attention_mask, response_mask)
            if self.ref_model is not None:
                return _at_temperature(self.ref_model(**kwargs).logits, self.cfg.temperature), None
            with disabled_adapter(self.policy):
                return _at_temperature(self.policy(**kwargs).logits, self.cfg.temperature), None

    def _pieces(self, rows: torch.Tensor, query_mask: torch.Tensor, response_mask: torch.Tensor):
        """`rows` in pieces of similar length for the forward passes (`_length_pieces`), or whole under FSDP,
        where every process must run the same number of forward passes."""
        if self.cfg.parallelism == "fsdp":
            return [(rows, 0, response_mask.shape[1])]
        return _length_pieces(rows, query_mask, response_mask)

    def _autocast(self):
        """bfloat16 autocast with `cfg.mixed_precision="bf16"`, else nothing changes."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.mixed_precision == "bf16")

    def _generators(self, rows: slice) -> torch.Generator | list[torch.Generator]:
        """The random stream(s) this process samples `rows` of the batch from (see `PPOConfig.sampling`)."""
        if self.cfg.sampling == "batch":
            return self.sample_rng
        return [
            torch.Generator(self.device).manual_seed(_derived_seed(self.cfg.seed, self.step_count, row))
            for row in range(rows.start, rows.stop)
        ]

    def _score(self, queries: list[str], responses: list[str]) -> torch.Tensor:
        scores = self.reward_fn(queries, responses)
        scores = torch.as_tensor(scores, dtype=torch.float32).detach().to(self.device)
        if scores.numel() != len(responses):
            raise ValueError(
                f"reward_fn returned {tuple(scores.shape)} for {len(responses)} responses: it must "
                "return one score per response, a tensor of shape (B,)"
            )
        if not torch.isfinite(scores).all():
            raise ValueError("reward_fn returned a nan or inf score; clip or fix the reward before PPO sees it")
        return scores.reshape(-1)

    # -- one PPO iteration ---------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        cfg, tok, procs = self.cfg, self.tokenizer, self.procs
        t_start = time.perf_counter()

        # 1. rollout: a seeded batch of prompts, chat-templated, left padded; sample, truncate after EOS.
        # Launched on several processes, each samples its own rows of the batch (all of them when alone).
        prompt_rng = np.random.default_rng([cfg.seed, self.step_count])
        idx = prompt_rng.choice(len(self.prompts), cfg.batch_size, replace=len(self.prompts) < cfg.batch_size)
        queries = [self.prompts[i] for i in idx]
        mine = procs.rows(cfg.batch_size)
        enc = tok(
            [self.rendered[i] for i in idx[mine]],
            return_tensors="pt",
            padding=True,
            padding_side="left",
            add_special_tokens=False,
        ).to(self.device)
        # The sampler's own log-probs and hidden states stand in for a second policy forward pass where they
        # are the same numbers up to float rounding: float32, and values read off the policy's hidden state.
        from_sampler = cfg.mixed_precision == "no" and cfg.value_head == "shared" and cfg.parallelism != "fsdp"
        with merged_adapter(self.policy), self._autocast():  # sampled without per-layer adapter matmuls
            sampled = sample_responses(
                self.policy,
                enc["input_ids"],
                enc["attention_mask"],
                cfg.max_new_tokens,
                tok.eos_token_id,
                tok.pad_token_id,
                cfg.temperature,
                cfg.top_p,
                self._generators(mine),
                procs.all if cfg.parallelism == "fsdp" else None,
                with_states=from_sampler,
                decoder=cfg.decoder,
            )
        raw = sampled[0] if from_sampler else sampled
        my_response, my_mask = truncate_after_eos(raw, tok.eos_token_id, tok.pad_token_id)  # (B, T)
        t_generate = time.perf_counter() - t_start

        # 2. score: the reward function reads text, so its tokenizer need not be ours.
        my_texts = [r.strip() for r in tok.batch_decode(my_response, skip_special_tokens=True)]
        my_scores = self._score(queries[mine], my_texts)
        t_score = time.perf_counter() - t_start - t_generate

        # Every process now takes the whole batch, as one process has it: the statistics below need it.
        b_query = procs.gather(enc["input_ids"], pad_value=tok.pad_token_id, pad_first=True)
        b_query_mask = procs.gather(enc["attention_mask"], pad_value=0, pad_first=True)
        b_response = procs.gather(my_response, pad_value=tok.pad_token_id)
        b_mask = procs.gather(my_mask, pad_value=False)
        scores = procs.gather(my_scores)
        b_input_ids = torch.cat([b_query, b_response], dim=1)
        b_attention = torch.cat([b_query_mask, b_mask.long()], dim=1)
        T = b_response.shape[1]
        mask = b_mask.float()

        # 3. log-probs of the sampled tokens under policy and reference (same temperature), and values.
        # Each forward pass reads its rows' own columns only (`_length_pieces`); padding is left at 0.
        Q = b_query.shape[1]
        with torch.no_grad():
            my_logp, my_values, my_ref_logp = (
                torch.zeros(mine.stop - mine.start, T, device=self.device) for _ in range(3)
            )
            for s in range(mine.start, mine.stop, cfg.mini_batch_size):  # chunks bound the activation memory
                chunk = torch.arange(s, min(s + cfg.mini_batch_size, mine.stop), device=self.device)
                for rows, first, t in self._pieces(chunk, b_query_mask, b_mask):
                    ids, att, out = (
                        b_input_ids[rows, first : Q + t],
                        b_attention[rows, first : Q + t],
                        rows - mine.start,
                    )
                    m = b_mask[rows, :t]
                    tokens = b_response[rows, :t][m]
                    if not from_sampler:
                        logits, values = self._forward(ids, att, m)
                        my_logp[out, :t] = _per_token(token_logprobs(logits, tokens), m)
                        my_values[out, :t] = values
                    ref_logits, _ = self._forward(ids, att, m, reference=True)
                    my_ref_logp[out, :t] = _per_token(token_logprobs(ref_logits, tokens), m)
            if from_sampler:  # this process's rows, padded to the batch's longest reply
                _, my_logp, my_hidden = sampled
                my_values = self.value_head(my_hidden).float()
            b_logp, b_values, b_ref_logp = (procs.gather(x) * mask for x in (my_logp, my_values, my_ref_logp))

            # 4. rewards: -beta * KL on every token, plus the score on the last one (the EOS, or the cut-off).
            kl_coef = self.kl_ctl.value
            kl = kl_penalty(b_logp, b_ref_logp, "k1") * mask
            non_score_reward = -kl_coef * kl_penalty(b_logp, b_ref_logp, cfg.kl_estimator) * mask
            b_rewards = non_score_reward.clone()
            last = b_mask.long().sum(1) - 1
            b_rewards[torch.arange(cfg.batch_size, device=self.device), last] += scores
            if cfg.whiten_rewards:
                b_rewards = masked_whiten(b_rewards, mask, shift_mean=False) * mask

            # 5. advantages with GAE, whitened over the batch; returns are the value targets.
            b_advantages, b_returns = gae(b_rewards, b_values, mask, cfg.gamma, cfg.lam)
            b_advantages = masked_whiten(b_advantages, mask) * mask
        t_rollout = time.perf_counter() - t_start

        # 6. PPO epochs over shuffled minibatches.
        # The models stay in eval mode: gradients flow all the same, and no dropout can slip in.
        # Launched on several processes, each takes every size-th row of a minibatch and weighs its loss
        # by its share of the minibatch's tokens: DDP's average of the gradients is then one process's.
        stats = []  # per minibatch: pg_loss, v_loss, clipfrac, approxkl, vf_clipfrac, entropy
        pieces = cfg.gradient_accumulation_steps
        for _epoch in range(cfg.ppo_epochs):
            order = torch.randperm(cfg.batch_size, generator=self.shuffle_rng).to(self.device)
            for s in range(0, cfg.batch_size, cfg.mini_batch_size):
                mb_all = order[s : s + cfg.mini_batch_size]
                mb_tokens = mask[mb_all].sum().clamp(min=1.0)
                mb_mine = mb_all[procs.rank :: procs.size]
                self.optimizer.zero_grad(set_to_none=True)
                mb_stats = torch.zeros(6, device=self.device)
                passes = [p for chunk in mb_mine.chunk(pieces) for p in self._pieces(chunk, b_query_mask, b_mask)]
                for k, (mb, first, t) in enumerate(passes):
                    m = b_mask[mb, :t]
                    mb_mask = m.float()
                    weight = mb_mask.sum() / mb_tokens  # this piece's share of the minibatch's tokens
                    last_piece = k == len(passes) - 1
                    with contextlib.nullcontext() if last_piece else procs.no_sync(self.trainable_ddp):
                        logits, mb_values = self._forward(
                            b_input_ids[mb, first : Q + t], b_attention[mb, first : Q + t], m
                        )
                        token_logp, token_entropy = logprobs_and_entropy(logits, b_response[mb, :t][m])
                        mb_logp = _per_token(token_logp, m)
                        pg_loss, clipfrac, approxkl = policy_loss(
                            mb_logp, b_logp[mb, :t], b_advantages[mb, :t], mb_mask, cfg.clip_range
                        )
                        v_loss, vf_clipfrac = value_loss(
                            mb_values, b_values[mb, :t], b_returns[mb, :t], mb_mask, cfg.clip_range_value
                        )
                        entropy = token_entropy.sum() / max(token_entropy.numel(), 1)
                        loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
                        (loss * (weight * procs.size)).backward()  # alone and in one piece, weight is 1
                    parts = (pg_loss, v_loss, clipfrac, approxkl, vf_clipfrac, entropy)
                    mb_stats += torch.stack([x.detach() for x in parts]) * weight
                nn.utils.clip_grad_norm_(
                    [p for g in self.optimizer.param_groups for p in g["params"]], cfg.max_grad_norm
                )
                self.optimizer.step()
                stats.append(mb_stats)
        pg, vl, cf, ak, vcf, ent = procs.sum(torch.stack(stats)).T.tolist()
        t_update = time.perf_counter() - t_start - t_rollout

        # 7. log: one flat dict per step (METRIC_DOCS explains each key); adapt beta afterwards.
        self.step_count += 1
        seq_kl = kl.sum(1)
        t_step = time.perf_counter() - t_start
        metrics = {
            "objective/kl": seq_kl.mean().item(),
            "objective/kl_k3": (kl_penalty(b_logp, b_ref_logp, "k3") * mask).sum(1).mean().item(),
            "objective/scores": scores.mean().item(),
            "objective/non_score_reward": non_score_reward.sum(1).mean().item(),
            "objective/rlhf_reward": (scores + non_score_reward.sum(1)).mean().item(),
            "objective/entropy": (-b_logp * mask).sum(1).mean().item(),
            "policy/entropy": fmean(ent),
            "policy/clipfrac": fmean(cf),
            "policy/approxkl": fmean(ak),
            "loss/policy": fmean(pg),
            "loss/value": fmean(vl),
            "val/mean": masked_mean(b_values, mask).item(),
            "val/clipfrac": fmean(vcf),
            "val/explained_var": explained_variance(b_values, b_returns, mask).item(),
            "ppo/kl_coef": float(kl_coef),
            "ppo/mean_response_len": mask.sum(1).mean().item(),
            "time/step": t_step,
            "time/rollout": t_rollout,
            "time/generate": t_generate,
            "time/score": t_score,
            "time/update": t_update,
            "samples_per_second": cfg.batch_size / t_step,
            "step": self.step_count,
        }
        self.kl_ctl.update(metrics["objective/kl"], n_steps=cfg.batch_size)
        responses = procs.gather_objects(my_texts)
        self.last_samples = list(zip(queries, responses, scores.tolist(), seq_kl.tolist()))
        self.metrics.append(metrics)
        return metrics

    # -- the run -------------------------------------------------------------------------------
    def train(self, resume: bool = True) -> PPOResult:
        """Run (or resume) until `cfg.total_steps`, logging, calling back and checkpointing as configured."""
        cfg = self.cfg
        if self.output_dir is not None:
            self._start_output(resume)
            self.procs.wait()  # the main process has trimmed metrics.jsonl before anyone logs to it
        while self.step_count < cfg.total_steps:
            metrics = self.step()
            self._log(metrics)
            if self.output_dir is not None and (
                self.step_count == cfg.total_steps
                or (cfg.checkpoint_every and self.step_count % cfg.checkpoint_every == 0)
            ):
                self.save_checkpoint()
        return PPOResult(self.policy, self.value_head, self.metrics, self.last_samples, self.output_dir)

    def _log(self, metrics: dict) -> None:
        """Append to metrics.jsonl, print and call the callbacks: the main process only."""
        cfg, n = self.cfg, self.step_count
        if not self.procs.is_main:
            return
        if self.output_dir is not None:
            with open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(metrics) + "\n")
        if cfg.log_every and n % cfg.log_every == 0:
            print(
                f"step {n}/{cfg.total_steps} | score {metrics['objective/scores']:.3f} | "
                f"kl {metrics['objective/kl']:.3f} | entropy {metrics['policy/entropy']:.2f} | "
                f"{metrics['time/step']:.2f} s",
                flush=True,
            )
        if cfg.sample_table_every and n % cfg.sample_table_every == 0:
            from labkit.ppo_plots import sample_table

            print(sample_table(self.last_samples[:4]).to_string(max_colwidth=60))
        for callback in self.callbacks:
            (callback.on_step if hasattr(callback, "on_step") else callback)(metrics, self.last_samples)

    # -- checkpoints ---------------------------------------------------------------------------
    @functools.cached_property
    def reward_identity(self) -> dict[str, str | None]:
        """The reward's name and fingerprint (`rewards.fingerprint`; None for a plain function), recorded in
        every checkpoint: a run resumes only against the reward it trained on."""
        from labkit.rewards import fingerprint

        return {"name": getattr(self.reward_fn, "name", None), "fingerprint": fingerprint(self.reward_fn)}

    @property
    def checkpoint_dir(self) -> Path | None:
        return self.output_dir / "checkpoint" if self.output_dir is not None else None

    def _start_output(self, resume: bool) -> None:
        if self.procs.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        self.procs.wait()
        ckpt = self._find_checkpoint()
        if ckpt is not None and not resume:
            raise ValueError(
                f"{self.output_dir} already holds a PPO checkpoint ({ckpt}); pass resume=True to "
                "continue it, or choose another output_dir (nothing was overwritten)"
            )
        if ckpt is not None:
            self.load_checkpoint(ckpt)
        elif not resume and (self.output_dir / "metrics.jsonl").exists():
            raise ValueError(
                f"{self.output_dir}/metrics.jsonl exists from another run; pass resume=True or choose "
                "another output_dir (nothing was overwritten)"
            )
        # Steps logged after the last checkpoint will be redone, identically: drop their lines.
        self.procs.wait()  # every process has read the folder as it was
        if self.procs.is_main:
            _write_jsonl(self.output_dir / "metrics.jsonl", self.metrics)

    def _find_checkpoint(self) -> Path | None:
        for path in (self.checkpoint_dir, self.checkpoint_dir.with_name("checkpoint.old")):
            if (path / _STATE_FILE).is_file():
                return path
            if (path / "state.pt").is_file():
                raise ValueError(
                    f"{path} holds a pickled checkpoint (state.pt) from an older labkit. It is not "
                    "loaded: unpickling a file runs any code inside it, and run folders get passed "
                    "around. Nothing was run or changed; delete the folder (or choose another "
                    "output_dir) to train afresh."
                )
        return None

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        """Every trainable weight, whole and on the CPU (sharded ones are gathered: every process calls this)."""
        modules = {"policy": self.policy, "value_model": self.value_model}
        return {
            f"{name}.{n}": full_tensor(p).clone()
            for name, m in modules.items()
            if m is not None
            for n, p in m.named_parameters()
            if p.requires_grad
        }

    def save_checkpoint(self) -> Path:
        """Write the whole training state to output_dir/checkpoint atomically (tmp folder, then rename).

        Files: weights.safetensors (trainable weights and the value head), optimizer.safetensors and
        rng.safetensors (their tensors), state.json (step, KL controller, metrics, config, and the
        non-tensor parts of the optimizer and RNG states). No pickle anywhere.

        Launched on several processes, every process calls it (their sampling streams are gathered) and
        the main one writes; the weights and optimizer state are the same in every process.
        """
        from safetensors.torch import save_file

        # Gathered by every process: sharded weights and optimizer state, and each process's sampling stream.
        weights = {f"trainable.{k}": v for k, v in self._trainable_state().items()}
        weights.update({f"value_head.{k}": full_tensor(v) for k, v in self.value_head.state_dict().items()})
        optimizer_state = _map_tensors(self.optimizer.state_dict(), full_tensor)
        rng = _rng_state(self.sample_rng, self.shuffle_rng)
        if self.procs.size > 1:
            rng["sample_by_process"] = self.procs.gather(rng["sample"][None].to(self.device)).cpu()
        if not self.procs.is_main:
            self.procs.wait()
            return self.checkpoint_dir
        opt_tensors, opt_rest = _split_tensors(optimizer_state)
        rng_tensors, rng_rest = _split_tensors(rng)
        state = {
            "format": _FORMAT,
            "step": self.step_count,
            "processes": self.procs.size,
            "kl_controller": self.kl_ctl.state_dict(),
            "optimizer": opt_rest,
            "rng": rng_rest,
            "metrics": self.metrics,
            "config": dataclasses.asdict(self.cfg),
            "reward": self.reward_identity,
        }
        with atomic_folder(self.checkpoint_dir) as tmp:
            save_file(weights, str(tmp / "weights.safetensors"))
            save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
            save_file(rng_tensors, str(tmp / "rng.safetensors"))
            (tmp / _STATE_FILE).write_text(json.dumps(state) + "\n", encoding="utf-8")
        self.procs.wait()
        return self.checkpoint_dir

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a state written by `save_checkpoint`; the config must match except run-length/logging fields.

        Reads safetensors and JSON only: a file that is not what it claims raises, it never runs.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        try:
            state = json.loads((path / _STATE_FILE).read_text(encoding="utf-8"))
            weights = load_file(str(path / "weights.safetensors"))
            optimizer = _join_tensors(state["optimizer"], load_file(str(path / "optimizer.safetensors")))
            rng = _join_tensors(state["rng"], load_file(str(path / "rng.safetensors")))
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
            raise ValueError(
                f"checkpoint {path} is incomplete or damaged ({type(err).__name__}: {err}); delete it "
                "or choose another output_dir to train afresh (nothing was changed)"
            ) from err
        if state.get("format") != _FORMAT:
            raise ValueError(f"checkpoint {path} has format {state.get('format')!r}, this labkit reads {_FORMAT}")
        changed = _config_changes(state["config"], self.cfg)
        if changed:
            diff = ", ".join(changed)
            raise ValueError(
                f"checkpoint {path} was made with a different config ({diff}); use the same "
                "settings to resume, or a new output_dir for a new run"
            )
        _check_same_reward(path, state.get("reward"), self.reward_identity)
        written_by = int(state.get("processes", 1))
        if self.cfg.sampling == "batch" and written_by != self.procs.size:
            raise ValueError(
                f"checkpoint {path} was written by {written_by} process(es) and this run has {self.procs.size}: "
                "with sampling='batch' each process has its own random stream. Resume on "
                f"{written_by} process(es), or train with sampling='per_prompt', which resumes on any number"
            )
        if "sample_by_process" in rng:
            rng["sample"] = rng["sample_by_process"][self.procs.rank].clone()  # a row view will not do
        mine = self._trainable_state()
        trainable = {k[len("trainable.") :]: v for k, v in weights.items() if k.startswith("trainable.")}
        if set(mine) != set(trainable):
            raise ValueError(
                f"checkpoint {path} does not fit this model (its trainable weights differ); "
                "resume with the same model and LoRA settings, or use a new output_dir"
            )
        params = {
            f"{name}.{n}": p
            for name, m in {"policy": self.policy, "value_model": self.value_model}.items()
            if m is not None
            for n, p in m.named_parameters()
        }
        for key, tensor in trainable.items():
            set_full(params[key], tensor)
        head = {k[len("value_head.") :]: v for k, v in weights.items() if k.startswith("value_head.")}
        if set(head) != set(dict(self.value_head.named_parameters())):
            raise ValueError(f"checkpoint {path} has no value head of this shape; use a new output_dir")
        for name, param in self.value_head.named_parameters():
            set_full(param, head[name])
        self.optimizer.load_state_dict(optimizer)
        for param, moments in self.optimizer.state.items():  # a sharded weight's moments are sharded alike
            for key, value in moments.items():
                if hasattr(param, "device_mesh") and torch.is_tensor(value) and value.shape == param.shape:
                    moments[key] = torch.zeros_like(param)
                    set_full(moments[key], value)
        self.kl_ctl.load_state_dict(state["kl_controller"])
        _set_rng_state(rng, self.sample_rng, self.shuffle_rng)
        self.step_count = int(state["step"])
        self.metrics = list(state["metrics"])


_FORMAT = 2
"""Checkpoint layout version: 2 is safetensors + JSON (1 was a pickled state.pt, refused)."""
_STATE_FILE = "state.json"


def _check_same_reward(path: Path, saved: dict | None, now: dict) -> None:
    """Refuse to resume a run against another reward than the one it trained on (a reward model retrained on
    new rankings, say): the resumed policy would be the old reward's, reported as the new one's."""
    if _other_reward(saved, now["fingerprint"]):
        raise ValueError(
            f"checkpoint {path} was trained against another reward than this run's: {saved.get('name')!r} "
            f"({saved['fingerprint'][-12:]}) then, {now['name']!r} ({now['fingerprint'][-12:]}) now; a reward model "
            "retrained on new rankings is another reward. Resuming would continue the old reward's policy. Use a "
            "new output_dir to train against this reward (nothing was changed)"
        )


_FREE_ON_RESUME = frozenset(
    {
        "total_steps",
        "log_every",
        "sample_table_every",
        "checkpoint_every",
        "output_dir",
        "gradient_accumulation_steps",
        "decoder",
    }
)
"""PPOConfig fields a resumed run may change: how long, how loud, how a minibatch is cut into pieces, and how
the rollout decodes (each changes nothing but float rounding)."""


def _config_changes(saved_config: dict, cfg: PPOConfig) -> list[str]:
    """ "field: saved -> now" for each setting of `cfg` a checkpoint's config differs in (`_FREE_ON_RESUME` aside)."""
    now = json.loads(json.dumps(dataclasses.asdict(cfg)))
    # A field newer than the checkpoint had its default when the checkpoint was written.
    saved = {**json.loads(json.dumps(dataclasses.asdict(PPOConfig()))), **saved_config}
    return [
        f"{k}: {saved.get(k)!r} -> {now[k]!r}"
        for k in sorted(now)
        if k not in _FREE_ON_RESUME and saved.get(k) != now[k]
    ]


def _other_reward(saved: dict | None, fingerprint: str | None) -> bool:
    """A recorded reward whose fingerprint is not `fingerprint`; False when either is unknown (a checkpoint older
    than the record, or a plain function on either side: nothing to compare)."""
    recorded = (saved or {}).get("fingerprint")
    return None not in (recorded, fingerprint) and recorded != fingerprint


def checkpoint_reward(output_dir: str | Path) -> dict | None:
    """The reward a run's checkpoint trained against ({"name", "fingerprint"}), read from JSON; None if the
    folder holds no checkpoint or one written before labkit recorded it."""
    path = Path(output_dir) / "checkpoint" / _STATE_FILE
    return json.loads(path.read_text(encoding="utf-8")).get("reward") if path.is_file() else None


def trained_against_other(output_dir: str | Path, fingerprint: str | None) -> bool:
    """True when `output_dir` holds a checkpoint trained against a reward whose fingerprint is not `fingerprint`
    (`rewards.fingerprint`); False when there is no checkpoint or either side is unknown."""
    return _other_reward(checkpoint_reward(output_dir), fingerprint)


def set_aside(folder: str | Path) -> Path:
    """Rename `folder` to `<folder>.old-N` (the first N free) and return the new path: kept, out of the way."""
    folder = Path(folder)
    n = 1
    while folder.with_name(f"{folder.name}.old-{n}").exists():
        n += 1
    return folder.rename(folder.with_name(f"{folder.name}.old-{n}"))


def set_aside_if_stale(
    output_dir: str | Path, fingerprint: str | None, cfg: PPOConfig | None = None
) -> tuple[Path, str] | None:
    """`set_aside(output_dir)` when it holds a run this one cannot resume: one trained against another reward
    (`trained_against_other`), or, given `cfg`, with other settings than `cfg` (another seed, say; how long
    and how loud aside). It would resume as finished and train nothing, or refuse to resume.
    (new path, why) when set aside, else None; a checkpoint it cannot read is left for the trainer to report."""
    path = Path(output_dir) / "checkpoint" / _STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    saved_config = state.get("config")
    changes = _config_changes(saved_config, cfg) if cfg is not None and isinstance(saved_config, dict) else []
    if _other_reward(state.get("reward"), fingerprint):
        why = "against another reward"
    elif changes:
        why = f"with other settings ({', '.join(changes)})"
    else:
        return None
    return set_aside(output_dir), why


def read_checkpoint_step(output_dir: str | Path) -> int:
    """The step a run's checkpoint holds (0 if none): read from JSON, nothing is unpickled."""
    path = Path(output_dir) / "checkpoint" / _STATE_FILE
    return int(json.loads(path.read_text(encoding="utf-8"))["step"]) if path.is_file() else 0


def _split_tensors(tree: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """(flat {dotted path: tensor}, the tree with each tensor replaced by {"__tensor__": path}): tensors
    for safetensors, the rest for JSON. Tuples become lists; dict keys become strings (and come back
    as ints where they were ints: optimizer state is keyed by parameter index)."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree.detach().cpu().contiguous()}, {"__tensor__": prefix}
    if isinstance(tree, dict):
        tensors, out = {}, {}
        for key, value in tree.items():
            t, out_value = _split_tensors(value, f"{prefix}.{key}" if prefix else str(key))
            tensors.update(t)
            out[f"{'int:' if isinstance(key, int) else ''}{key}"] = out_value
        return tensors, out
    if isinstance(tree, (list, tuple)):
        tensors, out = {}, []
        for i, value in enumerate(tree):
            t, out_value = _split_tensors(value, f"{prefix}.{i}")
            tensors.update(t)
            out.append(out_value)
        return tensors, out
    if isinstance(tree, (str, int, float, bool)) or tree is None:
        return {}, tree
    raise TypeError(f"cannot store {type(tree).__name__} at {prefix!r} in a checkpoint")


def _full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state as whole CPU tensors, a tied weight once (under its first name), as save_pretrained
    writes it: sharded weights are gathered, so every process calls this."""
    state, seen = {}, set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            state[name] = full_tensor(tensor)
    return state


def _map_tensors(tree: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """`tree` (dicts, lists, tuples) with `fn` applied to every tensor in it."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: _map_tensors(v, fn) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map_tensors(v, fn) for v in tree)
    return tree


def _join_tensors(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `_split_tensors`."""
    if isinstance(tree, dict):
        if set(tree) == {"__tensor__"}:
            return tensors[tree["__tensor__"]]
        return {(int(k[4:]) if k.startswith("int:") else k): _join_tensors(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join_tensors(v, tensors) for v in tree]
    return tree


def _rng_state(sample_rng: torch.Generator, shuffle_rng: torch.Generator) -> dict:
    """Every random stream the run draws from, as tensors and plain numbers."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "mt": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else None,
        "sample": sample_rng.get_state(),
        "shuffle": shuffle_rng.get_state(),
    }


def _set_rng_state(rng: dict, sample_rng: torch.Generator, shuffle_rng: torch.Generator) -> None:
    py, npy = rng["python"], rng["numpy"]
    random.setstate((py["version"], tuple(int(x) for x in py["mt"].tolist()), py["gauss"]))
    np.random.set_state(
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"])
    )
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    sample_rng.set_state(rng["sample"])
    shuffle_rng.set_state(rng["shuffle"])


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write(path, "".join(json.dumps(row) + "\n" for row in rows))


def train(
    policy,
    tokenizer,
    prompts: Sequence[str],
    reward_fn: Callable,
    cfg: PPOConfig | None = None,
    callbacks: Sequence[Any] = (),
    resume: bool = True,
    accelerator: Any = None,
) -> PPOResult:
    """Fine-tune `policy` with PPO on `prompts` against `reward_fn(prompts, responses) -> tensor (B,)`.

    Callbacks are objects with `on_step(metrics, samples)` (or plain callables with that signature);
    `samples` is the step's list of (prompt, response, score, kl). With `cfg.output_dir` set and
    `resume=True`, a run picks up from `output_dir/checkpoint/` where it left off. `accelerator`:
    see `PPOTrainer`.
    """
    return PPOTrainer(policy, tokenizer, prompts, reward_fn, cfg, callbacks, accelerator).train(resume=resume)


def ppo_stage(
    policy,
    tokenizer,
    prompts: Sequence[str],
    reward_fn: Callable,
    cfg: PPOConfig | None = None,
    callbacks: Sequence[Any] = (),
    accelerator: Any = None,
) -> tuple[PPOResult, dict[str, float]]:
    """`labkit run`'s PPO stage (and `labkit ppo`'s): train (resuming if possible), save the policy,
    return summary metrics. Launched on several processes, the main one writes the files.

    Metrics: ppo.kl_mean (mean per-response KL to the reference over the last 5 steps),
    ppo.wall_seconds, ppo.steps, ppo.score_first / ppo.score_last (mean score of the first / last
    5 steps), ppo.samples_per_second (mean over steps).
    """
    cfg = cfg or PPOConfig()
    start = time.perf_counter()
    trainer = PPOTrainer(policy, tokenizer, prompts, reward_fn, cfg, callbacks, accelerator)
    result = trainer.train(resume=True)
    wall = time.perf_counter() - start
    rows = result.metrics

    def avg(key: str, part: list[dict]) -> float:
        return fmean(m[key] for m in part) if part else float("nan")

    metrics = {
        "ppo.kl_mean": avg("objective/kl", rows[-5:]),
        "ppo.wall_seconds": wall,
        "ppo.steps": len(rows),
        "ppo.score_first": avg("objective/scores", rows[:5]),
        "ppo.score_last": avg("objective/scores", rows[-5:]),
        "ppo.samples_per_second": avg("samples_per_second", rows),
    }
    if result.output_dir is not None:
        from safetensors.torch import save_file

        from labkit.artifacts import write_manifest

        # Whole tensors, gathered by every process where the weights are sharded; the main process writes.
        sharded = any(hasattr(p, "device_mesh") for p in result.policy.parameters())
        policy_state = _full_state(result.policy) if sharded else None
        head = {k: full_tensor(v) for k, v in result.value_head.state_dict().items()}
        if trainer.procs.is_main:
            extra = {"state_dict": policy_state} if sharded else {}
            result.policy.save_pretrained(result.output_dir / "policy", **extra)
            save_file(head, str(result.output_dir / "value_head.safetensors"))
            write_manifest(result.output_dir, "ppo", cfg, cfg.seed, metrics=metrics)
        trainer.procs.wait()
    return result, metrics
