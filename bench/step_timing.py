"""Timed training steps for the benchmarks: the step train.py takes, one stacked batch at a time.

Each step is the forward and losses of `episode_losses` (experiment/training_step.py, as train.py
computes them), backward and the optimiser's step; train.py's scheduler step and logging are left
out (they cost the same for every model).
"""
from __future__ import annotations

import time
from typing import Iterable

import torch

from experiment.training_step import episode_losses


def time_training_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        batches: Iterable[dict[str, torch.Tensor]], config: dict, class_weights: torch.Tensor,
                        device: torch.device | str, precision: str) -> list[float]:
    """Seconds of each training step, one per batch (batches stacked as episode_losses takes them)."""
    seconds = []
    for batch in batches:
        started = time.perf_counter()
        _, losses = episode_losses(model, batch, config, class_weights, device, precision)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
        seconds.append(time.perf_counter() - started)
    return seconds
