"""Voxel overlap of a binary prediction with a binary ground truth (docs/PROTOCOL.md, "Metric").

Per organ and query scan, true positives, false positives and false negatives are summed over the
evaluated slices and turned into 3D Dice, precision and recall (never a mean of per-slice
scores). A ratio whose denominator is zero is undefined and reported as NaN, never as 0 or 1: an
organ absent from both prediction and ground truth says nothing about the model.
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
        """2 TP / (2 TP + FP + FN); NaN when prediction and truth are both empty."""
        return _ratio(2 * self.true_positives, 2 * self.true_positives + self.false_positives + self.false_negatives)

    @property
    def jaccard(self) -> float:
        """TP / (TP + FP + FN); NaN when prediction and truth are both empty."""
        return _ratio(self.true_positives, self.true_positives + self.false_positives + self.false_negatives)

    @property
    def precision(self) -> float:
        """TP / (TP + FP); NaN when the prediction is empty."""
        return _ratio(self.true_positives, self.true_positives + self.false_positives)

    @property
    def recall(self) -> float:
        """TP / (TP + FN); NaN when the truth is empty."""
        return _ratio(self.true_positives, self.true_positives + self.false_negatives)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def overlap_counts(prediction: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray) -> OverlapCounts:
    """TP / FP / FN of two binary masks of the same shape (any number of dims, e.g. (Z, H, W))."""
    prediction = np.asarray(prediction).astype(bool, copy=False)
    truth = np.asarray(truth).astype(bool, copy=False)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != truth shape {tuple(truth.shape)}")
    true_positives = int(np.count_nonzero(prediction & truth))
    return OverlapCounts(
        true_positives=true_positives,
        false_positives=int(np.count_nonzero(prediction)) - true_positives,
        false_negatives=int(np.count_nonzero(truth)) - true_positives,
    )
