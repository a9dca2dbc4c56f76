"""Memory: what one PPO step holds at its peak, LoRA against full fine-tuning, measured and estimated.

Stage: planning (chapter 08). Inputs: a policy, its tokenizer, prompts and a `PPOConfig`. Outputs: a
`MemoryReport` per configuration (the peak of one PPO step and what was alive at that moment) and
`estimate`, the same breakdown predicted from a model's shape, for any size.

Measured how. `measure_ppo_step` runs two untimed warm-up steps (so AdamW's state exists, as it does in
every step after the first) and then one step inside `StorageTracker`, a `TorchDispatchMode` that sees
every tensor an operator returns, follows each storage until it is freed, and keeps the set of storages
alive at the moment the total peaked. Each storage is put in one category:
    weights      the policy's parameters (with LoRA: the frozen base and the adapters)
    reference    the frozen copy full fine-tuning keeps (LoRA has none: its reference is the adapters off)
    value_head   the value head's parameters
    gradients    a trainable parameter's .grad
    optimizer    AdamW's exp_avg and exp_avg_sq (and step counters)
    activations  everything else: tensors saved for backward, logits, the sampler's KV cache, temporaries
This counts tensor bytes, not the process: the allocator's slack, the Python heap and the libraries are
left out, which is what `torch.cuda.max_memory_allocated` reports on a GPU too (measured there as well,
when one is present, as `gpu_peak_bytes`). The reward model is not part of the step's own memory.

Estimated how (`estimate`): parameter bytes are exact arithmetic; activations count, per token and
layer, the tensors a Llama block saves for backward during the update's forward (see `_ACT_PER_TOKEN`),
plus the copies of the logits the PPO loss keeps. The benchmark (benchmarks/memory.py) states how far
that estimate is from the measurement.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "CATEGORIES",
    "MemoryReport",
    "ModelShape",
    "StorageTracker",
    "estimate",
    "lora_params",
    "measure_ppo_step",
]

CATEGORIES = ("weights", "reference", "value_head", "gradients", "optimizer", "activations")
"""The breakdown's categories, in the order a table shows them."""


class StorageTracker(TorchDispatchMode):
    """Live tensor bytes by category while active, and the categories alive when the total peaked.

    Tensors that exist before the mode is entered are counted only if `register`ed (parameters,
    optimizer state). A storage is keyed by an id of its own, so a freed address reused later is a
    new storage. `relabel` moves a storage to another category (a gradient is allocated by the
    backward pass before it becomes a .grad); the peak's breakdown is read at the end, so a relabel
    after the peak still counts.
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, tuple[int, int]] = {}  # data_ptr -> (storage id, bytes)
        self._kind: dict[int, str] = {}  # storage id -> category
        self._bytes: dict[int, int] = {}  # storage id -> bytes
        self._next_id = 0
        self.current = 0
        self.peak = 0
        self._peak_ids: list[int] = []

    # -- bookkeeping -----------------------------------------------------------------------------
    def _track(self, tensor: torch.Tensor, kind: str) -> int | None:
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta" or tensor.is_sparse:
            return None
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # a tensor subclass without a storage of its own
            return None
        ptr, nbytes = storage.data_ptr(), storage.nbytes()
        if ptr == 0 or nbytes == 0:
            return None
        if ptr in self._live:
            return self._live[ptr][0]
        sid = self._next_id
        self._next_id += 1
        self._live[ptr] = (sid, nbytes)
        self._kind[sid], self._bytes[sid] = kind, nbytes
        self.current += nbytes
        weakref.finalize(storage, self._free, ptr, sid)
        if self.current > self.peak:
            self.peak = self.current
            self._peak_ids = [s for s, _ in self._live.values()]
        return sid

    def _free(self, ptr: int, sid: int) -> None:
        entry = self._live.get(ptr)
        if entry is not None and entry[0] == sid:
            del self._live[ptr]
            self.current -= entry[1]

    def register(self, tensors, kind: str) -> None:
        """Count tensors that already exist (parameters, optimizer state) as `kind`."""
        for t in tensors:
            self.relabel(t, kind)

    def relabel(self, tensor: torch.Tensor, kind: str) -> None:
        """Put `tensor`'s storage in `kind` (tracking it first if it is new)."""
        sid = self._track(tensor, kind)
        if sid is not None:
            self._kind[sid] = kind

    def peak_breakdown(self) -> dict[str, int]:
        """Bytes per category among the storages alive when the total peaked."""
        out = dict.fromkeys(CATEGORIES, 0)
        for sid in self._peak_ids:
            out[self._kind[sid]] += self._bytes[sid]
        return out

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t, "activations")
        return out


