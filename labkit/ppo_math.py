"""PPO's tensor maths: small pure functions on (batch, response tokens) tensors.

Inputs: per-token log-probs, values, rewards and a response mask, shaped (B, T) where T counts
response tokens only. Outputs: losses, advantages and the diagnostics PPO logs.

References: Schulman et al. 2017 (PPO, clipped surrogate), Schulman et al. 2016 (GAE),
Ziegler et al. 2019 (per-token KL penalty for language models), John Schulman's note
"Approximating KL divergence" (the k1/k3 estimators), and the loops these functions mirror:
cleanrl `ppo.py` and the old TRL `PPOTrainer` (`trl/trainer/ppo_trainer.py`, `trl/trainer/utils.py`).

Also here: nucleus (top-p) filtering for the sampler, and the fixed and adaptive controllers of
the KL coefficient beta (plain python state, no tensors).

Masks are 1 for real response tokens and 0 for padding after the first EOS; `truncate_after_eos`
makes them, so every mask here is a prefix of ones followed by zeros.
"""

from __future__ import annotations

import torch

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "entropy_from_logits",
    "explained_variance",
    "gae",
    "kl_penalty",
    "logprobs_and_entropy",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "policy_loss",
    "token_logprobs",
    "top_p_filter",
    "truncate_after_eos",
    "value_loss",
]

KL_ESTIMATORS = ("k1", "k3", "abs", "mse")


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over the entries where `mask` is 1 (over `dim`, or over everything)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    # An all-padding row has mean 0 rather than nan.
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `x` over the masked entries; `unbiased` applies Bessel's correction n / (n - 1)."""
    mean = masked_mean(x, mask)
    variance = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.to(x.dtype).sum()
        if n < 2:
            raise ValueError(f"masked_var needs at least 2 unmasked entries for an unbiased variance, got {int(n)}")
        variance = variance * n / (n - 1)
    return variance


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """`x` scaled to unit variance over the mask; centred too unless `shift_mean=False`."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        # Rewards keep their sign (TRL's whiten_rewards): only the scale changes.
        whitened = whitened + mean
    return whitened


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns, both (B, T) and zero on padding.

    delta_t = r_t + gamma * V_{t+1} - V_t with V = 0 after the last token, and
    A_t = sum_{s >= t} (gamma * lam)^(s - t) * delta_s. The usual reversed Python loop over t is
    written here as one product with an upper-triangular discount matrix: same numbers, no loop.
    """
    mask = mask.to(values.dtype)
    values, rewards = values * mask, rewards * mask
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    deltas = rewards + gamma * next_values - values  # (B, T), zero on padding
    T = values.shape[1]
    offset = torch.arange(T, device=values.device)[None, :] - torch.arange(T, device=values.device)[:, None]
    discount = torch.where(
        offset >= 0,
        (gamma * lam) ** offset.clamp(min=0).to(values.dtype),
        torch.zeros((), dtype=values.dtype, device=values.device),
    )  # (T, T): [t, s]
    advantages = deltas @ discount.T * mask
    returns = (advantages + values) * mask
    return advantages, returns


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probs.

    k1 = logp - ref_logp (unbiased, can be negative per token); k3 = (r - 1) - log r with
    r = p_ref / p (unbiased and always >= 0); "abs" = |k1|; "mse" = k1^2 / 2.
    """
    log_ratio = logp - ref_logp
    if kind == "k1":
        return log_ratio
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio  # (r - 1) - log r with log r = -log_ratio
    if kind == "abs":
        return log_ratio.abs()
    if kind == "mse":
        return 0.5 * log_ratio**2
    raise ValueError(f"unknown KL estimator {kind!r}: use one of {KL_ESTIMATORS}")


def policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate loss, the fraction of tokens clipped, and approx KL(old || new)."""
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.max(pg_loss1, pg_loss2), mask)
    clipfrac = masked_mean((pg_loss2 > pg_loss1).to(logp.dtype), mask)
    approxkl = 0.5 * masked_mean(log_ratio**2, mask)  # the "mse" estimator, as in old TRL
    return loss, clipfrac, approxkl


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip_range_value: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss 0.5 * max((V - R)^2, (V_clipped - R)^2) and the fraction clipped."""
    values_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    v_loss_unclipped = (values - returns) ** 2
    v_loss_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(v_loss_unclipped, v_loss_clipped), mask)
    vf_clipfrac = masked_mean((v_loss_clipped > v_loss_unclipped).to(values.dtype), mask)
    return loss, vf_clipfrac


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) over the last dimension: logsumexp(z) - sum p * z."""
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] at each position: logits (..., V) and tokens (...) give (...)."""
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


class _LogprobsAndEntropy(torch.autograd.Function):
    """`token_logprobs` and `entropy_from_logits` in one pass over the logits, with their gradient written
    out: d log p_k / dz = onehot(k) - p and dH / dz = -p * (log p + H). Autograd through the two separate
    functions makes a dozen temporaries the size of the logits; this makes two."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, tokens: torch.Tensor):
        lse = torch.logsumexp(logits, dim=-1)
        entropy = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
        logp = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - lse
        ctx.save_for_backward(logits, tokens, lse, entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp: torch.Tensor, grad_entropy: torch.Tensor):
        logits, tokens, lse, entropy = ctx.saved_tensors
        log_probs = logits - lse.unsqueeze(-1)
        probs = log_probs.exp()
        # -p * (g_logp + g_H * (log p + H)), in place, then + g_logp on the sampled token
        grad = log_probs.mul_(-grad_entropy.unsqueeze(-1))
        grad.sub_((grad_logp + grad_entropy * entropy).unsqueeze(-1)).mul_(probs)
        grad.scatter_add_(-1, tokens.unsqueeze(-1), grad_logp.unsqueeze(-1).to(grad.dtype))
        return grad, None


