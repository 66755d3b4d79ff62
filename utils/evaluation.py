"""Protocol evaluation: segment every query slice of every test episode, score 3D overlap per scan.

Each test episode (one organ, one query scan) has one support set per part of the organ's z-range;
the query slices of a part are segmented in batches against that part's support, which the model
encodes once per batch (a support batch of 1 is broadcast). Logits are upsampled to the labels'
native resolution, so scores are computed in the preprocessed 256 x 256 space whatever size the
model ran at (PROTOCOL.md, "Metric").
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F

from utils.metrics import OverlapCounts, mean_and_std, overlap_counts
from utils.runtime import autocast

FOREGROUND = 1


class NonFiniteLogits(ValueError):
    """A model produced NaN or infinite logits: its scores would be silently wrong."""


@dataclass(frozen=True)
class ScanScore:
    """Overlap of one organ's prediction with its ground truth in one query scan."""

    organ: str
    label: int
    scan_id: int
    counts: OverlapCounts


@torch.no_grad()
def predict_episode(
    model: torch.nn.Module, episode, device: torch.device, precision: str, batch_size: int
) -> torch.Tensor:
    """Binary prediction of one test episode: (Z, H0, W0) bool on the CPU, Z = evaluated slices."""
    native_size = tuple(episode.query_labels.shape[-2:])
    prediction = torch.zeros(episode.query_labels.shape, dtype=torch.bool)
    for part in range(episode.support_images.shape[0]):
        support_images = episode.support_images[part : part + 1].to(device)  # (1, S, 3, H, W)
        support_masks = episode.support_masks[part : part + 1].to(device)  # (1, S, H, W)
        slice_positions = torch.nonzero(episode.part_index == part).flatten()
        for batch_positions in slice_positions.split(batch_size):
            query_images = episode.query_images[batch_positions].to(device)  # (b, 3, H, W)
            with autocast(device, precision):
                logits = model(support_images, support_masks, query_images).logits  # (b, 2, H, W)
            if not torch.isfinite(logits).all():
                raise NonFiniteLogits(f"{episode.organ}, query scan {episode.query_scan_id}: the model's logits are "
                                      "not finite (NaN or infinite); its weights or features have diverged")
            logits = F.interpolate(logits.float(), size=native_size, mode="bilinear", align_corners=False)
            prediction[batch_positions] = (logits.argmax(dim=1) == FOREGROUND).cpu()
    return prediction


def evaluate_episodes(
    model: torch.nn.Module,
    episodes: Iterable,
    device: torch.device,
    precision: str,
    batch_size: int,
    progress=None,
) -> tuple[list[ScanScore], dict[tuple[int, int], torch.Tensor]]:
    """Score every episode; return the scores and the predictions keyed by (label, scan id).

    `progress` wraps the episode iterable (e.g. tqdm) when given.
    """
    was_training = model.training
    model.eval()
    scores, predictions = [], {}
    for episode in progress(episodes) if progress else episodes:
        prediction = predict_episode(model, episode, device, precision, batch_size)
        scores.append(
            ScanScore(episode.organ, episode.label, episode.query_scan_id, overlap_counts(prediction, episode.query_labels))
        )
        predictions[(episode.label, episode.query_scan_id)] = prediction
    model.train(was_training)
    return scores, predictions


def organ_means(scores: list[ScanScore], metric: str = "dice") -> dict[str, float]:
    """Mean of a metric ("dice", "precision", "recall") over the query scans, per organ."""
    values: dict[str, list[float]] = defaultdict(list)
    for score in scores:
        values[score.organ].append(getattr(score.counts, metric))
    return {organ: mean_and_std(organ_values)[0] for organ, organ_values in values.items()}


def format_score_table(scores: list[ScanScore]) -> str:
    """Markdown table: one row per organ, Dice per query scan, then mean Dice, precision, recall."""
    scan_ids = sorted({score.scan_id for score in scores})
    organs = list(dict.fromkeys(score.organ for score in scores))
    by_key = {(score.organ, score.scan_id): score.counts for score in scores}
    means = {metric: organ_means(scores, metric) for metric in ("dice", "precision", "recall")}
    header = ["organ", *(f"scan {scan_id}" for scan_id in scan_ids), "Dice", "precision", "recall"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for organ in organs:
        per_scan = [_percent(by_key[(organ, scan_id)].dice) if (organ, scan_id) in by_key else "" for scan_id in scan_ids]
        summary = [_percent(means[metric][organ]) for metric in ("dice", "precision", "recall")]
        lines.append("| " + " | ".join([organ, *per_scan, *summary]) + " |")
    organ_dice = [means["dice"][organ] for organ in organs]
    lines.append("| **mean** | " + " | ".join([""] * len(scan_ids) + [_percent(mean_and_std(organ_dice)[0]), "", ""]) + " |")
    return "\n".join(lines)


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"
