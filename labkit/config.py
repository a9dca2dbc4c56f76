"""Run-wide settings: device, dtype and one seed setter for python, numpy and torch.

Every stage takes its config explicitly; nothing here is a hidden global. The helpers below are
what each stage calls to turn "auto" into a concrete device and dtype.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

__all__ = ["parse_settings", "resolve_device", "resolve_dtype", "seed_everything"]


def resolve_device(device: str = "auto") -> str:
    """ "auto" picks cuda, then mps, then cpu; anything else is returned as given."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str = "cpu") -> torch.dtype:
    """ "auto" is bf16 on a GPU that supports it, fp32 everywhere else (CPU and mps)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype != "auto":
        names = {
            "fp32": torch.float32,
            "float32": torch.float32,
            "bf16": torch.bfloat16,
            "bfloat16": torch.bfloat16,
            "fp16": torch.float16,
            "float16": torch.float16,
        }
        if dtype not in names:
            raise ValueError(f"unknown dtype {dtype!r}: use one of {sorted(names)} or 'auto'")
        return names[dtype]
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def seed_everything(seed: int) -> None:
    """Seed python's random, numpy and torch (all devices) so a CPU run repeats exactly."""
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def parse_settings(items: Iterable[str]) -> dict[str, Any]:
    """Command-line FIELD=VALUE settings (`--set kl_coef=0.2 lora=false`) as a dict: each value read as JSON
    (numbers, true/false, null, lists), else kept as a string. A later FIELD wins."""
    settings: dict[str, Any] = {}
    for text in items:
        field, sep, value = text.partition("=")
        if not sep or not field:
            raise ValueError(f"--set takes FIELD=VALUE (e.g. kl_coef=0.2), got {text!r}")
        try:
            settings[field] = json.loads(value)
        except json.JSONDecodeError:
            settings[field] = value
    return settings
