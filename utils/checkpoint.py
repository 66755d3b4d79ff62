"""Training checkpoints that carry everything needed to resume or to evaluate.

A checkpoint holds the model, optimiser and scheduler states, the step, the random number
generator states and the full run config, so that `test.py` can rebuild the model without being
told how it was configured, and an interrupted run continues exactly where it stopped.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.io import atomic_path

CHECKPOINT_FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or does not fit the requested run."""


def rng_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    config: dict[str, Any],
) -> None:
    """Write a checkpoint atomically: a crash while saving leaves the previous one intact."""
    payload = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "step": step,
        "config": config,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_states(),
    }
    with atomic_path(path, suffix=".pth") as tmp_path:
        torch.save(payload, tmp_path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (train first, or pass checkpoint=<file>)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({error})") from None
    if not isinstance(payload, dict) or payload.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a checkpoint of this project (format version {CHECKPOINT_FORMAT_VERSION})")
    return payload


def load_model_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load weights strictly, explaining a mismatch instead of dumping key lists."""
    expected = model.state_dict()
    missing = [name for name in expected if name not in state_dict]
    unexpected = [name for name in state_dict if name not in expected]
    other_shape = [name for name, tensor in expected.items() if name in state_dict and state_dict[name].shape != tensor.shape]
    if missing or unexpected or other_shape:
        raise CheckpointError(
            f"{path}: weights do not fit the requested model ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(other_shape)} of another shape; first: {(missing + unexpected + other_shape)[:3]})"
        )
    model.load_state_dict(state_dict)
