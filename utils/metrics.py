"""Overlap metrics of the evaluation protocol (PROTOCOL.md, "Metric").

Per organ and query scan, true positives, false positives and false negatives are summed over the
evaluated slices and turned into 3D Dice, precision and recall. A ratio whose denominator is zero
is undefined and reported as NaN, never as 0 or 1: an organ absent from both prediction and ground
truth says nothing about the model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class OverlapCounts:
    """Voxel counts of a binary prediction against a binary ground truth."""

    true_positives: int
    false_positives: int
    false_negatives: int

    def __add__(self, other: "OverlapCounts") -> "OverlapCounts":
        return OverlapCounts(
            self.true_positives + other.true_positives,
            self.false_positives + other.false_positives,
            self.false_negatives + other.false_negatives,
        )

    @property
    def dice(self) -> float:
        return _ratio(2 * self.true_positives, 2 * self.true_positives + self.false_positives + self.false_negatives)

    @property
    def precision(self) -> float:
        return _ratio(self.true_positives, self.true_positives + self.false_positives)

    @property
    def recall(self) -> float:
        return _ratio(self.true_positives, self.true_positives + self.false_negatives)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def overlap_counts(prediction: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> OverlapCounts:
    """Count TP/FP/FN of two binary masks of the same shape (any number of dims, e.g. (Z, H, W))."""
    prediction = torch.as_tensor(prediction).bool()
    target = torch.as_tensor(target).bool()
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
    true_positives = int((prediction & target).sum())
    return OverlapCounts(
        true_positives=true_positives,
        false_positives=int(prediction.sum()) - true_positives,
        false_negatives=int(target.sum()) - true_positives,
    )


def dice_score(prediction: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> float:
    """3D Dice of two binary masks; NaN when both are empty."""
    return overlap_counts(prediction, target).dice


def mean_and_std(values: list[float]) -> tuple[float, float]:
    """Mean and population standard deviation over the defined (non-NaN) values; NaN if none."""
    defined = np.asarray([value for value in values if not math.isnan(value)], dtype=np.float64)
    if defined.size == 0:
        return math.nan, math.nan
    return float(defined.mean()), float(defined.std())
