"""Rewards: one interface for everything that scores a reply.

Stage: rewards, used by PPO, best-of-N and evaluation. A reward is a callable
`reward(prompts: list[str], responses: list[str]) -> torch.Tensor` of shape (B,), float32, with a
`.name`. Rewards read TEXT, not token ids, so a reward model may use another tokenizer than the
policy (the old TRL PPO loop could not).

Rewards here:
    ToxicityReward      alt-profanity-check's linear SVM: the non-toxic logit, 1 - P(toxic), or pass/fail
    HFClassifierReward  any Hugging Face sequence classifier, the rewarded label found BY NAME (the
                        one wrapper of such classifiers: `judge` uses it for P(toxic) too)
    GoldReward          the tiny world's gold utility (or one of its terms): the "true" reward
    FunctionReward, WeightedSum   wrap and combine the others
    make_reward         the reward named by a spec string ("preference", "toxicity:binary", "a+b")
The preference reward model's reward, `reward_model.PreferenceReward`, lives with the model it wraps.

Why label names and not indices: classifiers disagree on which index is "toxic"; a reward wired to
index 0 of a model whose label 0 is "toxic" rewards toxicity. `resolve_label` reads `id2label`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "FunctionReward",
    "GoldReward",
    "HFClassifierReward",
    "REWARD_SPECS",
    "Reward",
    "ToxicityReward",
    "WeightedSum",
    "fingerprint",
    "for_trl",
    "from_pretrained_or_explain",
    "make_reward",
    "nontoxic_logit",
    "resolve_label",
    "toxicity_prob",
    "toxicity_reward_plot",
]


class Reward:
    """Base class: subclasses implement `score(prompts, responses)`; calling checks and converts."""

    name: str = "reward"

    def score(self, prompts: list[str], responses: list[str]) -> Any:
        raise NotImplementedError

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        prompts, responses = list(prompts), list(responses)
        if len(prompts) != len(responses):
            raise ValueError(
                f"{self.name}: got {len(prompts)} prompts and {len(responses)} responses; "
                "pass one prompt per response (repeat a prompt for its several responses)"
            )
        if not responses:
            return torch.zeros(0, dtype=torch.float32)
        scores = torch.as_tensor(np.asarray(self.score(prompts, responses), dtype=np.float32)).reshape(-1)
        if scores.numel() != len(responses):
            raise ValueError(f"{self.name}: score returned {scores.numel()} values for {len(responses)} responses")
        return scores

    def fingerprint(self) -> str:
        """What this reward computes, as a string: rewards with equal fingerprints score alike. The class,
        the name and, for a reward wrapping a torch model (`.model`), a hash of its weights. A PPO
        checkpoint records it, so a run resumes only against the reward it was trained on."""
        parts = [type(self).__name__, self.name]
        if isinstance(getattr(self, "model", None), torch.nn.Module):
            from labkit.artifacts import weights_hash

            parts.append(weights_hash(self.model))
        return ":".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def fingerprint(reward: Callable) -> str | None:
    """`reward.fingerprint()` for a labkit `Reward`; None for a plain function, whose code cannot be compared."""
    return reward.fingerprint() if isinstance(reward, Reward) else None


def for_trl(reward: Callable, name: str | None = None) -> Callable:
    """A labkit reward as a TRL reward function, for the engines built to scale past labkit's loop.

    TRL's GRPOTrainer and RLOOTrainer (and OpenRLHF's or verl's custom reward hooks, through the same
    text in, floats out contract) call `reward_func(prompts, completions, **kwargs) -> list[float]`;
    conversational prompts and completions arrive as lists of {"role", "content"} messages, of which
    the last user turn and the assistant's reply are what a labkit reward reads.
    """
    if not callable(reward):
        raise ValueError(f"for_trl needs a reward callable as reward(prompts, responses), got {type(reward).__name__}")

    def text(item: Any, role: str) -> str:
        if isinstance(item, str):
            return item
        turns = [m["content"] for m in item if m.get("role") == role]
        if not turns:
            raise ValueError(f"a conversational item with no {role!r} turn: {item!r}")
        return turns[-1]

    def reward_func(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        queries = [text(p, "user") for p in prompts]
        replies = [text(c, "assistant") for c in completions]
        return [float(x) for x in torch.as_tensor(reward(queries, replies)).reshape(-1)]

    reward_func.__name__ = name or getattr(reward, "name", None) or getattr(reward, "__name__", "labkit_reward")
    return reward_func


class FunctionReward(Reward):
    """A plain function `fn(prompts, responses) -> sequence of floats` as a reward."""

    def __init__(self, fn: Callable[[list[str], list[str]], Any], name: str | None = None):
        if not callable(fn):
            raise ValueError(f"fn must be callable as fn(prompts, responses), got {type(fn).__name__}")
        self.fn, self.name = fn, name or getattr(fn, "__name__", "function")

    def fingerprint(self) -> str:
        return f"FunctionReward:{self.name}:{getattr(self.fn, '__module__', '')}.{getattr(self.fn, '__qualname__', '')}"

    def score(self, prompts, responses):
        out = self.fn(prompts, responses)
        return out.detach().float().cpu().numpy() if isinstance(out, torch.Tensor) else out


class WeightedSum(Reward):
    """sum_i weight_i * reward_i: e.g. a preference reward plus a toxicity penalty."""

    def __init__(self, rewards: Sequence[Callable], weights: Sequence[float], name: str | None = None):
        rewards, weights = list(rewards), [float(w) for w in weights]
        if not rewards or len(rewards) != len(weights):
            raise ValueError(
                f"WeightedSum needs one weight per reward, got {len(rewards)} rewards and {len(weights)} weights"
            )
        self.rewards, self.weights = rewards, weights
        self.name = name or " + ".join(f"{w:g}*{getattr(r, 'name', 'reward')}" for r, w in zip(rewards, weights))

    def fingerprint(self) -> str:
        parts = [
            f"{w:g}*{fingerprint(r) or getattr(r, '__qualname__', 'function')}"
            for r, w in zip(self.rewards, self.weights)
        ]
        return "WeightedSum(" + ", ".join(parts) + ")"

    def components(self, prompts, responses) -> dict[str, torch.Tensor]:
        """Each component's unweighted scores, keyed by its name (for logging what PPO optimises)."""
        return {
            getattr(r, "name", f"reward_{i}"): torch.as_tensor(r(prompts, responses)).float().cpu()
            for i, r in enumerate(self.rewards)
        }

    def score(self, prompts, responses):
        parts = [torch.as_tensor(r(prompts, responses)).float().cpu() for r in self.rewards]
        return sum(w * p for w, p in zip(self.weights, parts)).numpy()