@dataclass
class MemoryReport:
    """One PPO step's peak tensor memory and what it held, for one configuration."""

    lora: bool
    peak_bytes: int
    """Tensor bytes alive at the step's peak (CPU or GPU alike; see the module docstring)."""
    breakdown: dict[str, int]
    """Bytes per category (CATEGORIES) at that peak; they sum to peak_bytes."""
    params: int
    trainable_params: int
    """Parameters the optimizer updates: the adapters (or every weight) plus the value head."""
    batch_size: int
    mini_batch_size: int
    prompt_tokens: int
    """The longest prompt of the measured batch, in tokens (prompts are left-padded to it)."""
    max_new_tokens: int
    dtype: str
    step_seconds: float
    """Wall seconds of the untracked second warm-up step (the tracker itself slows a step down)."""
    gpu_peak_bytes: int | None = None
    """torch.cuda.max_memory_allocated over the tracked step, when the policy is on a GPU."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_ppo_step(
    policy,
    tokenizer,
    prompts: Sequence[str],
    cfg,
    reward_fn: Callable | None = None,
) -> MemoryReport:
    """Peak tensor memory of one PPO step of `cfg` (LoRA or full per `cfg.lora`), with its breakdown.

    `policy` is used as given (with cfg.lora=False it is trained in place: pass a fresh copy). The
    reward defaults to zeros: the reward model's memory is its own, not the step's.
    """
    from labkit.ppo import PPOTrainer

    reward_fn = reward_fn or (lambda queries, responses: torch.zeros(len(responses)))
    trainer = PPOTrainer(policy, tokenizer, prompts, reward_fn, cfg)
    trainer.step()  # warm-up: AdamW allocates its state at the first update
    step_seconds = trainer.step()["time/step"]
    on_gpu = trainer.device.type == "cuda"
    tracker = StorageTracker()
    tracker.register(trainer.policy.parameters(), "weights")
    if trainer.ref_model is not None:
        tracker.register(trainer.ref_model.parameters(), "reference")
    if trainer.value_model is not None:
        tracker.register(trainer.value_model.parameters(), "value_head")
    tracker.register(trainer.value_head.parameters(), "value_head")
    tracker.register(_optimizer_tensors(trainer.optimizer), "optimizer")
    trainable = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    tracker.register([p.grad for p in trainable if p.grad is not None], "gradients")  # freed only after a forward
    hooks = [p.register_post_accumulate_grad_hook(lambda p: tracker.relabel(p.grad, "gradients")) for p in trainable]
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(trainer.device)
    try:
        with tracker:
            trainer.step()
    finally:
        for h in hooks:
            h.remove()
    gpu_peak = torch.cuda.max_memory_allocated(trainer.device) if on_gpu else None
    prompt_tokens = max(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in trainer.rendered)
    return MemoryReport(
        lora=bool(cfg.lora),
        peak_bytes=tracker.peak,
        breakdown=tracker.peak_breakdown(),
        params=sum(p.numel() for p in trainer.policy.parameters()),
        trainable_params=sum(p.numel() for p in trainable),
        batch_size=cfg.batch_size,
        mini_batch_size=cfg.mini_batch_size,
        prompt_tokens=prompt_tokens,
        max_new_tokens=cfg.max_new_tokens,
        dtype=str(next(trainer.policy.parameters()).dtype).removeprefix("torch."),
        step_seconds=step_seconds,
        gpu_peak_bytes=gpu_peak,
    )


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


# -- the estimator ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a decoder-only (Llama-style) model."""

    params: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int

    @classmethod
    def llama(
        cls, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int, tied: bool
    ) -> ModelShape:
        """From a Llama-style model's dimensions, counting its parameters."""
        kv_dim = hidden * kv_heads // heads
        per_layer = hidden * (hidden + 2 * kv_dim) + hidden * hidden + 3 * hidden * intermediate + 2 * hidden
        embed = vocab * hidden * (1 if tied else 2)  # q,k,v; o; gate, up, down; two norms; embeddings
        return cls(layers * per_layer + embed + hidden, hidden, intermediate, layers, heads, kv_heads, vocab)

    @classmethod
    def from_config(cls, config) -> ModelShape:
        """From a transformers config (LlamaConfig and its relatives)."""
        heads = config.num_attention_heads
        return cls.llama(
            config.hidden_size,
            config.intermediate_size,
            config.num_hidden_layers,
            heads,
            getattr(config, "num_key_value_heads", None) or heads,
            config.vocab_size,
            bool(getattr(config, "tie_word_embeddings", False)),
        )

    @property
    def kv_dim(self) -> int:
        return self.hidden * self.kv_heads // self.heads


