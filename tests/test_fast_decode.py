"""labkit.fast_decode: the rollout's Llama decoder computes what the model's own forward computes."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_lm
from transformers import GPT2Config, GPT2LMHeadModel

from labkit import fast_decode, models, ppo, ppo_math

PROMPTS = ["<s><|user|>Hi<|assistant|>", "<s><|user|>Tell me more about it<|assistant|>", "<s><|user|>Why<|assistant|>"]


def llama(tokenizer, **overrides):
    """A random Llama with grouped-query attention (4 query heads share 2 key/value heads) unless overridden."""
    return make_tiny_lm(tokenizer, **{"num_key_value_heads": 2, **overrides})


def batch(tokenizer):
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    assert (enc["attention_mask"] == 0).any(), "the prompts must differ in length, so that some rows are padded"
    return enc["input_ids"], enc["attention_mask"]


def decode_both(model, ids, mask, steps=5):
    """Feed the same tokens to LlamaDecoder and to the model's own forward; return both (logits, hidden) lists."""
    lean = fast_decode.decoder_for(model)
    assert lean is not None
    own = ppo._ModelDecoder(model, with_states=True)
    results = ([lean.start(ids, mask, steps)], [own.start(ids, mask, steps)])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(steps):
            token = torch.randint(3, model.config.vocab_size, (ids.shape[0],), generator=generator)
            results[0].append(lean.next(token))
            results[1].append(own.next(token))
    return results


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_decoder_matches_the_models_own_forward(tiny_tokenizer, kv_heads):
    """Left-padded prompts of different lengths, then five tokens: the same logits and last hidden states as
    transformers' LlamaForCausalLM with its KV cache, with and without grouped-query attention."""
    model = llama(tiny_tokenizer, num_key_value_heads=kv_heads)
    ids, mask = batch(tiny_tokenizer)
    with torch.no_grad():
        lean, own = decode_both(model, ids, mask)
    for (lean_logits, lean_hidden), (own_logits, own_hidden) in zip(lean, own, strict=True):
        torch.testing.assert_close(lean_logits, own_logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lean_hidden, own_hidden, atol=1e-5, rtol=1e-5)


def test_sampling_is_the_same_with_either_decoder(tiny_tokenizer):
    """sample_responses draws the same tokens from the same stream with either decoder, with the same
    log-probs and hidden states (what PPO's rollout keeps), and stops at EOS the same way."""
    model = make_tiny_lm(tiny_tokenizer)
    ids, mask = batch(tiny_tokenizer)
    args = (model, ids, mask, 12, tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id, 0.8)
    runs = [
        ppo.sample_responses(*args, generator=torch.Generator().manual_seed(5), with_states=True, decoder=d)
        for d in ppo.DECODERS
    ]
    (ids_a, logp_a, hidden_a), (ids_b, logp_b, hidden_b) = runs
    assert torch.equal(ids_a, ids_b)
    torch.testing.assert_close(logp_a, logp_b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hidden_a, hidden_b, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="decoder must be one of"):
        ppo.sample_responses(*args, decoder="vllm")


@pytest.mark.parametrize("streams", ["one", "per_row"])
def test_ended_replies_leave_the_batch_and_change_nothing(tiny_tokenizer, monkeypatch, streams):
    """The decoder drops replies that have ended (copying its cache once a quarter of those it holds have):
    every row's tokens, and its log-probs and hidden states up to its end, are those of decoding all rows to
    the end with the model's own forward, from one random stream or from one per row."""
    model = make_tiny_lm(tiny_tokenizer)
    enc = tiny_tokenizer(
        [f"<s><|user|>{w}<|assistant|>" for w in "Hi Why How What Tell Show Give Name".split()],
        return_tensors="pt",
        padding=True,
        padding_side="left",
        add_special_tokens=False,
    )
    ids, mask = enc["input_ids"], enc["attention_mask"]

    def generator():
        if streams == "one":
            return torch.Generator().manual_seed(2)
        return [torch.Generator().manual_seed(100 + row) for row in range(len(ids))]

    pad = tiny_tokenizer.pad_token_id
    free = ppo.sample_responses(model, ids, mask, 16, None, pad, generator=generator(), decoder="transformers")
    counts = torch.bincount(free[:, :-1].flatten(), minlength=model.config.vocab_size)
    eos = int(counts.argmax())  # the token drawn most often: called EOS, it ends replies at different lengths
    kept = []
    monkeypatch.setattr(
        fast_decode.LlamaDecoder,
        "keep",
        lambda self, rows, _keep=fast_decode.LlamaDecoder.keep: (kept.append(len(rows)), _keep(self, rows)),
    )
    runs = [
        ppo.sample_responses(model, ids, mask, 16, eos, pad, generator=generator(), with_states=True, decoder=d)
        for d in ppo.DECODERS
    ]
    assert kept, "no reply ended early enough for the decoder to drop one: the test would check nothing"
    (ids_a, logp_a, hidden_a), (ids_b, logp_b, hidden_b) = runs
    assert torch.equal(ids_a, ids_b)
    _, valid = ppo_math.truncate_after_eos(ids_a, eos, pad)
    assert not valid.all() and valid.any(dim=1).all()
    torch.testing.assert_close(logp_a[valid], logp_b[valid], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hidden_a[valid], hidden_b[valid], atol=1e-5, rtol=1e-5)


