"""DPO: fine-tune the policy directly on preference pairs, with no reward model and no sampling.

Inputs: a policy and its tokenizer, a pairs dataset (`datasets.Dataset` or a `DatasetDict` with
train/test splits; columns prompt, chosen, rejected as plain strings) and a `LabDPOConfig`.
Output: the policy with a trained LoRA adapter, and a flat metrics dict.

Direct Preference Optimization (Rafailov et al. 2023): the policy's log-ratio to a frozen
reference is an implicit reward, r(x, y) = beta * log(pi(y|x) / pi_ref(y|x)), and the loss is
the Bradley-Terry loss on it, -log sigmoid(r(x, y_chosen) - r(x, y_rejected)). TRL's DPOTrainer
(trl 1.16) runs it; with LoRA the reference is the same network with its adapter disabled.

The prompt format: TRL 1.16 tokenises a plain-string prompt as is (no chat template) and appends
EOS to the completions, so plain strings would train a format the policy never generates in. We
hand TRL the conversational form instead ([{"role": "user", ...}] / [{"role": "assistant", ...}]);
it then renders prompt and prompt+reply with the policy's chat template, exactly the text
`models.chat_prompts` feeds to `generate`, with no second BOS and the template's own end token.
A model without a chat template gets plain strings in `chat_prompts`' dialogue frame (`trl_pairs`).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from labkit.artifacts import atomic_folder, write_json, write_manifest
from labkit.models import chat_prompts

__all__ = [
    "LabDPOConfig",
    "dpo_loss",
    "dpo_stage",
    "implicit_reward",
    "make_trainer",
    "plot_history",
    "to_conversational",
    "train_dpo",
    "trl_pairs",
]


@dataclass
class LabDPOConfig:
    """DPO settings (the TRL options a learner turns; the rest keep TRL's defaults)."""

    beta: float = 0.1
    """Strength of the implicit KL leash: higher stays closer to the reference (Rafailov et al. use 0.1)."""
    learning_rate: float = 2e-3
    """AdamW learning rate for the LoRA weights (TRL's 1e-6 default is meant for full fine-tuning, not adapters)."""
    epochs: float = 1.0
    """Passes over the training pairs (used only when max_steps is -1)."""
    max_steps: int = 150
    """Optimizer steps; -1 means run `epochs` epochs. 150 steps of 8 pairs are about 0.4 epoch of the shipped
    rankings' train pairs (2,924 of them: benchmarks/results/reward_model.json)."""
    batch_size: int = 8
    """Pairs per optimizer step (per device)."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scale numerator (the update is scaled by alpha / r)."""
    loss_type: str = "sigmoid"
    """TRL loss: "sigmoid" is DPO; "ipo", "hinge", "robust" ... are its variants."""
    max_length: int = 256
    """Longest prompt + reply in tokens; longer pairs are truncated at the end."""
    prompting: str = "chat"
    """How the policy is prompted (`models.render_prompts`): "chat", or "plain" (prompt and continuation as one
    text, the continuation keeping its leading space)."""
    test_pairs: int | None = 256
    """Held-out pairs scored after training for test accuracy and margin (a seeded sample; None: all of them).
    On SmolLM2 on a CPU each pair costs about 0.4 s, so all 827 of the smol preset's took 5 minutes."""
    probe_pairs: int = 64
    """Training pairs re-scored before and after training to report the implicit reward margin."""
    seed: int = 0
    """Seed for LoRA init, shuffling and dropout."""
    output_dir: str | None = None
    """Where to save the adapter, log and manifest; None keeps nothing on disk."""
    progress: bool = False
    """Show TRL's progress bar."""


# -- the maths, in two small functions (TRL computes the same; these are for the chapter) -------


def implicit_reward(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO's implicit reward beta * (log pi(y|x) - log pi_ref(y|x)) per sequence."""
    return beta * (policy_logps - ref_logps)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Mean sigmoid DPO loss -log sigmoid(r_chosen - r_rejected) over a batch of sequence log-probs."""
    margin = implicit_reward(policy_chosen, ref_chosen, beta) - implicit_reward(policy_rejected, ref_rejected, beta)
    return -F.logsigmoid(margin).mean()


# -- data --------------------------------------------------------------------------------------


def _check_pairs(dataset, tokenizer, split: str) -> None:
    missing = {"prompt", "chosen", "rejected"} - set(dataset.column_names)
    if missing:
        raise ValueError(
            f"pairs[{split!r}] lacks column(s) {sorted(missing)}; DPO needs prompt, chosen and "
            f"rejected (it has {dataset.column_names}); build it with the pairs stage"
        )
    if len(dataset) == 0:
        raise ValueError(f"pairs[{split!r}] is empty; DPO needs at least one (prompt, chosen, rejected) pair")
    first = dataset[0]["prompt"]
    if isinstance(first, str):
        specials = [t for t in tokenizer.all_special_tokens if t and t != tokenizer.pad_token and t in first]
        if specials:
            raise ValueError(
                f"pairs[{split!r}] prompts already contain special tokens {specials}: pass the raw user "
                "prompt; the chat template is applied for you (otherwise BOS and role tags double)"
            )


def to_conversational(dataset):
    """Plain-string prompt/chosen/rejected -> TRL's conversational preference format."""

    def convert(row):
        if not isinstance(row["prompt"], str):  # already conversational
            return row
        return {
            "prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}],
        }

    keep = {"prompt", "chosen", "rejected"}
    return dataset.remove_columns([c for c in dataset.column_names if c not in keep]).map(convert)


def trl_pairs(dataset, tokenizer, prompting: str = "chat"):
    """The pairs as TRL should see them, so DPO trains on the very text the policy is sampled from:
    the conversational form where the tokenizer has a chat template (`to_conversational`); otherwise
    plain strings, the prompt already in the dialogue frame `models.chat_prompts` gives a model without
    a template ("User: ...\nAssistant:") and each reply after a space (TRL appends EOS to it).
    With `prompting="plain"` the prompt is the text to continue and each reply is its continuation as
    sampled (leading space kept; a reply without one gets none)."""
    if prompting == "plain":
        keep = {"prompt", "chosen", "rejected"}
        return dataset.remove_columns([c for c in dataset.column_names if c not in keep])
    if getattr(tokenizer, "chat_template", None):
        return to_conversational(dataset)

    def frame(row):
        return {
            "prompt": chat_prompts(tokenizer, [row["prompt"]])[0],
            "chosen": " " + row["chosen"],
            "rejected": " " + row["rejected"],
        }

    keep = {"prompt", "chosen", "rejected"}
    return dataset.remove_columns([c for c in dataset.column_names if c not in keep]).map(frame)


def _splits(pairs):
    from datasets import Dataset, DatasetDict

    if isinstance(pairs, DatasetDict):
        if "train" not in pairs:
            raise ValueError(f"the pairs DatasetDict has splits {list(pairs)}; DPO trains on 'train'")
        return pairs["train"], pairs.get("test")
    if isinstance(pairs, Dataset):
        return pairs, None
    raise TypeError(f"pairs must be a datasets.Dataset or DatasetDict, got {type(pairs).__name__}")


# -- training ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet(enabled: bool):
    """Silence datasets' per-map progress bars (restored afterwards) when progress is off, and always
    the transformers v5 deprecation warnings that TRL and peft trigger (nothing a learner can act on)."""
    import datasets

    was_off = datasets.is_progress_bar_enabled() is False
    if enabled:
        datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
            yield
    finally:
        if enabled and not was_off:
            datasets.enable_progress_bars()


def make_trainer(model, tokenizer, train, cfg: LabDPOConfig, output_dir: str):
    """TRL's DPOTrainer for plain-string pairs `train`, with our config mapped onto DPOConfig."""
    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    _check_pairs(train, tokenizer, "train")
    device = next(model.parameters()).device
    args = DPOConfig(
        output_dir=output_dir,
        beta=cfg.beta,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        loss_type=[cfg.loss_type],
        max_length=cfg.max_length,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=1,
        gradient_checkpointing=False,
        activation_checkpointing=False,  # small models: recomputing is only slower
        bf16=device.type == "cuda" and torch.cuda.is_bf16_supported(),
        use_cpu=device.type == "cpu",
        disable_tqdm=not cfg.progress,
        dataloader_num_workers=0,
    )
    # A fresh LoRA adapter; a policy that already is a PeftModel is trained as is (TRL then keeps a
    # frozen copy of its adapter as the reference).
    lora = (
        None
        if hasattr(model, "peft_config")
        else LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=0.0,
            task_type="CAUSAL_LM",
            target_modules="all-linear",
        )
    )
    with _quiet(not cfg.progress):
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=trl_pairs(train, tokenizer, cfg.prompting),
            processing_class=tokenizer,
            peft_config=lora,
        )
    if not cfg.progress:
        trainer.remove_callback(PrinterCallback)
    return trainer


