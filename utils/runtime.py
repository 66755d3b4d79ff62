"""Where, in which precision and in which mode the model runs: CUDA when present, CPU otherwise."""
from __future__ import annotations

import contextlib
from typing import ContextManager, Iterator

import torch

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = ("fp32", *AUTOCAST_DTYPES)


def select_device(name: str) -> torch.device:
    """`auto` -> the first CUDA GPU when there is one, else the CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} asked for CUDA, but torch sees no CUDA GPU (use device=auto or cpu)")
    return device


def check_precision(precision: str) -> str:
    """The precision itself, once known: "fp32" (the default, as the originals train) or an autocast dtype."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {PRECISIONS}")
    return precision


def autocast(device: torch.device, precision: str) -> ContextManager:
    """Autocast context for a checked precision (`fp32` -> no autocast)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


@contextlib.contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`model` in eval mode inside the block (dropout off, batch-norm statistics frozen), then back
    in the mode it was in, also when the block raises (a validation inside training goes on training)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