def logprobs_and_entropy(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(token_logprobs(logits, tokens), entropy_from_logits(logits)), computed together: the update needs
    both, and on a small model their passes over the (..., V) logits cost as much as a layer."""
    return _LogprobsAndEntropy.apply(logits, tokens)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var(R - V) / Var(R): 1 is a perfect critic, 0 no better than a constant, < 0 worse."""
    var_returns = masked_var(returns, mask, unbiased=False)
    return 1.0 - masked_var(returns - values, mask, unbiased=False) / var_returns.clamp(min=1e-8)


def truncate_after_eos(
    response_ids: torch.Tensor, eos_id: int | None, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep each response up to and including its first EOS; pad the rest. Returns (ids, mask)."""
    if eos_id is None:
        return response_ids, torch.ones_like(response_ids, dtype=torch.bool)
    is_eos = (response_ids == eos_id).long()
    eos_before = is_eos.cumsum(dim=1) - is_eos  # EOS tokens strictly before each position
    mask = eos_before == 0
    return torch.where(mask, response_ids, torch.full_like(response_ids, pad_id)), mask


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Logits with everything outside the top-p nucleus set to -inf (the top token always stays)."""
    sorted_logits, order = torch.sort(logits, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    outside = probs.cumsum(-1) - probs >= top_p  # the nucleus is already full before this token (as HF)
    sorted_logits = sorted_logits.masked_fill(outside, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


class FixedKLController:
    """beta stays at its initial value."""

    def __init__(self, init_kl_coef: float):
        self.value = init_kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


class AdaptiveKLController(FixedKLController):
    """Ziegler et al. 2019, section 2.2: move beta so that the measured KL tracks `target`.

    error = clip(KL / target - 1, -0.2, 0.2); beta <- beta * (1 + error * n_steps / horizon).
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        super().__init__(init_kl_coef)
        self.target, self.horizon = target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + proportional_error * n_steps / self.horizon
