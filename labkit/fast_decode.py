"""Token-by-token decoding of a Llama-family model with a static KV cache and few calls per token.

PPO's rollout samples each reply one token at a time. On a small model a token's forward pass costs
more in Python than in arithmetic: transformers' `LlamaForCausalLM` calls every layer through module
hooks, rebuilds an attention mask and grows its key/value cache by concatenation each token.
`LlamaDecoder` computes the same function from the same weights (it reads them in place and copies
none) with the arithmetic alone: keys and values go into buffers allocated once for the whole reply
(a static KV cache), the attention mask is one boolean row per reply, and the rotary angles are
computed once per token for all layers.

`decoder_for(model)` says where it applies: a Llama-architecture model (the tiny model, SmolLM2)
whose layers are plain linear layers, with any LoRA adapters merged (the rollout samples under
`models.merged_adapter`) or switched off. Elsewhere it returns None and the caller runs the model's
own forward. `ppo.sample_responses` uses it unless `PPOConfig.decoder="transformers"`;
benchmarks/peer_ppo.py measures both (`--set decoder=transformers`), and tests/test_fast_decode.py
checks that it samples the same tokens, with the same log-probs and hidden states, as the model's
own forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from labkit.models import position_ids

__all__ = ["LlamaDecoder", "decoder_for"]


class _Unsupported(Exception):
    """The model computes something LlamaDecoder does not: decode with the model's own forward."""


def _plain(module: nn.Module, kind: type) -> nn.Module:
    """The layer that computes `module`'s output as things stand, or _Unsupported.

    A peft LoRA layer computes as its base layer when its adapters are merged into the base weights
    or switched off; with active unmerged adapters it adds their product, which LlamaDecoder does not.
    """
    if hasattr(module, "base_layer") and hasattr(module, "lora_A"):
        active = [
            a for a in module.active_adapters if a in module.lora_A or a in getattr(module, "lora_embedding_A", {})
        ]
        if active and not module.merged and not module.disable_adapters:
            raise _Unsupported("active LoRA adapters that are not merged")
        module = module.get_base_layer()
    if type(module) is not kind:
        raise _Unsupported(f"a {type(module).__name__} where a {kind.__name__} was expected")
    if getattr(module, "bias", None) is not None:
        raise _Unsupported("a linear layer with a bias")
    if type(module.weight.data) is not torch.Tensor:  # a sharded (FSDP) or quantised weight
        raise _Unsupported(f"a {type(module.weight.data).__name__} weight")
    return module


