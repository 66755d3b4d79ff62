"""What every semi-supervised method shares (docs/METHOD.md, "Semi-supervised methods").

A method is one file in models/ with a class derived from `SemiSupervisedMethod` (an nn.Module
holding every network it trains, its EMA teachers included, so that one state dict resumes it)
and one line in the registry (models/__init__.py). The training loop calls, per step:

    step = method.training_losses(labelled_images, labels, unlabelled_images, iteration)
    (sum of step.losses).backward(); optimiser steps
    method.after_update(iteration)        # e.g. the EMA teacher follows the student

and evaluation calls `method.segment(images)`: the test-time output (the student for Mean
Teacher; a fused map for a method with several networks). The shared pieces, each as SSL4MIS's
code computes it (`code/utils/ramps.py`, `code/train_*_2D.py`):

- `supervised_loss`: 0.5 x (cross-entropy + multi-class Dice) on the labelled slices;
- `sigmoid_rampup` and `ConsistencyRamp`: the consistency weight w x exp(-5 (1 - t / T)^2), with
  t = iteration // 150 clipped to T;
- `update_ema`: the EMA teacher's parameters, alpha = min(1 - 1 / (iteration + 1), decay).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.losses import multiclass_dice_loss

SUPERVISED_LOSS_SCALE = 0.5  # SSL4MIS: supervised_loss = 0.5 * (loss_dice + loss_ce)
RAMPUP_SHARPNESS = 5.0  # sigmoid_rampup: exp(-5 phase^2)


@dataclass
class MethodStep:
    """One training step of a method: its weighted loss terms (their sum is minimised), scalars
    for the log (e.g. the consistency weight) and the student's logits of the whole batch
    (labelled first) for the image panels."""

    losses: dict[str, torch.Tensor]
    logits: torch.Tensor
    scalars: dict[str, float] = field(default_factory=dict)


class SemiSupervisedMethod(nn.Module):
    """Base of the semi-supervised methods: the networks, the losses of a step, the test-time output.

    uses_unlabelled: False for a method that trains on labelled slices only (the batches then hold
    none, and config checks refuse an unlabelled share).
    """

    uses_unlabelled = True

    def training_losses(self, labelled_images: torch.Tensor, labels: torch.Tensor,
                        unlabelled_images: torch.Tensor, iteration: int) -> MethodStep:
        """labelled_images (L, Cin, H, W), labels (L, H, W) int64, unlabelled_images (U, Cin, H, W)
        (U = 0 for a method without unlabelled slices), iteration = steps done before this one."""
        raise NotImplementedError

    def after_update(self, iteration: int) -> None:
        """Called after the optimiser step of `iteration` (EMA updates); nothing by default."""

    def optimised_parameters(self) -> dict[str, list[nn.Parameter]]:
        """{group: parameters}: one optimiser per group (a method whose parts train with different
        optimisers returns several); by default every parameter that requires a gradient."""
        return {"network": [parameter for parameter in self.parameters() if parameter.requires_grad]}

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) -> (B, K, H, W) logits of the test-time output."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) -> (B, K, H, W): `segment`, so that evaluation calls the method as a network."""
        return self.segment(images)


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor,
                    dice_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = multiclass_dice_loss,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (L, K, H, W), labels (L, H, W) -> (cross-entropy, Dice loss), each unweighted; the
    supervised term is SUPERVISED_LOSS_SCALE x their sum. `dice_loss` (softmax probabilities,
    labels) -> scalar: SSL4MIS's by default (SCP-Net has its own, models/losses.py)."""
    cross_entropy = F.cross_entropy(logits.float(), labels.long())
    dice = dice_loss(torch.softmax(logits.float(), dim=1), labels)
    return cross_entropy, dice


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """SSL4MIS's ramps.sigmoid_rampup: exp(-5 (1 - t / T)^2) with t clipped to [0, T]; 1 when T = 0."""
    if rampup_length == 0:
        return 1.0
    phase = 1.0 - min(max(current, 0.0), rampup_length) / rampup_length
    return float(math.exp(-RAMPUP_SHARPNESS * phase * phase))


@dataclass(frozen=True)
class ConsistencyRamp:
    """The consistency weight of iteration i: weight x sigmoid_rampup(i // unit, rampup_units),
    and 0 before `start` (SSL4MIS's Mean Teacher sets the term to 0 for its first 1000 iterations)."""

    weight: float
    rampup_units: float
    unit: int = 150
    start: int = 0

    def __call__(self, iteration: int) -> float:
        return self.weight * sigmoid_rampup(iteration // self.unit, self.rampup_units)

    def active(self, iteration: int) -> bool:
        return iteration >= self.start


@torch.no_grad()
def update_ema(teacher: nn.Module, student: nn.Module, decay: float, iteration: int) -> None:
    """teacher = alpha teacher + (1 - alpha) student over the parameters (not the buffers: the
    teacher's batch-norm statistics come from its own forward passes, as SSL4MIS's
    update_ema_variables), alpha = min(1 - 1 / (iteration + 1), decay)."""
    alpha = min(1.0 - 1.0 / (iteration + 1), decay)
    for teacher_parameter, student_parameter in zip(teacher.parameters(), student.parameters()):
        teacher_parameter.mul_(alpha).add_(student_parameter, alpha=1.0 - alpha)