# -- alt-profanity-check ------------------------------------------------------------------------


def _profanity_check():
    try:
        with warnings.catch_warnings():  # the pickled SVM was made by an older sklearn; it still loads fine
            warnings.simplefilter("ignore")
            from profanity_check import profanity_check as pc
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "the toxicity reward needs alt-profanity-check: pip install alt-profanity-check"
        ) from err
    return pc


def nontoxic_logit(texts: Sequence[str]) -> np.ndarray:
    """The SVM's decision value for the NON-toxic class (higher = less toxic), averaged over its folds.

    `pc.model` is a CalibratedClassifierCV over LinearSVCs, classes_ [0 (clean), 1 (offensive)]; each
    fold's `decision_function` is positive for "offensive", so we negate it.
    """
    pc = _profanity_check()
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros(0)
    x = pc.vectorizer.transform(texts)
    folds = pc.model.calibrated_classifiers_
    # sklearn >= 1.2 names the fitted fold `estimator`; older versions `base_estimator`
    values = [getattr(c, "estimator", None) or c.base_estimator for c in folds]
    return -np.mean([est.decision_function(x) for est in values], axis=0)


def toxicity_prob(texts: Sequence[str]) -> np.ndarray:
    """P(toxic) of each text by alt-profanity-check's calibrated SVM (what evaluation reports)."""
    pc = _profanity_check()
    texts = [str(t) for t in texts]
    return np.asarray(pc.predict_prob(texts), dtype=float) if texts else np.zeros(0)


