"""The metric registry of the evaluation: every score written for an organ in a query scan.

`METRICS` maps a metric's name to a `Metric`: a function `(prediction, truth, spacing) -> float`
on the evaluated block of slices of one organ in one query scan (binary (Z, H, W) arrays at the
preprocessed resolution, `spacing` the voxel size in mm in the arrays' axis order (z, y, x)), and
the unit its tables print it in. summary.json, scores.csv, table.md and the fold tables carry every
registered metric, so a new metric is one function and one line in `METRICS`.

Undefined values are NaN, never 0 or 1 (docs/PROTOCOL.md, "Metric"):

| metric | NaN when |
|---|---|
| dice | prediction and truth both empty |
| jaccard | prediction and truth both empty |
| precision | prediction empty |
| recall | truth empty |
| hd95, assd, asd | prediction or truth empty (no surface to measure from) |

In the protocol the truth is never empty (query slices are the organ's ground-truth z-range), so
Dice is always defined and an empty prediction scores 0; HD95 and ASSD of an empty prediction are
NaN, skipped by the averages and counted in the summary (`undefined`).

The few-shot track reports FEW_SHOT_METRICS (its papers' Dice, with precision, recall, HD95 and
ASSD); the semi-supervised track SEMI_SUPERVISED_METRICS, SSL4MIS's Dice, Jaccard, HD95 and ASD
(MedPy's one-directional average surface distance), under SSL4MIS's rule for an empty prediction
when `metric_rules="ssl4mis"` (evaluation/volume_scoring.py; docs/PROTOCOL.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from evaluation.overlap import overlap_counts
from evaluation.surface_distance import (average_surface_distance, average_symmetric_surface_distance,
                                        hausdorff_distance_95)

Spacing = Sequence[float]
FRACTION = "%"  # a ratio in [0, 1], printed as a percentage
MILLIMETRES = "mm"
UNIT_SCALES = {FRACTION: 100.0, MILLIMETRES: 1.0}


@dataclass(frozen=True)
class Metric:
    """A score of one prediction against its truth, the unit tables print it in, and which way is better."""

    compute: Callable[[np.ndarray, np.ndarray, Spacing], float]
    unit: str
    higher_is_better: bool = True  # overlaps; distances are better when lower

    def __post_init__(self) -> None:
        if self.unit not in UNIT_SCALES:
            raise ValueError(f"unit must be one of {sorted(UNIT_SCALES)}, got {self.unit!r}")

    @property
    def scale(self) -> float:
        """Factor from the stored value to the printed one (fractions print as percentages)."""
        return UNIT_SCALES[self.unit]


def dice(prediction: np.ndarray, truth: np.ndarray, spacing: Spacing) -> float:
    """3D Dice: 2 TP / (2 TP + FP + FN) over the whole block (voxel counts need no spacing)."""
    return overlap_counts(prediction, truth).dice


def jaccard(prediction: np.ndarray, truth: np.ndarray, spacing: Spacing) -> float:
    """3D Jaccard (intersection over union): TP / (TP + FP + FN) over the whole block."""
    return overlap_counts(prediction, truth).jaccard


def precision(prediction: np.ndarray, truth: np.ndarray, spacing: Spacing) -> float:
    """TP / (TP + FP) over the whole block."""
    return overlap_counts(prediction, truth).precision


def recall(prediction: np.ndarray, truth: np.ndarray, spacing: Spacing) -> float:
    """TP / (TP + FN) over the whole block."""
    return overlap_counts(prediction, truth).recall


METRICS: dict[str, Metric] = {
    "dice": Metric(dice, FRACTION),
    "precision": Metric(precision, FRACTION),
    "recall": Metric(recall, FRACTION),
    "hd95": Metric(hausdorff_distance_95, MILLIMETRES, higher_is_better=False),
    "assd": Metric(average_symmetric_surface_distance, MILLIMETRES, higher_is_better=False),
    "jaccard": Metric(jaccard, FRACTION),
    "asd": Metric(average_surface_distance, MILLIMETRES, higher_is_better=False),
}
FEW_SHOT_METRICS = ("dice", "precision", "recall", "hd95", "assd")
SEMI_SUPERVISED_METRICS = ("dice", "jaccard", "hd95", "asd")
METRIC_NAMES = FEW_SHOT_METRICS  # the few-shot evaluation's default


def check_metric_names(names: Sequence[str]) -> tuple[str, ...]:
    """The names themselves, once each is known to be registered."""
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; registered: {list(METRICS)}")
    return tuple(names)
