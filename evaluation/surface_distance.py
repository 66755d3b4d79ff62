"""Surface distances between a binary prediction and its ground truth, in millimetres.

The definitions are MedPy's (`medpy.metric.binary.hd95` / `assd`), which most medical segmentation
papers use: the surface of a mask is its voxels that a one-voxel erosion with face connectivity
removes (voxels on the border of the array count as surface); every surface voxel of one mask
gets the Euclidean distance, in mm with the voxel spacing, to the nearest surface voxel of the
other mask, in both directions. HD95 is the 95th percentile of the pooled distances of both
directions, ASSD their mean. bench/bench_surface_distances.py checks the values against MedPy and
says why this implementation is used instead of a package (docs/PROTOCOL.md, "Metric").

Both masks are cropped to the bounding box of their union widened by one voxel before the
distance transform: every surface voxel lies inside it, so the distances are exact, and an organ
of a few thousand voxels in a volume of millions costs a small transform.

Undefined values: when either mask is empty there is no surface to measure from, and the
distances are NaN (never 0, never a penalty value). Averages over scans skip NaN and the
evaluation summary counts how many scans were skipped per metric.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

HD_PERCENTILE = 95
FACE_CONNECTIVITY = 1  # the erosion's structuring element: neighbours sharing a face
BOX_MARGIN = 1  # voxels around the union's bounding box, so that the erosion sees its background


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Slices of the smallest box holding every True voxel of `mask`, widened by BOX_MARGIN."""
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(other for other in range(mask.ndim) if other != axis)))
        box.append(slice(max(int(present[0]) - BOX_MARGIN, 0), min(int(present[-1]) + BOX_MARGIN + 1, mask.shape[axis])))
    return tuple(box)


def _surface(mask: np.ndarray) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, FACE_CONNECTIVITY)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(prediction: np.ndarray, truth: np.ndarray,
                      spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
    """(distances from the prediction's surface voxels to the truth's surface, and from the truth's
    to the prediction's) in mm, each (N,) float64; None when either mask is empty.

    prediction, truth: binary (Z, H, W) (any number of axes); spacing: voxel size per axis in mm,
    in the arrays' axis order (z, y, x).
    """
    prediction, truth = np.asarray(prediction, dtype=bool), np.asarray(truth, dtype=bool)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {prediction.shape} != truth shape {truth.shape}")
    if len(spacing) != prediction.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} values for {prediction.ndim}D masks")
    if not prediction.any() or not truth.any():
        return None
    box = _bounding_box(prediction | truth)
    prediction_surface, truth_surface = _surface(prediction[box]), _surface(truth[box])
    sampling = np.asarray(spacing, dtype=np.float64)
    to_truth = ndimage.distance_transform_edt(~truth_surface, sampling=sampling)[prediction_surface]
    to_prediction = ndimage.distance_transform_edt(~prediction_surface, sampling=sampling)[truth_surface]
    return to_truth, to_prediction


def hausdorff_distance_95(prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float:
    """95th percentile of the symmetric surface distances (mm); NaN when either mask is empty."""
    distances = surface_distances(prediction, truth, spacing)
    if distances is None:
        return math.nan
    return float(np.percentile(np.concatenate(distances), HD_PERCENTILE))


def average_symmetric_surface_distance(prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float:
    """Mean of the symmetric surface distances (mm); NaN when either mask is empty."""
    distances = surface_distances(prediction, truth, spacing)
    if distances is None:
        return math.nan
    return float(np.concatenate(distances).mean())


def average_surface_distance(prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float:
    """MedPy's `asd` (which SSL4MIS's test script reports as ASD): the mean distance from the
    prediction's surface voxels to the truth's surface, one direction only (mm, or voxels with unit
    spacing); NaN when either mask is empty."""
    distances = surface_distances(prediction, truth, spacing)
    if distances is None:
        return math.nan
    return float(distances[0].mean())
