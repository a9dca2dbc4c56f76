"""labkit: the helper package of an RLHF teaching lab. One module per pipeline stage.

Import modules, not names: `from labkit import presets, models, generate`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "agreement",
    "artifacts",
    "bestofn",
    "cli",
    "config",
    "cost",
    "decide",
    "dpo",
    "eval_plots",
    "evaluate",
    "evaluate_metrics",
    "exercises",
    "fast_decode",
    "feedback",
    "generate",
    "guardrails",
    "hacking",
    "judge",
    "labelers",
    "labels",
    "learner",
    "memory",
    "models",
    "monitoring",
    "pairs",
    "parallel",
    "plots",
    "policies",
    "ppo",
    "ppo_math",
    "ppo_plots",
    "presets",
    "pretrain",
    "questions",
    "report",
    "reward_model",
    "rewards",
    "rtp",
    "rtp_world",
    "run",
    "shipped",
    "shipping",
    "tokenizer",
    "widgets",
    "world",
    "worlds",
]
