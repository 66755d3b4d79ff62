"""Evaluation of the semi-supervised track: whole volumes, slice by slice, every class at once.

As SSL4MIS's `code/val_2D.py` and `code/test_2D_fully.py`: each slice of a volume is resized to the
patch size with nearest-neighbour interpolation (`zoom(..., order=0)`), segmented (argmax of the
softmax), and the label map is resized back the same way; each class is then scored as a binary 3D
mask against the ground truth with the registered metrics (evaluation/metrics.py), in mm where the
spacing is known and in voxels otherwise (ACDC).

Empty predictions (`metric_rules`): SSL4MIS's validation scores a class that the prediction does
not contain as Dice 0 and HD95 0, and its test script stops with MedPy's error, so that no
published number includes one; "ssl4mis" (the track's default, for comparability) gives every
metric 0 for an empty prediction, and the summary counts these cases (`empty_predictions`);
"project" applies this project's rules (Dice 0, distances undefined; evaluation/metrics.py).

Which slices a class is scored on (`scored_slices`): "volume" (SSL4MIS: every slice of the volume,
so a false positive in a slice without the structure counts) or "organ_extent" (the few-shot
protocol's block, docs/PROTOCOL.md "Test-time episodes": the slices from the class's first to its
last ground-truth slice, margin 0; a volume without the class has no such block and is skipped for
it, never scored). "organ_extent" with the "project" rules scores a semi-supervised model exactly as
the few-shot evaluation scores its query scans, which is how the two tracks are compared.

Post-processing (`postprocessing`): "none" (SSL4MIS: the argmax as it is) or "largest_component"
(each class of the label map reduced to its largest face-connected 3D component, the rest set to
background; a common step in medical segmentation that SSL4MIS does not take). Applied to the
whole volume before the slices are chosen; validation during training never post-processes.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
from scipy import ndimage
import torch

from dataloaders.semi_supervised_data import EvaluationVolume
from dataloaders.slice_batches import resize_nearest
from evaluation.metrics import METRICS, check_metric_names
from evaluation.overlap import overlap_counts
from evaluation.prediction import NonFiniteLogits
from evaluation.scoring import Evaluation, ScanScore
from utils.runtime import autocast, evaluation_mode

METRIC_RULES = ("ssl4mis", "project")
SCORED_SLICES = ("volume", "organ_extent")
NO_POSTPROCESSING, LARGEST_COMPONENT = "none", "largest_component"
POSTPROCESSING = (NO_POSTPROCESSING, LARGEST_COMPONENT)
BACKGROUND_LABEL = 0
SSL4MIS_EMPTY_PREDICTION_SCORE = 0.0  # val_2D.calculate_metric_percase: `return 0, 0` when pred.sum() == 0


@torch.no_grad()
def segment_volume(model: torch.nn.Module, image: np.ndarray, patch_size: int, device: torch.device,
                   precision: str, batch_size: int) -> np.ndarray:
    """image (Z, H, W) float32 -> label map (Z, H, W) int64, slice by slice at patch_size."""
    height, width = image.shape[1:]
    patches = np.stack([resize_nearest(image_slice, patch_size) for image_slice in image]).astype(np.float32)
    prediction = np.zeros(image.shape, dtype=np.int64)
    for start in range(0, len(patches), batch_size):
        batch = torch.from_numpy(patches[start:start + batch_size]).unsqueeze(1).to(device)  # (b, 1, P, P)
        with autocast(device, precision):
            logits = model(batch)  # (b, K, P, P)
        if not torch.isfinite(logits).all():
            raise NonFiniteLogits("the model's logits are not finite (NaN or infinite); its weights have diverged")
        labels = logits.float().argmax(dim=1).cpu().numpy()
        for offset, label_map in enumerate(labels):
            prediction[start + offset] = resize_nearest(label_map, height, width)
    return prediction


def keep_largest_components(prediction: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """(Z, H, W) label map -> a copy in which each class of `classes` keeps only its largest
    face-connected 3D component (the first of equal ones); its other components become background."""
    kept = prediction.copy()
    for label in classes:
        components, count = ndimage.label(prediction == label)
        if count > 1:
            sizes = np.bincount(components.ravel())[1:]  # voxels per component 1..count
            kept[(components > 0) & (components != 1 + int(sizes.argmax()))] = BACKGROUND_LABEL
    return kept


def class_extent(truth: np.ndarray) -> slice | None:
    """The slices from the first to the last one of a (Z, H, W) binary mask that hold the class; None
    when no slice does."""
    present = np.flatnonzero(truth.any(axis=(1, 2)))
    return slice(present[0], present[-1] + 1) if present.size else None


def score_volume(prediction: np.ndarray, volume: EvaluationVolume, classes: dict[int, str],
                 metric_names: Sequence[str], metric_rules: str, scored_slices: str = "volume") -> list[ScanScore]:
    """One ScanScore per class of a (Z, H, W) label map against the volume's labels; under
    "organ_extent" on the class's ground-truth slices only, and none for a class the volume lacks."""
    if metric_rules not in METRIC_RULES:
        raise ValueError(f"metric_rules must be one of {METRIC_RULES}, got {metric_rules!r}")
    if scored_slices not in SCORED_SLICES:
        raise ValueError(f"scored_slices must be one of {SCORED_SLICES}, got {scored_slices!r}")
    scores = []
    for label, name in classes.items():
        predicted, truth = prediction == label, volume.label == label
        if scored_slices == "organ_extent":
            extent = class_extent(truth)
            if extent is None:
                continue
            predicted, truth = predicted[extent], truth[extent]
        if metric_rules == "ssl4mis" and not predicted.any():
            values = {metric: SSL4MIS_EMPTY_PREDICTION_SCORE for metric in metric_names}
        else:
            values = {metric: METRICS[metric].compute(predicted, truth, volume.spacing) for metric in metric_names}
        scores.append(ScanScore(name, label, volume.case_id, values, overlap_counts(predicted, truth)))
    return scores


