"""The optimiser and learning-rate schedule of a run (docs/PROTOCOL.md, "Training").

Both originals train with SGD (momentum 0.9, weight decay 5e-4) and a step decay of the learning
rate. AdamW is the option for models trained with Adam in their papers (UniverSeg); on the demo it
did not beat SGD (docs/RESULTS.md#demo). A linear warm-up may precede the step decay (the demo's
`quick` schedule uses one).
"""
from __future__ import annotations

from typing import Iterable

import torch

OPTIMIZERS = ("sgd", "adamw")


def build_optimizer(config: dict, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The config's optimiser over `parameters` (keys: optimizer, lr, momentum, weight_decay)."""
    name = config["optimizer"]
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=config["lr"], momentum=config["momentum"],
                               weight_decay=config["weight_decay"])
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=config["lr"], weight_decay=config["weight_decay"])
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def build_scheduler(config: dict, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Step decay (lr_decay every lr_decay_every steps) after `warmup_steps` of linear warm-up."""
    step_decay = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config["lr_decay_every"],
                                                 gamma=config["lr_decay"])
    warmup_steps = config["warmup_steps"]
    if warmup_steps <= 0:
        return step_decay
    # step k (from 0) of the warm-up uses (k + 1) / warmup_steps of the learning rate
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup_steps))
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, step_decay], milestones=[warmup_steps])
