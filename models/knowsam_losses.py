"""KnowSAM's loss terms (taozh2017/KnowSAM `trainer.py`, `utils/losses.py`), for any class count.

- `entropy_map`: the per-pixel entropy of class probabilities (the fusion's input, the entropy term
  and the patch exchange read it);
- `normalised_entropy`: `Trainer.entropy_loss`, the mean entropy over pixels divided by log K (the
  original divides by log 2 whatever K: `entropy_loss(p, C=2)`);
- `distillation_loss`: `KDLoss(T)`, Hinton's distillation at temperature T, per pixel over the K
  classes (the original reshapes the logits to rows of 2: on ACDC's 4 classes, pairs of classes);
- `cross_consistency`: `loss_diff1`, the binary cross-entropy of one network's class probabilities
  against the other's, averaged over the classes (the original's loop keeps the last class only);
- `ce_dice`: cross-entropy + KnowSAM's `DiceLoss` (SSL4MIS's with smoothing 1e-10), unweighted.

docs/METHOD.md ("KnowSAM") says what each original computes on ACDC.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from models.losses import multiclass_dice_loss

ENTROPY_EPSILON = 1e-6  # -sum p log(p + 1e-6): get_entropy_map, entropy_loss
PROBABILITY_FLOOR, PROBABILITY_CEILING = 1e-8, 1 - 1e-7  # loss_diff1: clamp(1e-8, 1 - 1e-7) before BCELoss
DICE_SMOOTH = 1e-10  # KnowSAM's DiceLoss._dice_loss, numerator and denominator


def entropy_map(probabilities: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) class probabilities -> (B, 1, H, W) entropy -sum_k p_k log(p_k + eps)."""
    return -(probabilities * torch.log(probabilities + ENTROPY_EPSILON)).sum(dim=1, keepdim=True)


def normalised_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) class probabilities -> scalar: the mean entropy over pixels / log K (1 for uniform)."""
    return entropy_map(probabilities).mean() / math.log(probabilities.shape[1])


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """student and teacher logits (B, K, H, W) -> scalar: T^2 x the mean over pixels of
    KL(softmax(teacher / T) || softmax(student / T)). The teacher gets no gradient from it."""
    student = rearrange(student_logits.float(), "b k h w -> (b h w) k")
    teacher = rearrange(teacher_logits.detach().float(), "b k h w -> (b h w) k")
    divergence = F.kl_div(F.log_softmax(student / temperature, dim=1), F.softmax(teacher / temperature, dim=1),
                          reduction="batchmean")
    return divergence * temperature * temperature


def cross_consistency(probabilities: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """probabilities and targets (B, K, H, W) -> scalar: the binary cross-entropy of each class's
    probability (clamped) against the target's, averaged over pixels and classes. `targets` are
    taken as they are: detach them for a one-way term."""
    clamped = probabilities.float().clamp(PROBABILITY_FLOOR, PROBABILITY_CEILING)
    return F.binary_cross_entropy(clamped, targets.float())


def ce_dice(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits (B, K, H, W), labels (B, H, W) int -> scalar: cross-entropy + Dice loss, as KnowSAM's
    `ce_loss(pred, label) + dice_loss(softmax(pred), label)`."""
    logits = logits.float()
    return (F.cross_entropy(logits, labels.long())
            + multiclass_dice_loss(torch.softmax(logits, dim=1), labels, smooth=DICE_SMOOTH))