def lora_params(shape: ModelShape, r: int) -> int:
    """Adapter parameters of rank r on every linear layer of every block (labkit's "all-linear")."""
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_dim
    in_out = (h + h) + 2 * (h + kv) + (h + h) + 2 * (h + i) + (i + h)  # q, k, v, o, gate, up, down
    return shape.layers * r * in_out


# Tensors a Llama block keeps for backward, per token, in units of hidden (h), kv width and intermediate
# (i), read off transformers' LlamaDecoderLayer: each RMSNorm keeps its input, the fp32 normalised value
# and its output (3h, twice); attention keeps q, k, v before and after RoPE (2 x (h + 2kv)), the SDPA
# output and its transposed copy for o_proj (2h); the MLP keeps gate, up, silu(gate) and their product
# (4i). LoRA adds rank-sized intermediates, negligible here.
_ACT_PER_TOKEN = {"hidden": 8, "kv": 4, "intermediate": 4}
_LOGIT_COPIES = 4
"""Vocabulary-sized tensors per response token alive in the update: the logits, the temperature-scaled
copy (at a temperature other than 1), and in the backward of `ppo_math.logprobs_and_entropy` the
log-probabilities (overwritten by the logits' gradient) and the probabilities."""


def estimate(
    shape: ModelShape,
    *,
    lora: bool,
    batch_size: int,
    mini_batch_size: int,
    prompt_tokens: int,
    max_new_tokens: int,
    lora_r: int = 8,
    dtype_bytes: int = 4,
) -> dict[str, int]:
    """Predicted peak bytes of one PPO step, by category (CATEGORIES) plus "total".

    The peak is the larger of the rollout (the whole batch's KV cache while sampling, then policy and
    reference logits of one minibatch) and the update (one minibatch's forward with gradients, its
    gradients, AdamW's two moments); weights, reference and value head are alive throughout.
    """
    h, n, v = shape.hidden, shape.layers, shape.vocab
    seq = prompt_tokens + max_new_tokens
    head = h + 1  # labkit's value head: one linear layer to a scalar
    trainable = (lora_params(shape, lora_r) if lora else shape.params) + head
    weights = shape.params * dtype_bytes + (lora_params(shape, lora_r) * dtype_bytes if lora else 0)
    reference = 0 if lora else shape.params * dtype_bytes
    per_token = (
        _ACT_PER_TOKEN["hidden"] * h
        + _ACT_PER_TOKEN["kv"] * shape.kv_dim
        + _ACT_PER_TOKEN["intermediate"] * shape.intermediate
    )
    update_acts = mini_batch_size * (seq * n * per_token + _LOGIT_COPIES * (max_new_tokens + 1) * v) * dtype_bytes
    kv_cache = batch_size * seq * n * 2 * shape.kv_dim * dtype_bytes
    rollout_acts = max(kv_cache + batch_size * v * dtype_bytes, 2 * mini_batch_size * (max_new_tokens + 1) * v * 4)
    update = {
        "gradients": trainable * dtype_bytes,
        "optimizer": 2 * trainable * 4,
        "activations": update_acts,
    }
    rollout = {"gradients": 0, "optimizer": 2 * trainable * 4, "activations": rollout_acts}
    dynamic = update if sum(update.values()) >= sum(rollout.values()) else rollout
    out = {"weights": weights, "reference": reference, "value_head": head * 4, **dynamic}
    out = {k: int(out[k]) for k in CATEGORIES}
    out["total"] = sum(out.values())
    return out