class ToxicityReward(Reward):
    """Reward for NOT being toxic: the SVM's non-toxic logit, 1 - P(toxic), or 1/0 below/above a threshold.

    Scores the response only. kind "logit" is unbounded, so PPO keeps a gradient signal on replies
    that are already clean (and can chase it forever); "prob" saturates at 1, so a clean reply has
    nothing left to gain; "binary" is 1.0 when P(toxic) < `threshold`, else 0.0: the pass/fail
    verdict of evaluation, no signal at all about how close a reply is to the line.
    """

    KINDS = ("logit", "prob", "binary")

    def __init__(self, kind: str = "logit", name: str | None = None, threshold: float = 0.5):
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold is a probability of toxicity in (0, 1), got {threshold}")
        self.kind, self.threshold = kind, threshold
        self.name = name or f"nontoxic_{kind}"
        _profanity_check()  # fail now, not in the middle of PPO

    def fingerprint(self) -> str:
        return f"ToxicityReward:{self.name}:{self.kind}:{self.threshold:g}"

    def score(self, prompts, responses):
        if self.kind == "logit":
            return nontoxic_logit(responses)
        prob = toxicity_prob(responses)
        return 1.0 - prob if self.kind == "prob" else (prob < self.threshold).astype(float)


def toxicity_reward_plot(texts: Sequence[str], threshold: float = 0.5):
    """The toxicity reward's three shapes on the same texts, plotted against the SVM's non-toxic logit.

    The logit reward is the x axis itself: unbounded, it never stops rising. The points are
    1 - P(toxic) (`axes.collections[0]`, saturating at both ends) and the pass/fail reward
    (`axes.collections[1]`, a step at P(toxic) = `threshold`). Returns a matplotlib Figure.
    """
    from matplotlib.figure import Figure

    texts = [str(t) for t in texts]
    logit = nontoxic_logit(texts)
    prob = 1.0 - toxicity_prob(texts)
    binary = ToxicityReward("binary", threshold=threshold).score([""] * len(texts), texts)
    fig = Figure(figsize=(6, 3.8))
    ax = fig.add_subplot()
    ax.scatter(logit, prob, s=12, alpha=0.6, color="tab:blue", label='"prob": 1 - P(toxic)')
    ax.scatter(
        logit, binary, s=12, alpha=0.6, marker="|", color="tab:red", label=f'"binary": 1 if P(toxic) < {threshold:g}'
    )
    ax.axhline(1.0 - threshold, ls=":", color="grey")
    ax.set_xlabel('non-toxic logit of the SVM (= the "logit" reward, unbounded)')
    ax.set_ylabel("reward")
    ax.set_ylim(-0.08, 1.08)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"Three rewards from one toxicity classifier ({len(texts)} replies)")
    fig.tight_layout()
    return fig


# -- Hugging Face classifiers ------------------------------------------------------------------


def _norm(label: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(label).lower())


_ALIASES: dict[str, tuple[set[str], set[str]]] = {
    # rewarded name -> (names that mean the same, names that mean the opposite)
    "nontoxic": (
        {
            "nontoxic",
            "nottoxic",
            "neutral",
            "clean",
            "safe",
            "normal",
            "nonhate",
            "nothate",
            "nonoffensive",
            "notoffensive",
            "ok",
        },
        {"toxic", "toxicity", "hate", "hateful", "offensive", "abusive", "profane", "unsafe", "insult"},
    ),
    "positive": ({"positive", "pos"}, {"negative", "neg"}),
}


