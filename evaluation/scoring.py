"""Protocol evaluation: segment every test episode, score it with the registered metrics.

The contract of the evaluation package: `TestEpisode`s in (evaluation/episodes.py), an
`Evaluation` out, which holds one `ScanScore` per (organ, query scan), with a value for every
requested metric of evaluation/metrics.py, and the binary predictions that were scored. Scores are
3D per scan, then averaged per organ over the query scans (docs/PROTOCOL.md, "Metric").
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from evaluation.episodes import TestEpisode
from evaluation.metrics import METRIC_NAMES, METRICS, check_metric_names
from evaluation.overlap import OverlapCounts, overlap_counts
from evaluation.prediction import predict_episode
from utils.runtime import evaluation_mode


@dataclass(frozen=True)
class ScanScore:
    """Scores of one organ's prediction against its ground truth in one query scan.

    values: {metric name: value} (NaN where undefined, see evaluation/metrics.py);
    counts: the voxel counts behind the overlap metrics.
    """

    organ: str
    label: int
    scan_id: int
    values: dict[str, float]
    counts: OverlapCounts


@dataclass(frozen=True)
class Evaluation:
    """Scores of a set of test episodes, and the predictions keyed by (label, query scan id)."""

    scores: list[ScanScore]
    predictions: dict[tuple[int, int], torch.Tensor]
    metric_names: tuple[str, ...]

    @property
    def organs(self) -> list[str]:
        """Organ names in the order they were evaluated."""
        return list(dict.fromkeys(score.organ for score in self.scores))

    def organ_means(self, metric: str = "dice") -> dict[str, float]:
        """{organ: mean of `metric` over the query scans where it is defined}."""
        return {organ: mean_and_std(values)[0] for organ, values in self.organ_values(metric).items()}

    def organ_values(self, metric: str) -> dict[str, list[float]]:
        """{organ: [value per query scan]} of `metric`, NaN included."""
        values: dict[str, list[float]] = defaultdict(list)
        for score in self.scores:
            values[score.organ].append(score.values[metric])
        return dict(values)


def score_prediction(episode: TestEpisode, prediction: torch.Tensor,
                     metric_names: Sequence[str] = METRIC_NAMES) -> ScanScore:
    """Score a (Z, H0, W0) binary prediction of `episode` against its query labels."""
    prediction_array = np.asarray(prediction, dtype=bool)
    truth = episode.query_labels.numpy().astype(bool)
    values = {name: METRICS[name].compute(prediction_array, truth, episode.voxel_spacing) for name in metric_names}
    return ScanScore(episode.organ, episode.label, episode.query_scan_id, values, overlap_counts(prediction_array, truth))


def evaluate_episodes(
    model: torch.nn.Module,
    episodes: Iterable[TestEpisode],
    device: torch.device,
    precision: str,
    batch_size: int,
    metric_names: Sequence[str] = METRIC_NAMES,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> Evaluation:
    """Segment and score every episode with `metric_names` (default: every registered metric).

    `progress` wraps the episode iterable (e.g. tqdm) when given. The model runs in eval mode
    and is left in the mode it was in.
    """
    metric_names = check_metric_names(metric_names)
    scores, predictions = [], {}
    with evaluation_mode(model):
        for episode in progress(episodes) if progress else episodes:
            prediction = predict_episode(model, episode, device, precision, batch_size)
            scores.append(score_prediction(episode, prediction, metric_names))
            predictions[(episode.label, episode.query_scan_id)] = prediction
    return Evaluation(scores, predictions, metric_names)


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation over the defined (non-NaN) values; NaN if none."""
    defined = np.asarray([value for value in values if not math.isnan(value)], dtype=np.float64)
    if defined.size == 0:
        return math.nan, math.nan
    return float(defined.mean()), float(defined.std())