def classes_absent(volumes: Iterable[EvaluationVolume], classes: dict[int, str]) -> dict[str, list[str]]:
    """{class name: the volumes without it} for the classes some volume lacks (skipped under
    "organ_extent", as the few-shot protocol skips a query scan without the organ)."""
    absent = {name: [volume.case_id for volume in volumes if not (volume.label == label).any()]
              for label, name in classes.items()}
    return {name: case_ids for name, case_ids in absent.items() if case_ids}


def evaluate_volumes(model: torch.nn.Module, volumes: Iterable[EvaluationVolume], classes: dict[int, str],
                     patch_size: int, device: torch.device, precision: str, batch_size: int,
                     metric_names: Sequence[str], metric_rules: str, scored_slices: str = "volume",
                     progress: Callable[[Iterable], Iterable] | None = None,
                     postprocessing: str = NO_POSTPROCESSING) -> Evaluation:
    """Segment, post-process and score every volume; predictions keyed (class label, case id) as
    (Z, H, W) bool, post-processed. The model runs in eval mode and is left in the mode it was in."""
    metric_names = check_metric_names(metric_names)
    if postprocessing not in POSTPROCESSING:
        raise ValueError(f"postprocessing must be one of {POSTPROCESSING}, got {postprocessing!r}")
    scores, predictions = [], {}
    with evaluation_mode(model):
        for volume in progress(volumes) if progress else volumes:
            prediction = segment_volume(model, volume.image, patch_size, device, precision, batch_size)
            if postprocessing == LARGEST_COMPONENT:
                prediction = keep_largest_components(prediction, classes)
            scores += score_volume(prediction, volume, classes, metric_names, metric_rules, scored_slices)
            for label in classes:
                predictions[(label, volume.case_id)] = torch.from_numpy(prediction == label)
    return Evaluation(scores, predictions, metric_names)


def empty_prediction_counts(evaluation: Evaluation) -> dict[str, int]:
    """{class: volumes whose prediction does not contain it}, from the voxel counts."""
    counts: dict[str, int] = {}
    for score in evaluation.scores:
        empty = score.counts.true_positives + score.counts.false_positives == 0
        counts[score.organ] = counts.get(score.organ, 0) + int(empty)
    return counts