def train_dpo(model, tokenizer, pairs, cfg: LabDPOConfig | None = None):
    """Train a LoRA adapter on `model` with TRL's DPOTrainer; returns (peft model, metrics)."""
    cfg = cfg or LabDPOConfig()
    train, test = _splits(pairs)
    if test is not None and len(test) > 0:
        _check_pairs(test, tokenizer, "test")
    else:
        test = None
    # TRL needs an output_dir even with saving off; without cfg.output_dir it is a scratch folder,
    # removed whether training succeeds or fails.
    out_dir = cfg.output_dir or tempfile.mkdtemp(prefix="labkit-dpo-")
    try:
        # 1. the trainer, on the conversational form of the pairs (see module docstring)
        trainer = make_trainer(model, tokenizer, train, cfg, out_dir)
        with _quiet(not cfg.progress):
            probe = trl_pairs(train.select(range(min(cfg.probe_pairs, len(train)))), tokenizer, cfg.prompting)
            # 2. implicit reward margin on training pairs before training (0: policy == reference) ...
            #    (TRL's log() files its metrics under "eval_" whatever the prefix, in the returned dict)
            before = trainer.evaluate(eval_dataset=probe)
            # 3. ... train ...
            result = trainer.train()
            # 4. ... and after, on the same pairs and on held-out pairs
            after = trainer.evaluate(eval_dataset=probe)
            metrics = {
                "train_loss": float(result.training_loss),
                "steps": int(trainer.state.global_step),
                "train_pairs": len(train),
                "probe_pairs": len(probe),
                "margin_before": before["eval_rewards/margins"],
                "margin_after": after["eval_rewards/margins"],
                "accuracy_before": before["eval_rewards/accuracies"],
                "accuracy_after": after["eval_rewards/accuracies"],
                "probe_loss_before": before["eval_loss"],
                "probe_loss_after": after["eval_loss"],
            }
            if test is not None:
                if cfg.test_pairs is not None and len(test) > cfg.test_pairs:
                    test = test.shuffle(seed=cfg.seed).select(range(cfg.test_pairs))
                held = trainer.evaluate(eval_dataset=trl_pairs(test, tokenizer, cfg.prompting))
                metrics.update(
                    test_pairs=len(test),
                    test_margin=held["eval_rewards/margins"],
                    test_accuracy=held["eval_rewards/accuracies"],
                    test_loss=held["eval_loss"],
                )
    finally:
        if cfg.output_dir is None:
            shutil.rmtree(out_dir, ignore_errors=True)
    model = trainer.model.eval()
    history = trainer.state.log_history
    if cfg.output_dir is not None:
        _save(model, tokenizer, cfg, metrics, history)
    return model, metrics


