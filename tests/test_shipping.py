"""labkit.shipping: merge the adapters, save with a model card, reload, same tokens."""

import pytest
import torch
from conftest import make_tiny_lm

from labkit import shipping
from labkit.models import add_lora

PROMPTS = ["hello there", "tell me about rain", "be kind"]


def trained_adapter(tokenizer):
    """A peft model whose adapters really change the outputs (LoRA's B starts at zero: set it)."""
    model = add_lora(make_tiny_lm(tokenizer), r=4)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model.eval()


def card(**over):
    values = dict(
        base_model="labkit tiny",
        method="ppo",
        data="the tiny world's train prompts",
        reward="preference RM",
        kl=1.5,
        evaluation={"toxic share": 0.03},
    )
    return shipping.ModelCard(**{**values, **over})


def test_shipped_model_reloads_without_peft_and_generates_the_adapters_tokens(tiny_tokenizer, tmp_path):
    """The merged, saved, reloaded model is a plain transformers model whose greedy tokens equal the adapter's."""
    from transformers import AutoModelForCausalLM

    model = trained_adapter(tiny_tokenizer)
    report = shipping.ship(model, tiny_tokenizer, tmp_path / "shipped", card(), PROMPTS, max_new_tokens=12)
    assert report.same_tokens and report.first_difference is None
    assert report.prompts_checked == 3
    assert report.max_logit_diff < 1e-4
    files = {p.name for p in (tmp_path / "shipped").iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= files
    assert not files & {"adapter_config.json", "pytorch_model.bin"}  # merged, and nothing to unpickle
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "shipped")
    assert not hasattr(reloaded, "peft_config")
    base = make_tiny_lm(tiny_tokenizer)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(reloaded.state_dict()[q], base.state_dict()[q])  # the adapters are in the weights
    assert hasattr(model, "peft_config")  # the adapter model given is left as it was


def test_ship_reports_a_difference_when_the_saved_weights_differ(tiny_tokenizer, tmp_path, monkeypatch):
    """The check can fail: if merging went wrong, the report says so and shows the first differing prompt."""
    model = trained_adapter(tiny_tokenizer)
    real_merge = shipping.merge

    def broken_merge(m):
        merged = real_merge(m)
        with torch.no_grad():
            merged.lm_head.weight.add_(torch.randn_like(merged.lm_head.weight))
        return merged

    monkeypatch.setattr(shipping, "merge", broken_merge)
    report = shipping.ship(model, tiny_tokenizer, tmp_path / "shipped", card(), PROMPTS, max_new_tokens=12)
    assert not report.same_tokens
    assert report.first_difference["prompt"] in PROMPTS
    assert report.max_logit_diff > 1e-2


def test_model_card_metadata_round_trips(tiny_tokenizer, tmp_path):
    """README.md opens with YAML that read_card gives back: base model, data, reward, KL, evaluation."""
    shipping.ship(trained_adapter(tiny_tokenizer), tiny_tokenizer, tmp_path / "m", card(), PROMPTS, max_new_tokens=4)
    meta = shipping.read_card(tmp_path / "m")
    assert meta == card().metadata()
    assert meta["base_model"] == "labkit tiny"
    assert meta["labkit"]["kl_nats"] == 1.5
    assert meta["labkit"]["evaluation"] == {"toxic share": 0.03}
    text = (tmp_path / "m" / "README.md").read_text()
    assert "| toxic share | 0.03 |" in text


def test_ship_keeps_an_existing_folder(tiny_tokenizer, tmp_path):
    """An existing folder is an error unless overwrite=True, and its contents are left alone."""
    target = tmp_path / "shipped"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        shipping.ship(trained_adapter(tiny_tokenizer), tiny_tokenizer, target, card(), PROMPTS)
    assert (target / "keep.txt").read_text() == "mine"


def test_merge_needs_adapters(tiny_tokenizer):
    """A plain model has nothing to merge: the error says to save it as it is."""
    with pytest.raises(ValueError, match="nothing to merge"):
        shipping.merge(make_tiny_lm(tiny_tokenizer))


def test_read_card_without_front_matter_is_a_clear_error(tmp_path):
    (tmp_path / "README.md").write_text("# just a title\n")
    with pytest.raises(ValueError, match="YAML front matter"):
        shipping.read_card(tmp_path)
