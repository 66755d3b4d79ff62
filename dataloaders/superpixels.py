"""Superpixel pseudolabels for self-supervised episodes (SSL-ALPNet, Ouyang et al. ECCV 2020, Sec. 3.3).

docs/PROTOCOL.md, "Derived files": per axial slice, skimage Felzenszwalb with sigma 1, min_size 400
and the "MIDDLE" scale, computed on the stored intensities; superpixels are kept only inside a
body mask (intensity above a threshold, largest connected component, holes filled), 0 outside
the body, ids renumbered 1..n in every slice.

The 3D supervoxel variant of ADNet/Q-Net is not provided: skimage's Felzenszwalb is 2D only and
the graph method merges edges in one sorted sequential pass (each merge changes the thresholds
of the next), which does not vectorise with numpy/scipy.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import felzenszwalb

# SSL-ALPNet's "MIDDLE" mode calls felzenszwalb without `scale`, i.e. skimage's default of 1.
FELZENSZWALB_SCALE_MIDDLE = 1.0
FELZENSZWALB_SIGMA = 1.0
FELZENSZWALB_MIN_SIZE = 400

# The body threshold sits this fraction of the way from the scan's minimum to its high
# percentile. SSL-ALPNet used a fixed 50 on CHAOST2, whose 99th percentile is about 800
# (50 / 800 ~ 0.06); a fraction of the scan's own range also works for CT (air at -125 HU).
BODY_THRESHOLD_FRACTION = 0.06
BODY_THRESHOLD_PERCENTILE = 99.0


def body_threshold(
    volume: np.ndarray,
    fraction: float = BODY_THRESHOLD_FRACTION,
    percentile: float = BODY_THRESHOLD_PERCENTILE,
) -> float:
    """Intensity above which a voxel of `volume` (Z, H, W) counts as body: min + fraction * (p - min)."""
    low = float(np.min(volume))
    high = float(np.percentile(volume, percentile))
    return low + fraction * (high - low)


def body_mask_2d(plane: np.ndarray, threshold: float) -> np.ndarray:
    """(H, W) bool: largest connected region of `plane > threshold`, holes filled (empty if none)."""
    above = plane > threshold
    components, n_components = ndimage.label(above)
    if n_components == 0:
        return above
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(components == int(np.argmax(sizes)))


def _renumber_inside(segments: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W) segment ids -> int32 ids 1..n inside `mask`, 0 outside."""
    out = np.zeros(segments.shape, dtype=np.int32)
    _, consecutive = np.unique(segments[mask], return_inverse=True)
    out[mask] = consecutive.astype(np.int32) + 1
    return out


def superpixels_2d(
    volume: np.ndarray,
    *,
    scale: float = FELZENSZWALB_SCALE_MIDDLE,
    sigma: float = FELZENSZWALB_SIGMA,
    min_size: int = FELZENSZWALB_MIN_SIZE,
    body_threshold_fraction: float = BODY_THRESHOLD_FRACTION,
) -> np.ndarray:
    """Per-slice Felzenszwalb superpixels of `volume` (Z, H, W) -> (Z, H, W) int32.

    Ids are 1..n within each slice and 0 outside the body mask; a superpixel may be smaller than
    `min_size` only where the body mask clips it. `volume` holds stored intensities (not z-scored).
    """
    volume = np.asarray(volume, dtype=np.float64)
    if volume.ndim != 3:
        raise ValueError(f"superpixels_2d expects a (Z, H, W) volume, got shape {volume.shape}")
    threshold = body_threshold(volume, body_threshold_fraction)
    out = np.zeros(volume.shape, dtype=np.int32)
    for z, plane in enumerate(volume):
        mask = body_mask_2d(plane, threshold)
        if not mask.any():
            continue
        segments = felzenszwalb(plane, scale=scale, sigma=sigma, min_size=min_size, channel_axis=None)
        out[z] = _renumber_inside(segments, mask)
    return out
