"""Where and in which precision the model runs: CUDA when present, CPU otherwise."""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = ("auto", "fp32", *AUTOCAST_DTYPES)


def select_device(name: str) -> torch.device:
    """`auto` -> the first CUDA GPU when there is one, else the CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} asked for CUDA, but torch sees no CUDA GPU (use device=auto or cpu)")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 autocast on CUDA, fp32 on CPU (CPU autocast is slower than fp32 for convolutions)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {PRECISIONS}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> ContextManager:
    """Autocast context for a resolved precision (`fp32` -> no autocast)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])