def _save(model, tokenizer, cfg: LabDPOConfig, metrics: dict, history: list) -> None:
    folder = Path(cfg.output_dir)
    with atomic_folder(folder / "adapter") as tmp:  # a failed save never leaves half an adapter to load
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    write_json(folder / "metrics.json", metrics)
    write_json(folder / "log_history.json", history)
    write_manifest(folder, "dpo", config=asdict(cfg), seed=cfg.seed)


HISTORY_PANELS = (
    ("loss", "DPO loss (log 2 = no preference learnt)"),
    ("rewards/margins", "implicit reward margin r(chosen) - r(rejected)"),
    ("rewards/accuracies", "share of pairs with r(chosen) > r(rejected)"),
)


def plot_history(history: list[dict], smooth: int = 10):
    """TRL's training log (one dict per logged step) as three panels: loss, implicit margin, accuracy.

    Each panel shows the per-step values (faint) and their running mean over `smooth` steps: with a
    batch of 8 pairs, one step's accuracy moves in steps of 1/8.
    """
    import numpy as np
    from matplotlib.figure import Figure

    rows = [h for h in history if "loss" in h and "step" in h]  # training steps; eval rows say "eval_loss"
    if not rows:
        raise ValueError(
            "the history has no training steps (dicts with 'loss' and 'step'): pass "
            "trainer.state.log_history, or the log_history.json that train_dpo saves"
        )
    fig = Figure(figsize=(12, 3.2), layout="constrained")
    axes = fig.subplots(1, len(HISTORY_PANELS))
    steps = np.array([h["step"] for h in rows])
    for ax, (key, title) in zip(axes, HISTORY_PANELS):
        values = np.array([h.get(key, np.nan) for h in rows], dtype=float)
        ax.plot(steps, values, color="tab:blue", alpha=0.3, lw=0.8, label="per step")
        width = max(1, min(smooth, len(values)))
        mean = np.convolve(values, np.ones(width) / width, mode="valid")
        ax.plot(steps[width - 1 :], mean, color="tab:blue", lw=1.8, label=f"mean of {width}")
        if key == "loss":
            ax.axhline(math.log(2), color="k", lw=0.8, ls="--")
        ax.set(title=title, xlabel="optimizer step")
        ax.title.set_fontsize(9)
    axes[0].legend(fontsize=8)
    return fig


def dpo_stage(model, tokenizer, pairs, cfg: LabDPOConfig | None = None):
    """The main job's entry point: `train_dpo`, metrics as flat floats for metrics.json (prefix `dpo.`)."""
    model, metrics = train_dpo(model, tokenizer, pairs, cfg)
    return model, {k: float(v) for k, v in metrics.items()}
