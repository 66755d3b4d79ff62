"""Dice, precision, recall and surface distances on hand-made masks, the NaN rules, and the
promise of the metric registry: a new metric is one function and one registry line."""
import csv
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from evaluation.metrics import METRICS, Metric
from evaluation.overlap import OverlapCounts, overlap_counts
from evaluation.reports import summarize, write_evaluation
from evaluation.prediction import NonFiniteLogits
from evaluation.scoring import Evaluation, evaluate_episodes, mean_and_std, score_prediction
from evaluation.surface_distance import average_symmetric_surface_distance, hausdorff_distance_95, surface_distances
from utils.io import read_json

UNIT_SPACING = (1.0, 1.0, 1.0)
CUBE = 4  # side of the hand-made cubes: 56 surface voxels around a 2 x 2 x 2 interior
VOLUME = 10


def cube(z: int = 2, y: int = 2, x: int = 2) -> np.ndarray:
    volume = np.zeros((VOLUME, VOLUME, VOLUME), dtype=bool)
    volume[z : z + CUBE, y : y + CUBE, x : x + CUBE] = True
    return volume


def metric(name: str, prediction, truth, spacing=UNIT_SPACING) -> float:
    return METRICS[name].compute(prediction, truth, spacing)


def test_dice_of_two_overlapping_squares_matches_hand_count():
    prediction = np.zeros((2, 8, 8), bool)
    target = np.zeros((2, 8, 8), bool)
    prediction[0, 0:4, 0:4] = True  # 16 voxels
    target[0, 2:6, 0:4] = True  # 16 voxels, 8 shared
    target[1, 0:2, 0:2] = True  # 4 voxels missed in another slice
    counts = overlap_counts(prediction, target)
    assert counts == OverlapCounts(true_positives=8, false_positives=8, false_negatives=12)
    assert metric("dice", prediction, target) == pytest.approx(2 * 8 / (16 + 20))
    assert metric("precision", prediction, target) == pytest.approx(0.5)
    assert metric("recall", prediction, target) == pytest.approx(8 / 20)


def test_counts_summed_over_slices_give_3d_dice_not_mean_of_slice_dice():
    target = torch.zeros(2, 4, 4, dtype=torch.bool)
    prediction = torch.zeros_like(target)
    target[0] = True  # 16 voxels, all found
    prediction[0] = True
    target[1, 0, 0] = True  # 1 voxel, missed: slice Dice 1 and 0 would average to 0.5
    assert metric("dice", prediction.numpy(), target.numpy()) == pytest.approx(32 / 33)
    per_slice = overlap_counts(prediction[0], target[0]) + overlap_counts(prediction[1], target[1])
    assert per_slice.dice == pytest.approx(32 / 33)


def test_dice_is_nan_when_organ_absent_from_prediction_and_ground_truth():
    empty = np.zeros((3, 5, 5), bool)
    assert all(math.isnan(metric(name, empty, empty)) for name in METRICS)


def test_empty_prediction_scores_zero_dice_and_undefined_surface_distances():
    truth = cube()
    empty = np.zeros_like(truth)
    assert metric("dice", empty, truth) == 0.0 and metric("recall", empty, truth) == 0.0
    assert math.isnan(metric("precision", empty, truth))
    assert math.isnan(metric("hd95", empty, truth)) and math.isnan(metric("assd", empty, truth))
    assert surface_distances(empty, truth, UNIT_SPACING) is None


def test_empty_truth_scores_zero_dice_and_undefined_recall_and_distances():
    prediction = cube()
    empty = np.zeros_like(prediction)
    assert metric("dice", prediction, empty) == 0.0 and metric("precision", prediction, empty) == 0.0
    assert math.isnan(metric("recall", prediction, empty))
    assert math.isnan(metric("hd95", prediction, empty)) and math.isnan(metric("assd", prediction, empty))


def test_cube_shifted_by_one_voxel_has_hand_counted_surface_distances():
    # Per direction, 56 surface voxels: the 16 of the far face and the 4 centre voxels of the near
    # face are 1 voxel from the other cube's surface, the other 36 lie on it.
    to_truth, to_prediction = surface_distances(cube(x=3), cube(x=2), UNIT_SPACING)
    for distances in (to_truth, to_prediction):
        assert len(distances) == 56
        assert sorted(np.unique(distances, return_counts=True)[1].tolist()) == [20, 36]
    assert hausdorff_distance_95(cube(x=3), cube(x=2), UNIT_SPACING) == 1.0  # 40 of 112 pooled distances are 1
    assert average_symmetric_surface_distance(cube(x=3), cube(x=2), UNIT_SPACING) == pytest.approx(40 / 112)
    assert metric("hd95", cube(), cube()) == 0.0 and metric("assd", cube(), cube()) == 0.0


