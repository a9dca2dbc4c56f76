"""PPO tensor maths on hand-written tensors."""

from __future__ import annotations

import math

import pytest
import torch

from labkit import ppo_math
from labkit.ppo_math import (
    entropy_from_logits,
    explained_variance,
    gae,
    kl_penalty,
    logprobs_and_entropy,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    truncate_after_eos,
    value_loss,
)

X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])


def test_all_names_exist():
    """Every name in __all__ is defined."""
    assert all(hasattr(ppo_math, name) for name in ppo_math.__all__)


def test_masked_mean_everything_and_per_row():
    """Masked entries are ignored, over the whole tensor or per row."""
    assert torch.isclose(masked_mean(X, MASK), torch.tensor(7.0 / 3))
    assert torch.allclose(masked_mean(X, MASK, dim=1), torch.tensor([1.5, 4.0]))
    assert torch.allclose(masked_mean(X, torch.zeros_like(MASK), dim=1), torch.zeros(2))


def test_masked_var_matches_torch_var_on_the_kept_entries():
    """Unbiased and biased variances equal torch.var of the unmasked values."""
    kept = torch.tensor([1.0, 2.0, 4.0])
    assert torch.isclose(masked_var(X, MASK), kept.var(unbiased=True))
    assert torch.isclose(masked_var(X, MASK, unbiased=False), kept.var(unbiased=False))
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(X, torch.tensor([[1, 0, 0], [0, 0, 0]]))


def test_masked_whiten_centres_and_scales():
    """Whitened entries have mean 0 and variance 1; shift_mean=False keeps the mean."""
    white = masked_whiten(X, MASK)
    assert torch.isclose(masked_mean(white, MASK), torch.tensor(0.0), atol=1e-6)
    assert torch.isclose(masked_var(white, MASK), torch.tensor(1.0), atol=1e-5)
    kept = masked_whiten(X, MASK, shift_mean=False)
    assert torch.isclose(masked_mean(kept, MASK), masked_mean(X, MASK), atol=1e-5)


def _gae_reference(rewards, values, lengths, gamma, lam):
    """The textbook reversed loop, one sequence at a time, in plain python floats."""
    B, T = len(rewards), len(rewards[0])
    adv = [[0.0] * T for _ in range(B)]
    for b in range(B):
        last = 0.0
        for t in reversed(range(lengths[b])):
            next_value = values[b][t + 1] if t + 1 < lengths[b] else 0.0
            delta = rewards[b][t] + gamma * next_value - values[b][t]
            last = delta + gamma * lam * last
            adv[b][t] = last
    ret = [[adv[b][t] + values[b][t] if t < lengths[b] else 0.0 for t in range(T)] for b in range(B)]
    return adv, ret


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0)])
def test_gae_matches_python_loop(gamma, lam):
    """The vectorised GAE equals the reversed python loop for ragged lengths."""
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    lengths = [6, 3, 1, 5]
    mask = torch.tensor([[t < n for t in range(6)] for n in lengths])
    adv, ret = gae(rewards, values, mask, gamma, lam)
    ref_adv, ref_ret = _gae_reference(rewards.tolist(), values.tolist(), lengths, gamma, lam)
    assert torch.allclose(adv, torch.tensor(ref_adv), atol=1e-5)
    assert torch.allclose(ret, torch.tensor(ref_ret), atol=1e-5)


def test_gae_with_gamma_lam_one_is_reward_to_go():
    """With gamma = lambda = 1 the return is the sum of the rewards still to come."""
    rewards = torch.tensor([[0.0, 0.0, 1.0, 9.0]])
    values = torch.tensor([[0.5, 0.5, 0.5, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, 1.0, 1.0)
    assert ret.tolist() == [[1.0, 1.0, 1.0, 0.0]]
    assert adv.tolist() == [[0.5, 0.5, 0.5, 0.0]]


def test_kl_estimators():
    """k1 is the log ratio, k3 is (r - 1) - log r and never negative, abs and mse as named."""
    logp, ref = torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-1.5, -1.0, -0.5])
    log_ratio = logp - ref
    assert torch.allclose(kl_penalty(logp, ref, "k1"), log_ratio)
    r = torch.exp(ref - logp)
    assert torch.allclose(kl_penalty(logp, ref, "k3"), (r - 1) - torch.log(r))
    assert (kl_penalty(torch.randn(100), torch.randn(100), "k3") >= 0).all()
    assert torch.allclose(kl_penalty(logp, ref, "abs"), log_ratio.abs())
    assert torch.allclose(kl_penalty(logp, ref, "mse"), 0.5 * log_ratio**2)
    with pytest.raises(ValueError, match="unknown KL estimator 'k2'"):
        kl_penalty(logp, ref, "k2")