def decoder_for(model) -> LlamaDecoder | None:
    """A LlamaDecoder computing what `model` computes now, or None where it cannot (see the module docstring)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") and hasattr(model, "peft_config") else model
    cfg = getattr(base, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) != "llama":
        return None
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if (
        getattr(cfg, "hidden_act", None) != "silu"
        or getattr(cfg, "attention_bias", False)
        or getattr(cfg, "mlp_bias", False)
        or (getattr(cfg, "pretraining_tp", 1) or 1) != 1
        or rope.get("rope_type", rope.get("type", "default")) != "default"
    ):
        return None
    try:
        return LlamaDecoder(base)
    except (_Unsupported, AttributeError):
        return None


class LlamaDecoder:
    """Decodes a batch with a static KV cache: `start` reads the prompts, each `next` one token per row.

    Both return (logits, hidden) at the newest position: logits (B, V) in the model's dtype and the last
    hidden state after the final norm (B, H), which is transformers' `hidden_states[-1]`.
    """

    def __init__(self, base: nn.Module):
        cfg, inner = base.config, base.model
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.embed = _plain(inner.embed_tokens, nn.Embedding).weight
        self.head = _plain(base.lm_head, nn.Linear).weight
        self.norm = (inner.norm.weight, inner.norm.variance_epsilon)
        self.inv_freq = inner.rotary_emb.inv_freq
        self.rope_scale = float(getattr(inner.rotary_emb, "attention_scaling", 1.0))
        self.layers = []
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            linear = [
                _plain(m, nn.Linear).weight
                for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
            ]
            norms = [(n.weight, n.variance_epsilon) for n in (layer.input_layernorm, layer.post_attention_layernorm)]
            self.layers.append((*norms, *linear))
        self.keys = self.values = self.valid = self.positions = None
        self.length = 0

    @staticmethod
    def _rms_norm(x: torch.Tensor, norm: tuple[torch.Tensor, float]) -> torch.Tensor:
        weight, eps = norm  # as LlamaRMSNorm: in float32, then back to the input's dtype
        x32 = x.float()
        return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)

    def _rotary(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin (B, 1, S, head_dim) for `positions` (B, S), as LlamaRotaryEmbedding computes them."""
        freqs = positions[..., None].float() * self.inv_freq.float()
        angles = torch.cat((freqs, freqs), dim=-1)
        cos, sin = angles.cos() * self.rope_scale, angles.sin() * self.rope_scale
        return cos.to(dtype)[:, None], sin.to(dtype)[:, None]

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def _forward(
        self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run `ids` (B, S) at `positions` through every layer, writing their keys and values into the cache
        after the `self.length` already there; `mask` (B, 1, S, length + S) says which keys each query sees."""
        B, S = ids.shape
        start, end = self.length, self.length + S
        x = F.embedding(ids, self.embed)
        cos, sin = self._rotary(positions, x.dtype)
        gqa = self.kv_heads != self.heads
        for i, (norm_in, norm_post, wq, wk, wv, wo, w_gate, w_up, w_down) in enumerate(self.layers):
            h = self._rms_norm(x, norm_in)
            q = F.linear(h, wq).view(B, S, self.heads, self.head_dim).transpose(1, 2)
            k = F.linear(h, wk).view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)
            self.keys[i, :, :, start:end] = self._rotate(k, cos, sin)
            self.values[i, :, :, start:end] = F.linear(h, wv).view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)
            out = F.scaled_dot_product_attention(
                self._rotate(q, cos, sin),
                self.keys[i, :, :, :end],
                self.values[i, :, :, :end],
                attn_mask=mask,
                enable_gqa=gqa,
            )
            x = x + F.linear(out.transpose(1, 2).reshape(B, S, -1), wo)
            h = self._rms_norm(x, norm_post)
            x = x + F.linear(F.silu(F.linear(h, w_gate)) * F.linear(h, w_up), w_down)
        self.length = end
        hidden = self._rms_norm(x[:, -1], self.norm)
        return F.linear(hidden, self.head), hidden

    def start(self, ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int):
        """Read the left-padded prompts (B, P) into a cache with room for `max_new_tokens` more per row."""
        B, P = ids.shape
        dtype = self.embed.dtype
        shape = (len(self.layers), B, self.kv_heads, P + max_new_tokens, self.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=ids.device)
        self.values = torch.zeros(shape, dtype=dtype, device=ids.device)
        self.valid = torch.zeros(B, P + max_new_tokens, dtype=torch.bool, device=ids.device)
        self.valid[:, :P] = attention_mask.bool()
        self.positions = position_ids(attention_mask)  # skips the left padding, as the model's own sampling
        self.length = 0
        causal = torch.ones(P, P, dtype=torch.bool, device=ids.device).tril()
        # A padding position sees itself too: no query row is all masked (its output is never read).
        mask = (self.valid[:, None, None, :P] & causal) | torch.eye(P, dtype=torch.bool, device=ids.device)
        logits, hidden = self._forward(ids, self.positions, mask)
        self.positions = self.positions[:, -1:]
        return logits, hidden

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only `rows` (indices into the rows held now) for the tokens that follow: the rollout drops
        replies that have ended, so the rest of the batch is decoded without them."""
        self.keys = self.keys.index_select(1, rows)
        self.values = self.values.index_select(1, rows)
        self.valid, self.positions = self.valid[rows], self.positions[rows]

    def next(self, tokens: torch.Tensor):
        """Append one token per row (B,) and return the (logits, hidden) that predict the one after it."""
        if self.keys is None or self.length >= self.keys.shape[3]:
            raise RuntimeError("LlamaDecoder.next: call start() first, and at most max_new_tokens times after it")
        self.valid[:, self.length] = True
        self.positions = self.positions + 1
        return self._forward(tokens[:, None], self.positions, self.valid[:, None, None, : self.length + 1])