def test_anisotropic_spacing_is_applied_per_array_axis_z_y_x():
    # Shifted by one slice with 3 mm slices and 2 x 0.5 mm pixels: the far faces are 3 mm from the
    # other surface, the near faces' centre voxels 0.5 mm (one pixel along x); reading the spacing
    # in SimpleITK's (x, y, z) order instead would give 0.5 mm for the far faces.
    spacing_zyx = (3.0, 2.0, 0.5)
    prediction, truth = cube(z=3), cube(z=2)
    assert metric("hd95", prediction, truth, spacing_zyx) == 3.0
    assert metric("assd", prediction, truth, spacing_zyx) == pytest.approx((32 * 3.0 + 8 * 0.5) / 112)
    assert metric("hd95", prediction, truth, spacing_zyx[::-1]) == 0.5


def test_surface_distances_check_shapes_and_spacing():
    with pytest.raises(ValueError, match="shape"):
        overlap_counts(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="shape"):
        surface_distances(np.ones((2, 3, 3)), np.ones((3, 3, 3)), UNIT_SPACING)
    with pytest.raises(ValueError, match="spacing"):
        surface_distances(np.ones((2, 3, 3)), np.ones((2, 3, 3)), (1.0, 1.0))


def test_mean_and_std_skip_undefined_scores():
    mean, std = mean_and_std([0.5, math.nan, 0.7])
    assert mean == pytest.approx(0.6)
    assert std == pytest.approx(0.1)
    assert all(math.isnan(value) for value in mean_and_std([math.nan]))


def hand_episode(organ: str, label: int, scan_id: int, truth: np.ndarray, spacing=UNIT_SPACING) -> SimpleNamespace:
    return SimpleNamespace(organ=organ, label=label, query_scan_id=scan_id,
                           query_labels=torch.from_numpy(truth.astype(np.int64)), voxel_spacing=spacing)


def test_a_registered_metric_reaches_the_summary_csv_and_table(tmp_path, monkeypatch):
    def maximum_surface_distance(prediction, truth, spacing):
        distances = surface_distances(prediction, truth, spacing)
        return math.nan if distances is None else float(np.concatenate(distances).max())

    monkeypatch.setitem(METRICS, "hd_max", Metric(maximum_surface_distance, "mm"))
    names = ("dice", "hd95", "hd_max")
    empty = torch.zeros(VOLUME, VOLUME, VOLUME, dtype=torch.bool)
    scores = [score_prediction(hand_episode("liver", 1, 3, cube(x=2)), torch.from_numpy(cube(x=3)), names),
              score_prediction(hand_episode("liver", 1, 5, cube(x=2)), empty, names)]
    evaluation = Evaluation(scores, {}, names)
    summary = summarize(evaluation, {"eval_fold": 0})
    write_evaluation(evaluation, summary, tmp_path)

    liver = read_json(tmp_path / "summary.json")["organs"]["liver"]
    assert liver["hd_max"] == 1.0 and liver["scans"]["3"]["hd_max"] == 1.0
    assert liver["dice"] == pytest.approx((2 * 48 / 128 + 0.0) / 2)  # 48 of 64 voxels shared; empty: 0
    assert liver["undefined"] == {"dice": 0, "hd95": 1, "hd_max": 1}  # the empty prediction of scan 5
    with (tmp_path / "scores.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["hd_max"] for row in rows] == ["1.0", "nan"] and rows[0]["true_positives"] == "48"
    assert "hd_max (mm)" in (tmp_path / "table.md").read_text()


def test_evaluation_refuses_non_finite_logits_naming_the_episode():
    class DivergedModel(torch.nn.Module):
        def forward(self, support_images, support_masks, query_images):
            return SimpleNamespace(logits=torch.full((query_images.shape[0], 2, 8, 8), float("nan")))

    episode = SimpleNamespace(
        organ="spleen", label=4, query_scan_id=7, support_images=torch.zeros(1, 1, 3, 8, 8),
        support_masks=torch.ones(1, 1, 8, 8), query_images=torch.zeros(2, 3, 8, 8),
        query_labels=torch.zeros(2, 8, 8, dtype=torch.int64), part_index=torch.zeros(2, dtype=torch.int64),
        voxel_spacing=UNIT_SPACING,
    )
    with pytest.raises(NonFiniteLogits, match="spleen, query scan 7"):
        evaluate_episodes(DivergedModel(), [episode], torch.device("cpu"), "fp32", batch_size=4)