def test_lora_merged_or_off_and_never_half_applied(tiny_tokenizer):
    """With LoRA adapters active and not merged the decoder does not apply (None: the caller uses the model's
    forward). Merged, it computes the adapted policy; switched off, the base model (PPO's reference)."""
    base = llama(tiny_tokenizer)
    ids, mask = batch(tiny_tokenizer)
    with torch.no_grad():
        want_base = base(input_ids=ids, attention_mask=mask, position_ids=models.position_ids(mask)).logits[:, -1]
    policy = models.add_lora(base, r=4, alpha=8, dropout=0.0)
    with torch.no_grad():  # peft starts B at zero, which would make the adapters a no-op: give them weight
        for name, weight in policy.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.2)
        want_policy = policy(input_ids=ids, attention_mask=mask, position_ids=models.position_ids(mask)).logits[:, -1]
    assert (want_policy - want_base).abs().max() > 1e-2, (
        "the adapters must change the output for this test to mean anything"
    )
    assert fast_decode.decoder_for(policy) is None
    with torch.no_grad():
        with models.merged_adapter(policy):
            merged = fast_decode.decoder_for(policy).start(ids, mask, 1)[0]
        with models.disabled_adapter(policy):
            off = fast_decode.decoder_for(policy).start(ids, mask, 1)[0]
    torch.testing.assert_close(merged, want_policy, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(off, want_base, atol=1e-5, rtol=1e-5)


def test_other_models_use_their_own_forward(tiny_tokenizer):
    """Architectures and options the decoder does not compute get None, and sampling still works through the
    model's own forward."""
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=2, n_head=4)).eval()
    others = [
        gpt2,
        llama(tiny_tokenizer, attention_bias=True),
        llama(tiny_tokenizer, mlp_bias=True),
        llama(tiny_tokenizer, hidden_act="gelu"),
        llama(tiny_tokenizer, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
    ]
    for model in others:
        assert fast_decode.decoder_for(model) is None, model.config
    ids, mask = batch(tiny_tokenizer)
    out = ppo.sample_responses(gpt2, ids, mask, 4, None, tiny_tokenizer.pad_token_id, generator=torch.Generator())
    assert out.shape == (len(PROMPTS), 4)


def test_decoder_refuses_tokens_past_its_cache(tiny_tokenizer):
    ids, mask = batch(tiny_tokenizer)
    lean = fast_decode.decoder_for(llama(tiny_tokenizer))
    with pytest.raises(RuntimeError, match="call start"):
        lean.next(torch.ones(len(PROMPTS), dtype=torch.long))
    with torch.no_grad():
        lean.start(ids, mask, 1)
        lean.next(torch.ones(len(PROMPTS), dtype=torch.long))
        with pytest.raises(RuntimeError, match="at most max_new_tokens"):
            lean.next(torch.ones(len(PROMPTS), dtype=torch.long))


def test_config_names_the_decoders():
    assert ppo.PPOConfig(decoder="transformers").decoder == "transformers"
    with pytest.raises(ValueError, match="decoder must be one of"):
        ppo.PPOConfig(decoder="fast")