def test_policy_loss_unclipped_and_clipped():
    """At ratio 1 the loss is -mean(A); a ratio above 1 + eps with A > 0 is clipped to 1 + eps."""
    adv, mask = torch.tensor([[1.0, -2.0, 5.0]]), torch.tensor([[1, 1, 0]])
    same = torch.zeros(1, 3)
    loss, clipfrac, approxkl = policy_loss(same, same, adv, mask, 0.2)
    assert (loss.item(), clipfrac.item(), approxkl.item()) == (0.5, 0.0, 0.0)

    logp = torch.tensor([[0.5, 0.5, 0.5]])  # ratio e^0.5 = 1.65 on every token
    loss, clipfrac, approxkl = policy_loss(logp, same, adv, mask, 0.2)
    # token 0: A=1: max(-1.65, -1.2) = -1.2 (clipped); token 1: A=-2: max(3.30, 2.4) = 3.30 (not clipped)
    assert math.isclose(loss.item(), (-1.2 + 2 * math.exp(0.5)) / 2, rel_tol=1e-6)
    assert clipfrac.item() == 0.5
    assert math.isclose(approxkl.item(), 0.125, rel_tol=1e-6)


def test_value_loss_clips_big_moves():
    """A value that moved more than the clip range from its old value pays the clipped loss."""
    old, returns, mask = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0]]), torch.tensor([[1, 1]])
    values = torch.tensor([[0.1, 2.0]])
    loss, clipfrac = value_loss(values, old, returns, mask, 0.2)
    # token 0: moved 0.1 (inside): (0.1-1)^2 = 0.81; token 1: unclipped (2-1)^2 = 1, clipped (0.2-1)^2 = 0.64 -> max 1
    assert math.isclose(loss.item(), 0.5 * (0.81 + 1.0) / 2, rel_tol=1e-6)
    assert clipfrac.item() == 0.0
    values = torch.tensor([[0.1, 0.6]])  # token 1 clipped to 0.2: (0.2-1)^2 = 0.64 > (0.6-1)^2 = 0.16
    loss, clipfrac = value_loss(values, old, returns, mask, 0.2)
    assert math.isclose(loss.item(), 0.5 * (0.81 + 0.64) / 2, rel_tol=1e-6)
    assert clipfrac.item() == 0.5


def test_entropy_from_logits():
    """Uniform logits give log V; the result equals torch's Categorical entropy."""
    assert torch.isclose(entropy_from_logits(torch.zeros(7)), torch.tensor(math.log(7)))
    logits = torch.randn(3, 5, 11, generator=torch.Generator().manual_seed(1)) * 3
    expected = torch.distributions.Categorical(logits=logits).entropy()
    assert torch.allclose(entropy_from_logits(logits), expected, atol=1e-5)


def test_logprobs_and_entropy_match_the_separate_functions_and_their_gradients():
    """The fused pass gives token_logprobs and entropy_from_logits, and autograd's gradient of any mix of them."""
    rng = torch.Generator().manual_seed(3)
    logits = (torch.randn(2, 5, 13, generator=rng, dtype=torch.float64) * 3).requires_grad_()
    tokens = torch.randint(0, 13, (2, 5), generator=rng)
    logp, entropy = logprobs_and_entropy(logits, tokens)
    torch.testing.assert_close(logp, ppo_math.token_logprobs(logits, tokens))
    torch.testing.assert_close(entropy, entropy_from_logits(logits))
    assert torch.autograd.gradcheck(lambda z: logprobs_and_entropy(z, tokens), (logits,))
    weights = (
        torch.randn(2, 5, generator=rng, dtype=torch.float64),
        torch.randn(2, 5, generator=rng, dtype=torch.float64),
    )
    (grad,) = torch.autograd.grad((logp * weights[0] + entropy * weights[1]).sum(), logits)
    separate = ppo_math.token_logprobs(logits, tokens) * weights[0] + entropy_from_logits(logits) * weights[1]
    (expected,) = torch.autograd.grad(separate.sum(), logits)
    torch.testing.assert_close(grad, expected)


def test_truncate_after_eos_keeps_first_eos_and_pads_rest():
    """Everything after the first EOS becomes padding and leaves the mask."""
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 3, 3, 3]])
    out, mask = truncate_after_eos(ids, eos_id=2, pad_id=0)
    assert out.tolist() == [[5, 2, 0, 0], [5, 6, 7, 8], [2, 0, 0, 0]]
    assert mask.int().tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_truncate_after_eos_when_pad_is_eos():
    """A tokenizer whose pad token is its EOS still keeps exactly the first EOS."""
    out, mask = truncate_after_eos(torch.tensor([[4, 2, 2, 2]]), eos_id=2, pad_id=2)
    assert (out.tolist(), mask.int().tolist()) == ([[4, 2, 2, 2]], [[1, 1, 0, 0]])


def test_explained_variance():
    """A perfect critic explains everything; a constant one explains nothing."""
    returns, mask = torch.tensor([[1.0, 2.0, 3.0]]), torch.ones(1, 3)
    assert explained_variance(returns, returns, mask).item() == 1.0
    assert abs(explained_variance(torch.full((1, 3), 2.0), returns, mask).item()) < 1e-6


def test_top_p_filter_keeps_the_nucleus():
    """With probabilities (0.5, 0.3, 0.2), top_p 0.7 keeps two tokens and top_p 0.5 keeps one, as HF does."""
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    kept = lambda p: torch.isfinite(ppo_math.top_p_filter(logits, p)).int().tolist()  # noqa: E731
    assert kept(0.7) == [[0, 1, 1]]
    assert kept(0.5) == [[0, 1, 0]]
    assert kept(1.0) == [[1, 1, 1]]