def resolve_label(id2label: dict, positive_label: str) -> tuple[int, int]:
    """(index, sign) of the label to reward in `id2label`, matched by NAME, never by position.

    sign +1: the label itself was found; sign -1: only its opposite was (e.g. just "toxic"), so the
    reward is the negated score of that. ValueError listing the labels when nothing matches.
    """
    want = _norm(positive_label)
    same, opposite = {want}, set()
    for key, (aliases, inverse) in _ALIASES.items():
        if want == key or want in aliases:
            same |= aliases | {key}
            opposite |= inverse
        elif want in inverse:
            same |= inverse
            opposite |= aliases | {key}
    if not opposite:  # a label outside the table: "x" <-> "notx"/"nonx"
        opposite = {want[3:]} if want.startswith(("not", "non")) else {"not" + want, "non" + want}
    labels = {int(i): _norm(name) for i, name in id2label.items()}
    for names, sign in ((same, 1), (opposite, -1)):
        if want in labels.values() and sign == 1:
            return next(i for i, n in labels.items() if n == want), 1
        hits = [i for i, n in sorted(labels.items()) if n in names]
        if len(hits) == 1:
            return hits[0], sign
        if len(hits) > 1:
            raise ValueError(
                f"labels {[id2label[i] for i in hits]} all match {positive_label!r}: pass the exact "
                f"label name as positive_label (labels: {dict(id2label)})"
            )
    raise ValueError(
        f"no label of the classifier matches {positive_label!r} (or its opposite); its labels are "
        f"{dict(id2label)}: pass positive_label= the name of the label to reward"
    )


def _offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover - very old huggingface_hub
        return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")


def from_pretrained_or_explain(loader: Callable, name_or_path: str | Path, **kwargs: Any):
    """`loader(name_or_path, **kwargs)`; a hub id that cannot be fetched gets an error saying how to go offline."""
    try:
        return loader(str(name_or_path), **kwargs)
    except OSError as err:
        if Path(name_or_path).exists():
            raise
        why = (
            "you are offline (HF_HUB_OFFLINE=1)"
            if _offline()
            else "the Hugging Face hub is unreachable or has no such model"
        )
        raise OSError(
            f"cannot load {str(name_or_path)!r}: it is not a local folder and {why}. Download it once "
            f"where there is network (`huggingface-cli download {name_or_path} --local-dir DIR`, or "
            "`model.save_pretrained(DIR)` and `tokenizer.save_pretrained(DIR)`), then pass the local "
            "folder DIR instead of the hub id."
        ) from err


def _device(device: str | None) -> str:
    from labkit.config import resolve_device

    return resolve_device(device or "auto")


