"""Which world a preset runs on: the prompts, the raters' criteria and the reference text of every stage.

    assistant  `world.World`: the tiny preset's everyday questions, six reply styles, a gold utility
    rtp        `rtp_world.RTPWorld`: RealToxicityPrompts' challenging prompts, continued as plain text

`Preset.world` names it; `load(preset)` builds it. Both answer the calls the pipeline makes
(`prompts(split)`, `gold(prompt, text)`, `is_rude`, `classify_style`, `find_topic`,
`reference_texts(n, seed)`) and carry `name`, `prompting`, `styles` (what `classify_style` returns)
and `weights` (the utility's weight per term).
"""

from __future__ import annotations

from typing import Any

__all__ = ["load"]


def load(preset: Any = None):
    """The world of `preset` (a `presets.Preset`, a world name "assistant"/"rtp", or None: the assistant world)."""
    name = getattr(preset, "world", preset) or "assistant"
    if name == "rtp":
        from labkit.rtp_world import RTPWorld

        return RTPWorld()
    if name == "assistant":
        from labkit import world

        return world.load()
    raise ValueError(f"unknown world {name!r}: use 'assistant' (the tiny world) or 'rtp' (RealToxicityPrompts)")
