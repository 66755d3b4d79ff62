"""The volume operations that turn raw CHAOS, Synapse (SABS) and MS-CMRSeg scans into the layout.

Implements docs/PROTOCOL.md, "Preprocessing from the raw downloads" (the SSL-ALPNet protocol,
Ouyang et al., ECCV 2020, whose data notebooks clip, resample and crop the same way): intensity
clipping, label checks, resampling onto a new grid, in-plane crop/pad, the CT body box and the MR
pipeline shared by CHAOS and CMR. preprocessing/cases.py runs them over the cases of a download.

Volumes are SimpleITK images; their arrays are (Z, H, W). Sizes, spacings and voxel indices in
the signatures are in SimpleITK order (x, y, z) = (W, H, Z). Every step keeps the physical
geometry right: resampled and cropped images carry the origin, spacing and direction of their
new grid, so labels, images and the scanner coordinates stay aligned.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from utils.io import DataError

# In-plane size of every preprocessed slice (W, H), docs/PROTOCOL.md "Datasets".
PREPROCESSED_SIZE_XY = (256, 256)
# MR: the brightest 0.5% of voxels are clipped (off-resonance artefacts), docs/PROTOCOL.md.
DEFAULT_TOP_CLIP_PERCENT = 0.5
# Largest stored label value a uint16 label volume can hold (CMR stores 600).
MAX_LABEL_VALUE = np.iinfo(np.uint16).max
# Label files must hold whole numbers; floats within this of an integer are accepted.
LABEL_INTEGER_TOLERANCE = 1e-3
# Image and label of one case must agree on the grid to within these (mm, relative, cosine).
GEOMETRY_ORIGIN_TOLERANCE_MM = 1e-2
GEOMETRY_SPACING_RELATIVE_TOLERANCE = 1e-4
GEOMETRY_DIRECTION_TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------
# Intensities and labels


def _image_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def clip_top_percent(image: sitk.Image, percent: float = DEFAULT_TOP_CLIP_PERCENT) -> sitk.Image:
    """Float32 copy of `image` (Z, H, W) with every voxel above its (100 - percent)th percentile
    set to that percentile (SSL-ALPNet's histogram cut); geometry unchanged."""
    if not 0.0 <= percent < 100.0:
        raise ValueError(f"percent must be in [0, 100), got {percent}")
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    ceiling = np.float32(np.percentile(array, 100.0 - percent))
    return _image_like(np.minimum(array, ceiling), image)


def clip_window(image: sitk.Image, low: float, high: float) -> sitk.Image:
    """Float32 copy of `image` (Z, H, W) clipped to [low, high] (a CT HU window)."""
    if not low < high:
        raise ValueError(f"window must have low < high, got [{low}, {high}]")
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    return _image_like(np.clip(array, low, high), image)


def as_label_image(label: sitk.Image, source: str | os.PathLike) -> sitk.Image:
    """`label` (Z, H, W) as uint16 with the same geometry; non-integer, negative or too large
    values are a DataError naming `source` (labels may be stored as floats)."""
    values = sitk.GetArrayFromImage(label)
    rounded = values
    if not np.issubdtype(values.dtype, np.integer):
        rounded = np.rint(values)
        bad = np.abs(values - rounded) > LABEL_INTEGER_TOLERANCE
        if np.any(bad):
            raise DataError(f"{source}: label volume holds non-integer values, e.g. {values[bad].flat[0]}")
    # compared as Python numbers: np.rint of a small float type must not meet 65535 in that type
    low, high = (float(rounded.min()), float(rounded.max())) if rounded.size else (0.0, 0.0)
    if low < 0 or high > MAX_LABEL_VALUE:
        raise DataError(f"{source}: label values must lie in 0..{MAX_LABEL_VALUE}, found {low:g}..{high:g}")
    return _image_like(rounded.astype(np.uint16), label)


def adopt_image_geometry(label: sitk.Image, image: sitk.Image, label_source: str | os.PathLike) -> sitk.Image:
    """`label` on exactly the grid of `image`; a DataError naming `label_source` when the two
    differ in size or (beyond rounding of the stored header) in origin, spacing or direction."""
    if label.GetSize() != image.GetSize():
        raise DataError(f"{label_source}: label size {label.GetSize()} differs from the image size {image.GetSize()}")
    origin_gap = np.max(np.abs(np.subtract(label.GetOrigin(), image.GetOrigin())))
    spacing_gap = np.max(np.abs(np.divide(label.GetSpacing(), image.GetSpacing()) - 1.0))
    direction_gap = np.max(np.abs(np.subtract(label.GetDirection(), image.GetDirection())))
    if (
        origin_gap > GEOMETRY_ORIGIN_TOLERANCE_MM
        or spacing_gap > GEOMETRY_SPACING_RELATIVE_TOLERANCE
        or direction_gap > GEOMETRY_DIRECTION_TOLERANCE
    ):
        raise DataError(
            f"{label_source}: label geometry differs from its image (origin {label.GetOrigin()} vs "
            f"{image.GetOrigin()}, spacing {label.GetSpacing()} vs {image.GetSpacing()})"
        )
    aligned = sitk.Image(label)
    aligned.CopyInformation(image)
    return aligned


# ---------------------------------------------------------------------------------------------
# Resampling and cropping


def resample_box(
    image: sitk.Image,
    start: Sequence[float],
    extent: Sequence[float],
    size: Sequence[int],
    *,
    is_label: bool,
    pad_value: float = 0.0,
) -> sitk.Image:
    """Resample a box of `image` onto `size` voxels (x, y, z), keeping the direction matrix.

    The box starts at voxel index `start` of `image` (may be negative or fractional: a box that
    leaves the image is padded with `pad_value`) and spans `extent` input voxels per axis, so the
    output spacing is extent * spacing / size. Labels use nearest neighbour, images linear
    interpolation. With extent == size and integer `start` this is an exact crop/pad.
    """
    start, extent = np.asarray(start, dtype=float), np.asarray(extent, dtype=float)
    size = np.asarray(size, dtype=int)
    if np.any(size < 1) or np.any(extent <= 0):
        raise ValueError(f"box needs positive extent and size, got extent {extent}, size {size}")
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    first_centre = start - 0.5 + 0.5 * extent / size  # box edge plus half an output voxel
    origin = image.TransformContinuousIndexToPhysicalPoint(first_centre.tolist())
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    return sitk.Resample(
        image,
        size.tolist(),
        sitk.Transform(),
        interpolator,
        origin,
        (extent * spacing / size).tolist(),
        image.GetDirection(),
        float(pad_value),
        image.GetPixelID(),
    )


def resample_to_spacing(
    image: sitk.Image, spacing: Sequence[float | None], *, is_label: bool, pad_value: float = 0.0
) -> sitk.Image:
    """Resample `image` to `spacing` (x, y, z) mm; None keeps that axis as it is.

    The grid starts at the same field-of-view corner and holds round(extent / spacing) voxels
    per axis, so the physical extent is kept to within one output voxel.
    """
    old_spacing = np.asarray(image.GetSpacing(), dtype=float)
    new_spacing = np.array([old if new is None else new for old, new in zip(old_spacing, spacing)], dtype=float)
    old_size = np.asarray(image.GetSize(), dtype=float)
    new_size = np.maximum(1, np.rint(old_size * old_spacing / new_spacing)).astype(int)
    extent = new_size * new_spacing / old_spacing
    return resample_box(image, np.zeros(3), extent, new_size, is_label=is_label, pad_value=pad_value)


def crop_or_pad_xy(
    image: sitk.Image, start_xy: Sequence[int], size_xy: Sequence[int], *, is_label: bool, pad_value: float = 0.0
) -> sitk.Image:
    """Exact in-plane crop/pad of `image` (Z, H, W) -> (Z, size_y, size_x) starting at voxel
    `start_xy` (negative: pad before the image); all slices kept."""
    depth = image.GetSize()[2]
    start = (int(start_xy[0]), int(start_xy[1]), 0)
    size = (int(size_xy[0]), int(size_xy[1]), depth)
    return resample_box(image, start, size, size, is_label=is_label, pad_value=pad_value)


def centre_crop_or_pad_xy(
    image: sitk.Image, size_xy: Sequence[int] = PREPROCESSED_SIZE_XY, *, is_label: bool, pad_value: float = 0.0
) -> sitk.Image:
    """(Z, H, W) -> (Z, size_y, size_x) around the slice centre (index n // 2 lands on size // 2,
    as in SSL-ALPNet's crop)."""
    start_xy = [image.GetSize()[axis] // 2 - int(size_xy[axis]) // 2 for axis in range(2)]
    return crop_or_pad_xy(image, start_xy, size_xy, is_label=is_label, pad_value=pad_value)


def body_square_xy(array: np.ndarray, threshold: float, source: str | os.PathLike) -> tuple[tuple[int, int], int]:
    """In-plane square around the body of a CT volume `array` (Z, H, W).

    Body = the largest 3D connected component (face connectivity) of `array > threshold`; its
    bounding box over all slices is widened on its shorter side (about its centre) to a square,
    so that resampling the square to 256 x 256 keeps square pixels. Returns ((x0, y0), side); the
    square may reach outside the image (then it is padded). No voxel above `threshold` is a
    DataError naming `source`.
    """
    components, count = ndimage.label(array > threshold)
    if count == 0:
        raise DataError(f"{source}: no voxel above {threshold} (no body found for the body crop)")
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    body = components == int(np.argmax(sizes))
    rows = np.flatnonzero(body.any(axis=(0, 2)))
    cols = np.flatnonzero(body.any(axis=(0, 1)))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    side = int(max(height, width))
    x0 = int(cols[0]) - (side - int(width)) // 2
    y0 = int(rows[0]) - (side - int(height)) // 2
    return (x0, y0), side


# ---------------------------------------------------------------------------------------------
# The MR pipeline shared by CHAOS and CMR


def preprocess_mr(
    image: sitk.Image,
    label: sitk.Image,
    spacing: Sequence[float | None],
    *,
    size_xy: Sequence[int] = PREPROCESSED_SIZE_XY,
    clip_percent: float = DEFAULT_TOP_CLIP_PERCENT,
) -> tuple[sitk.Image, sitk.Image]:
    """Clip the top `clip_percent`% of intensities, resample to `spacing` (x, y, z mm, None keeps
    an axis), centre crop/pad to `size_xy`. `label` (uint16, on the image's grid) follows with
    nearest neighbour; image padding uses the clipped image's minimum (as SSL-ALPNet does).
    Returns (image float32 (Z', size_y, size_x), label uint16 of the same geometry)."""
    clipped = clip_top_percent(image, clip_percent)
    pad_value = float(sitk.GetArrayViewFromImage(clipped).min())
    image_out = resample_to_spacing(clipped, spacing, is_label=False, pad_value=pad_value)
    label_out = resample_to_spacing(label, spacing, is_label=True)
    image_out = centre_crop_or_pad_xy(image_out, size_xy, is_label=False, pad_value=pad_value)
    label_out = centre_crop_or_pad_xy(label_out, size_xy, is_label=True)
    return image_out, label_out
