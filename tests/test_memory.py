"""labkit.memory: the storage tracker, the PPO step's measured peak, and the estimator."""

import gc

import pytest
import torch
from conftest import make_tiny_lm

from labkit import memory
from labkit.ppo import PPOConfig

PROMPTS = ["hello", "tell me a joke", "what is rain?", "be kind"]


def cfg(lora: bool) -> PPOConfig:
    return PPOConfig(
        batch_size=8,
        mini_batch_size=4,
        max_new_tokens=8,
        lora=lora,
        log_every=0,
        sample_table_every=0,
        checkpoint_every=0,
    )


def test_tracker_counts_what_is_alive_and_keeps_the_peak_breakdown():
    """Registered tensors count from the start; a freed tensor stops counting; the peak remembers who was alive."""
    tracker = memory.StorageTracker()
    weight = torch.zeros(1000)  # 4,000 bytes
    tracker.register([weight], "weights")
    assert tracker.current == 4000
    with tracker:
        big = torch.ones(2000) * 2  # 8,000 bytes of activations (ones() and the product: two storages)
        del big
        gc.collect()
        small = torch.ones(10) + 1
    assert tracker.current == 4000 + 40  # ones(10) was a temporary: only the sum is alive
    assert tracker.peak == 4000 + 16000
    assert tracker.peak_breakdown() == {**dict.fromkeys(memory.CATEGORIES, 0), "weights": 4000, "activations": 16000}
    del small


def test_relabel_after_the_peak_still_moves_the_bytes():
    """A storage relabelled (as a gradient is, after backward made it) counts in its new category at the peak."""
    tracker = memory.StorageTracker()
    with tracker:
        grad = torch.ones(100) * 3
    tracker.relabel(grad, "gradients")
    # at the peak, ones(100) and the product were both alive: only the product is the gradient
    assert tracker.peak_breakdown()["gradients"] == 400
    assert tracker.peak_breakdown()["activations"] == 400


def test_model_shape_counts_a_llamas_parameters(tiny_tokenizer):
    """ModelShape.from_config gives the exact parameter count of a real Llama, tied embeddings or not."""
    model = make_tiny_lm(tiny_tokenizer)
    assert memory.ModelShape.from_config(model.config).params == sum(p.numel() for p in model.parameters())


def test_lora_params_match_peft(tiny_tokenizer):
    """lora_params predicts what peft puts on every linear layer at rank r."""
    from labkit.models import add_lora

    model = make_tiny_lm(tiny_tokenizer)
    shape = memory.ModelShape.from_config(model.config)
    peft_model = add_lora(model, r=4)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert memory.lora_params(shape, 4) == trainable


def test_estimate_full_fine_tuning_pays_for_a_reference_gradients_and_adam():
    """Full fine-tuning: reference = weights, AdamW = 2 x trainable fp32; LoRA has no reference and a far
    smaller optimizer."""
    shape = memory.ModelShape(params=1_000_000, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=4, vocab=100)
    kw = dict(batch_size=4, mini_batch_size=4, prompt_tokens=8, max_new_tokens=8)
    full, lora = memory.estimate(shape, lora=False, **kw), memory.estimate(shape, lora=True, **kw)
    assert full["reference"] == full["weights"] == 4_000_000
    assert full["optimizer"] == 2 * (1_000_000 + 65) * 4
    assert lora["reference"] == 0
    assert lora["optimizer"] == 2 * (memory.lora_params(shape, 8) + 65) * 4
    assert lora["total"] < full["total"]
    assert full["total"] == sum(full[k] for k in memory.CATEGORIES)


def test_estimate_ratio_rises_toward_one_as_activations_grow():
    """The LoRA/full ratio is lowest with short sequences and climbs as activations take over."""
    shape = memory.ModelShape(
        params=10_000_000, hidden=256, intermediate=512, layers=4, heads=4, kv_heads=4, vocab=1000
    )

    def ratio(seq):
        kw = dict(batch_size=8, mini_batch_size=8, prompt_tokens=seq, max_new_tokens=seq)
        return memory.estimate(shape, lora=True, **kw)["total"] / memory.estimate(shape, lora=False, **kw)["total"]

    assert ratio(8) < ratio(128) < ratio(1024) < 1


@pytest.mark.parametrize("lora", [True, False])
def test_measured_ppo_step_breakdown(tiny_tokenizer, lora):
    """One real PPO step: the breakdown sums to the peak, weights and reference are the model's bytes,
    AdamW's moments are twice the trainable parameters, and the estimate lands near the measurement."""
    model = make_tiny_lm(tiny_tokenizer, hidden=64)
    params = sum(p.numel() for p in model.parameters())
    report = memory.measure_ppo_step(model, tiny_tokenizer, PROMPTS, cfg(lora))
    b = report.breakdown
    assert sum(b.values()) == report.peak_bytes
    assert b["reference"] == (0 if lora else params * 4)
    assert b["weights"] >= params * 4
    assert 2 * report.trainable_params * 4 <= b["optimizer"] < 2 * report.trainable_params * 4 + 4096  # + step counters
    assert b["activations"] > 0
    assert report.trainable_params < params if lora else report.trainable_params > params
    shape = memory.ModelShape.from_config(model.config)
    predicted = memory.estimate(
        shape, lora=lora, batch_size=8, mini_batch_size=4, prompt_tokens=report.prompt_tokens, max_new_tokens=8
    )
    assert predicted["total"] == pytest.approx(report.peak_bytes, rel=0.5)


def test_lora_step_peaks_lower_than_full_fine_tuning(tiny_tokenizer):
    """The measured saving exists: LoRA's step holds fewer bytes than full fine-tuning's on the same model."""
    lora = memory.measure_ppo_step(make_tiny_lm(tiny_tokenizer, hidden=64), tiny_tokenizer, PROMPTS, cfg(True))
    full = memory.measure_ppo_step(make_tiny_lm(tiny_tokenizer, hidden=64), tiny_tokenizer, PROMPTS, cfg(False))
    assert lora.peak_bytes < full.peak_bytes
