"""Dice, precision and recall on hand-made masks, and the protocol's NaN rule."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from utils.evaluation import NonFiniteLogits, evaluate_episodes
from utils.metrics import OverlapCounts, dice_score, mean_and_std, overlap_counts


def test_dice_of_two_overlapping_squares_matches_hand_count():
    prediction = np.zeros((2, 8, 8), bool)
    target = np.zeros((2, 8, 8), bool)
    prediction[0, 0:4, 0:4] = True  # 16 voxels
    target[0, 2:6, 0:4] = True  # 16 voxels, 8 shared
    target[1, 0:2, 0:2] = True  # 4 voxels missed in another slice
    counts = overlap_counts(prediction, target)
    assert counts == OverlapCounts(true_positives=8, false_positives=8, false_negatives=12)
    assert counts.dice == pytest.approx(2 * 8 / (16 + 20))
    assert counts.precision == pytest.approx(0.5)
    assert counts.recall == pytest.approx(8 / 20)


def test_counts_summed_over_slices_give_3d_dice_not_mean_of_slice_dice():
    target = torch.zeros(2, 4, 4, dtype=torch.bool)
    prediction = torch.zeros_like(target)
    target[0] = True  # 16 voxels, all found
    prediction[0] = True
    target[1, 0, 0] = True  # 1 voxel, missed
    assert dice_score(prediction, target) == pytest.approx(32 / 33)
    per_slice = overlap_counts(prediction[0], target[0]) + overlap_counts(prediction[1], target[1])
    assert per_slice.dice == pytest.approx(32 / 33)


def test_dice_is_nan_when_organ_absent_from_prediction_and_ground_truth():
    empty = np.zeros((3, 5, 5), bool)
    assert math.isnan(dice_score(empty, empty))
    assert math.isnan(overlap_counts(empty, empty).precision)


def test_dice_is_zero_when_prediction_misses_a_present_organ():
    target = np.zeros((1, 5, 5), bool)
    target[0, 2, 2] = True
    assert dice_score(np.zeros_like(target), target) == 0.0


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="shape"):
        overlap_counts(np.zeros((2, 3)), np.zeros((3, 2)))


def test_mean_and_std_skip_undefined_scores():
    mean, std = mean_and_std([0.5, math.nan, 0.7])
    assert mean == pytest.approx(0.6)
    assert std == pytest.approx(0.1)
    assert all(math.isnan(value) for value in mean_and_std([math.nan]))


def test_evaluation_refuses_non_finite_logits_naming_the_episode():
    class DivergedModel(torch.nn.Module):
        def forward(self, support_images, support_masks, query_images):
            return SimpleNamespace(logits=torch.full((query_images.shape[0], 2, 8, 8), float("nan")))

    episode = SimpleNamespace(
        organ="spleen", label=4, query_scan_id=7, support_images=torch.zeros(1, 1, 3, 8, 8),
        support_masks=torch.ones(1, 1, 8, 8), query_images=torch.zeros(2, 3, 8, 8),
        query_labels=torch.zeros(2, 8, 8, dtype=torch.int64), part_index=torch.zeros(2, dtype=torch.int64),
    )
    with pytest.raises(NonFiniteLogits, match="spleen, query scan 7"):
        evaluate_episodes(DivergedModel(), [episode], torch.device("cpu"), "fp32", batch_size=4)