class HFClassifierReward(Reward):
    """Any Hugging Face sequence classifier (hub id or folder) as a reward for one label, found by name.

    kind "logit": the label's log-odds (for a softmax head, its logit minus the log-sum-exp of the
    other logits; for a multi-label sigmoid head, its logit), negated if only the opposite label
    exists; kind "prob": its probability, or 1 - P(opposite). A head with a single unnamed logit
    ("LABEL_0") is read as the log-odds of `positive_label` (`single_logit_sign=-1`: of its opposite).
    """

    def __init__(
        self,
        model_name_or_path: str | Path,
        positive_label: str = "non-toxic",
        device: str | None = None,
        kind: str = "logit",
        batch_size: int = 32,
        max_length: int = 256,
        include_prompt: bool = False,
        name: str | None = None,
        single_logit_sign: int = 1,
    ):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if kind not in ("logit", "prob"):
            raise ValueError(f"kind must be 'logit' or 'prob', got {kind!r}")
        self.device = _device(device)
        self.tokenizer = from_pretrained_or_explain(AutoTokenizer.from_pretrained, model_name_or_path)
        self.model = (
            from_pretrained_or_explain(AutoModelForSequenceClassification.from_pretrained, model_name_or_path)
            .to(self.device)
            .eval()
        )
        cfg = self.model.config
        if cfg.num_labels == 1 and _norm(cfg.id2label.get(0, "LABEL_0")) == "label0":
            # One unnamed logit: its sigmoid is P(the label it was trained on), and the caller says
            # which one that is (`positive_label` names it, `single_logit_sign=-1` flips it).
            self.index, self.sign = 0, single_logit_sign
        else:
            self.index, self.sign = resolve_label(cfg.id2label, positive_label)
        self.kind, self.batch_size, self.max_length, self.include_prompt = kind, batch_size, max_length, include_prompt
        label = cfg.id2label.get(self.index, positive_label)
        label = positive_label if _norm(label) == "label0" else label
        self.name = name or f"{Path(str(model_name_or_path)).name}:{'' if self.sign > 0 else 'not '}{label}"

    def fingerprint(self) -> str:
        return f"{super().fingerprint()}:{self.kind}:{self.sign}:{self.include_prompt}:{self.max_length}"

    @torch.no_grad()
    def score(self, prompts, responses):
        out = []
        multi = self.model.config.problem_type == "multi_label_classification"
        for start in range(0, len(responses), self.batch_size):
            texts = responses[start : start + self.batch_size]
            args = (prompts[start : start + self.batch_size], texts) if self.include_prompt else (texts,)
            enc = self.tokenizer(
                *args, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            logits = self.model(**enc).logits.float()  # (B, num_labels)
            if multi or logits.shape[-1] == 1:
                log_odds = logits[:, self.index]
            else:
                others = torch.cat([logits[:, : self.index], logits[:, self.index + 1 :]], dim=-1)
                log_odds = logits[:, self.index] - torch.logsumexp(others, dim=-1)
            if self.kind == "logit":
                value = self.sign * log_odds
            else:
                prob = torch.sigmoid(log_odds)  # softmax prob of the label == sigmoid of its log-odds
                value = prob if self.sign > 0 else 1.0 - prob
            out.append(value.cpu())
        return torch.cat(out).numpy()


# -- the tiny world's gold reward ------------------------------------------------------------


class GoldReward(Reward):
    """The tiny world's gold utility (or one term of it) as a reward: the truth a proxy is measured against."""

    def __init__(self, world: Any = None, term: str = "utility", name: str | None = None):
        from labkit import world as world_mod

        terms = [f.name for f in dataclasses.fields(world_mod.GoldScore)]
        if term not in terms:
            raise ValueError(f"term must be one of {terms}, got {term!r}")
        self.world = world if world is not None else world_mod.load()
        self.term = term
        self.name = name or f"gold_{term}"

    def score(self, prompts, responses):
        return [getattr(self.world.gold(p, r), self.term) for p, r in zip(prompts, responses)]


# -- a reward from its name ------------------------------------------------------------------------

REWARD_SPECS = ("preference", "toxicity:binary", "toxicity:prob", "toxicity:logit", "gold")
"""The reward names `make_reward` knows; join several with "+" for an equal-weight sum."""


def make_reward(spec: str, *, world: Any = None, preference: Callable | None = None) -> Reward | Callable:
    """The reward named by `spec`, as `labkit run`, the chapters and the benchmarks build it.

    "preference" is the preference reward model (`reward_model.PreferenceReward`), passed in as
    `preference` because it is trained, not built; "toxicity:binary" / ":prob" / ":logit" the
    alt-profanity-check SVM (`ToxicityReward`); "gold" the tiny world's gold utility (`world`, or
    the default world). "a+b" sums several with equal weights.
    """
    parts = [p.strip() for p in str(spec).split("+")]
    built = []
    for part in parts:
        if part.startswith("toxicity") and part.partition(":")[2] in ("", *ToxicityReward.KINDS):
            built.append(ToxicityReward(part.partition(":")[2] or "prob"))
        elif part == "gold":
            built.append(GoldReward(world))
        elif part == "preference":
            if preference is None:
                raise ValueError(
                    "the 'preference' reward is the trained preference reward model: train or load it "
                    "(reward_model.reward_stage, or reward_model.PreferenceReward(folder)) and pass it as "
                    "make_reward(spec, preference=...)"
                )
            built.append(preference)
        else:
            raise ValueError(
                f"unknown reward {part!r} in {spec!r}: use one of {', '.join(REWARD_SPECS)}, "
                "or a sum such as 'toxicity:prob+preference'"
            )
    return built[0] if len(built) == 1 else WeightedSum(built, [1.0] * len(built))
