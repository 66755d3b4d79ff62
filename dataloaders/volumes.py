"""Loading preprocessed scans: validation, label remapping, normalisation, resizing, caching.

Implements the "Datasets (preprocessed layout)" and "Derived files" parts of the protocol
(docs/PROTOCOL.md) and the on-disk layout of `docs/DESIGN.md`: every dataset folder
holds `image_<id>.nii.gz` + `label_<id>.nii.gz` with the same geometry; MR scans are z-scored
per scan at load time, CT scans with one mean and standard deviation, those of the fold's training
scans (from their records in `dataset.json`, see dataloaders/dataset_metadata.py).
Every inconsistency in the files raises `utils.io.DataError` naming the file.
"""
from __future__ import annotations

import logging
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk

from dataloaders.specs import DatasetSpec
from utils.io import DataError, file_sha256, image_voxels, read_image, read_json

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT_ENV = "FSMIS_DATA_ROOT"
DEFAULT_DATA_ROOT = REPO_ROOT / "data"
DERIVED_SUBDIR = "derived"
DATASET_METADATA_NAME = "dataset.json"
PSEUDOLABEL_SCRIPT = "scripts/make_pseudolabels.py"

# Largest geometry differences between an image and its label that still count as "the same".
SPACING_TOLERANCE_MM = 1e-3
ORIGIN_TOLERANCE_MM = 1e-2
DIRECTION_TOLERANCE = 1e-4
# Largest absolute intensity a scan of each modality may hold. CT is stored in Hounsfield units
# (about -1024 to 3071, up to 32767 in 16-bit files); MR scanners store 12- to 16-bit integers
# (at most 65535). A voxel beyond 1e6 is a broken conversion or a flipped exponent bit, and one
# such voxel dominates the scan's standard deviation, normalising every other voxel to about 0.
MAX_ABSOLUTE_INTENSITY = {"MR": 1e6, "CT": 1e6}


def image_path(dataset_dir: Path, scan_id: int) -> Path:
    return Path(dataset_dir) / f"image_{scan_id}.nii.gz"


def label_path(dataset_dir: Path, scan_id: int) -> Path:
    return Path(dataset_dir) / f"label_{scan_id}.nii.gz"


def dataset_files(dataset_dir: Path, spec: DatasetSpec) -> list[Path]:
    """The image and label files of every scan of the spec (the fingerprint of what a run trained
    on, experiment/data_identity.py); derived files are not part of it."""
    return [path for scan_id in spec.scan_ids for path in (image_path(dataset_dir, scan_id),
                                                           label_path(dataset_dir, scan_id))]


def superpixel_path(derived_dir: Path, scan_id: int) -> Path:
    return Path(derived_dir) / f"superpixels_{scan_id}.nii.gz"


@dataclass(frozen=True)
class Scan:
    """One scan ready for episodes. Arrays are read-only (shared by the in-process cache).

    image: (Z, H, W) float32, normalised per the spec.
    labels: (Z, H, W) int64 label ids (after `stored_to_label`) at model resolution.
    native_labels: (Z, H0, W0) int64 label ids at file resolution (same array when not resized).
    superpixels: (Z, H, W) int32 per-slice superpixel ids (0 outside the body) or None.
    spacing, origin, direction: geometry of the files, for writing predictions back.
    """

    scan_id: int
    image: np.ndarray
    labels: np.ndarray
    native_labels: np.ndarray
    superpixels: np.ndarray | None
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]


@dataclass(frozen=True)
class RawScan:
    """A scan as stored, validated: intensities (Z, H0, W0) float32, label ids (Z, H0, W0) int64."""

    scan_id: int
    intensities: np.ndarray
    labels: np.ndarray
    reference: sitk.Image


def resolve_data_root(config_value: str | os.PathLike | None = None) -> Path:
    """The data root: the config value, else env FSMIS_DATA_ROOT, else `<repo>/data`."""
    if config_value:
        return Path(config_value).expanduser()
    env_value = os.environ.get(DATA_ROOT_ENV)
    if env_value:
        return Path(env_value).expanduser()
    return DEFAULT_DATA_ROOT


def default_derived_dir(dataset_dir: str | os.PathLike) -> Path:
    """Where derived files go: the dataset folder when writable, else `<repo>/data/derived/<NAME>`."""
    dataset_dir = Path(dataset_dir)
    if _is_writable_dir(dataset_dir):
        return dataset_dir
    return DEFAULT_DATA_ROOT / DERIVED_SUBDIR / dataset_dir.name


def _is_writable_dir(folder: Path) -> bool:
    """Writable by us and not marked read-only by its mode (root may write anywhere; a r-x folder
    such as the shared CHAOST2 copy still counts as read-only)."""
    if not folder.is_dir():
        return False
    write_bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    return bool(folder.stat().st_mode & write_bits) and os.access(folder, os.W_OK)


def check_dataset_dir(dataset_dir: str | os.PathLike) -> Path:
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise DataError(
            f"{dataset_dir}: dataset folder not found; set the data root with the config key "
            f"`data_root` or the environment variable {DATA_ROOT_ENV} (default {DEFAULT_DATA_ROOT})"
        )
    return dataset_dir


def _check_same_geometry(image: sitk.Image, other: sitk.Image, other_path: Path, image_file: Path) -> None:
    if image.GetSize() != other.GetSize():
        raise DataError(f"{other_path}: shape {other.GetSize()[::-1]} differs from {image_file} {image.GetSize()[::-1]}")
    checks = (
        ("spacing", image.GetSpacing(), other.GetSpacing(), SPACING_TOLERANCE_MM),
        ("origin", image.GetOrigin(), other.GetOrigin(), ORIGIN_TOLERANCE_MM),
        ("direction", image.GetDirection(), other.GetDirection(), DIRECTION_TOLERANCE),
    )
    for name, expected, found, tolerance in checks:
        if not np.allclose(expected, found, rtol=0.0, atol=tolerance):
            raise DataError(f"{other_path}: {name} {tuple(found)} differs from {image_file} {tuple(expected)}")


def _remap_labels(stored: np.ndarray, spec: DatasetSpec, path: Path) -> np.ndarray:
    """Stored label values (any numeric dtype) -> int64 label ids through `spec.stored_to_label`."""
    if np.issubdtype(stored.dtype, np.floating):
        if not np.all(np.isfinite(stored)) or not np.array_equal(stored, np.round(stored)):
            bad = np.unique(stored[~np.isfinite(stored) | (stored != np.round(stored))])[:5]
            raise DataError(f"{path}: label values must be whole numbers, found {bad.tolist()}")
    values = stored.astype(np.int64)
    keys = np.asarray(spec.stored_values, dtype=np.int64)
    present = np.unique(values)
    unexpected = np.setdiff1d(present, keys)
    if unexpected.size:
        raise DataError(
            f"{path}: unexpected label values {unexpected.tolist()} for dataset {spec.name} "
            f"(allowed: {keys.tolist()})"
        )
    targets = np.asarray([spec.stored_to_label[int(key)] for key in keys], dtype=np.int64)
    return targets[np.searchsorted(keys, values)]


def read_raw_scan(dataset_dir: str | os.PathLike, spec: DatasetSpec, scan_id: int) -> RawScan:
    """Read and validate `image_<id>` and `label_<id>` of `dataset_dir` (no normalisation)."""
    dataset_dir = Path(dataset_dir)
    image_file, label_file = image_path(dataset_dir, scan_id), label_path(dataset_dir, scan_id)
    if not image_file.is_file():
        raise DataError(f"{image_file}: image of scan {scan_id} not found (dataset {spec.name})")
    if not label_file.is_file():
        raise DataError(f"{label_file}: label file missing for {image_file.name}")
    image = read_image(image_file)
    label = read_image(label_file)
    if image.GetDimension() != 3:
        raise DataError(f"{image_file}: expected a 3D volume, got {image.GetDimension()}D")
    _check_same_geometry(image, label, label_file, image_file)
    stored = image_voxels(image, image_file)  # read_image refused non-finite voxels
    _check_intensity_range(stored, spec, image_file)
    intensities = stored.astype(np.float32)
    labels = _remap_labels(image_voxels(label, label_file), spec, label_file)
    return RawScan(scan_id=int(scan_id), intensities=intensities, labels=labels, reference=image)


def _check_intensity_range(intensities: np.ndarray, spec: DatasetSpec, path: Path) -> None:
    """Refuse a scan with intensities beyond `MAX_ABSOLUTE_INTENSITY` of its modality."""
    limit = MAX_ABSOLUTE_INTENSITY[spec.modality]
    if intensities.size == 0:
        return
    extreme = max(abs(float(intensities.min())), abs(float(intensities.max())))
    if extreme > limit:
        n_beyond = int((np.abs(intensities.astype(np.float64)) > limit).sum())
        raise DataError(f"{path}: {n_beyond} of {intensities.size} voxels have an absolute intensity above "
                        f"{limit:g}, absurd for {spec.modality} (largest {extreme:g}); the file is damaged "
                        "or was converted wrongly")


def _normalise(intensities: np.ndarray, spec: DatasetSpec, statistics: tuple[float, float] | None, path: Path) -> np.ndarray:
    """z-score `intensities`; the per-scan statistics are computed in float64, where a float32
    variance of large values would overflow to infinity."""
    if spec.normalization == "per_scan_zscore":
        mean, std = float(intensities.mean(dtype=np.float64)), float(intensities.std(dtype=np.float64))
    elif spec.normalization == "global":
        if statistics is None:
            raise ValueError(f"{spec.name}: global normalisation needs the (mean, std) of the training scans "
                             "(dataloaders/dataset_metadata.intensity_statistics)")
        mean, std = statistics
    else:
        raise ValueError(f"{spec.name}: unknown normalization {spec.normalization!r}")
    if not (math.isfinite(mean) and math.isfinite(std)):
        raise DataError(f"{path}: normalisation statistics are not finite (mean {mean}, std {std})")
    if not std > 0:
        raise DataError(f"{path}: intensity standard deviation is {std}; cannot normalise a constant image")
    return ((intensities - mean) / std).astype(np.float32)


def resize_slices_linear(volume: np.ndarray, size: int) -> np.ndarray:
    """(Z, H, W) float -> (Z, size, size): area averaging when shrinking, bilinear when growing."""
    shrinking = size < volume.shape[1] or size < volume.shape[2]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return np.stack([cv2.resize(plane, (size, size), interpolation=interpolation) for plane in volume])


def resize_slices_nearest(volume: np.ndarray, size: int) -> np.ndarray:
    """(Z, H, W) integer ids -> (Z, size, size) by nearest neighbour, dtype kept."""
    planes = [cv2.resize(plane, (size, size), interpolation=cv2.INTER_NEAREST) for plane in volume.astype(np.int32)]
    return np.stack(planes).astype(volume.dtype)


def _read_superpixels(derived_dir: Path, raw: RawScan, image_file: Path) -> np.ndarray:
    path = superpixel_path(derived_dir, raw.scan_id)
    if not path.is_file():
        raise DataError(f"{path}: superpixels missing; run {PSEUDOLABEL_SCRIPT} (or ensure_derived_files)")
    superpixels = read_image(path)
    _check_same_geometry(raw.reference, superpixels, path, image_file)
    return image_voxels(superpixels, path).astype(np.int32)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


_SCAN_CACHE: dict[tuple, Scan] = {}


def _file_content_key(path: Path) -> tuple[str, str | None]:
    """The cache key of a file: its resolved path and the SHA-256 of its content (None when it is
    missing). Timestamps are no key: `cp -p`, `rsync -a`, `tar x` give new content an old time, and
    a change time is only as fine as the kernel's clock tick, so two writes of one size within a
    tick would look alike; hashing the few MB of a compressed scan costs milliseconds."""
    try:
        return str(path.resolve()), file_sha256(path)
    except FileNotFoundError:
        return str(path), None


def clear_scan_cache() -> None:
    """Forget every scan loaded in this process."""
    _SCAN_CACHE.clear()


def _load_scan(
    dataset_dir: Path,
    spec: DatasetSpec,
    scan_id: int,
    derived_dir: Path,
    with_superpixels: bool,
    image_size: int | None,
    statistics: tuple[float, float] | None,
) -> Scan:
    raw = read_raw_scan(dataset_dir, spec, scan_id)
    image = _normalise(raw.intensities, spec, statistics, image_path(dataset_dir, scan_id))
    superpixels = _read_superpixels(derived_dir, raw, image_path(dataset_dir, scan_id)) if with_superpixels else None
    native_labels = _read_only(raw.labels)
    labels = native_labels
    if image_size is not None and tuple(image.shape[1:]) != (image_size, image_size):
        image = resize_slices_linear(image, image_size)
        labels = _read_only(resize_slices_nearest(native_labels, image_size))
        if superpixels is not None:
            superpixels = resize_slices_nearest(superpixels, image_size)
    return Scan(
        scan_id=int(scan_id),
        image=_read_only(image),
        labels=labels,
        native_labels=native_labels,
        superpixels=None if superpixels is None else _read_only(superpixels),
        spacing=tuple(raw.reference.GetSpacing()),
        origin=tuple(raw.reference.GetOrigin()),
        direction=tuple(raw.reference.GetDirection()),
    )


def load_scans(
    dataset_dir: str | os.PathLike,
    spec: DatasetSpec,
    scan_ids: list[int] | tuple[int, ...] | None = None,
    *,
    derived_dir: str | os.PathLike | None = None,
    with_superpixels: bool = False,
    image_size: int | None = None,
    intensity_statistics: tuple[float, float] | None = None,
) -> dict[int, Scan]:
    """Load and validate scans of `dataset_dir` -> {scan id: Scan} (ids in the given order).

    scan_ids: default every id of the spec. derived_dir: where superpixels / dataset.json live
    (default `default_derived_dir(dataset_dir)`). image_size: resize every slice to
    image_size x image_size (images linear/area, labels and superpixels nearest);
    `native_labels` keep the file resolution. intensity_statistics: the (mean, std) that datasets
    with global normalisation (CT) are normalised with, computed from the fold's training scans.
    Scans are cached in-process, keyed by their files' paths and content (SHA-256) and the options,
    so loading them again returns the same objects until a file's content changes.
    """
    dataset_dir = check_dataset_dir(dataset_dir)
    derived_dir = Path(derived_dir) if derived_dir is not None else default_derived_dir(dataset_dir)
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
    ids = [int(scan_id) for scan_id in (spec.scan_ids if scan_ids is None else scan_ids)]
    statistics = intensity_statistics if spec.normalization == "global" else None

    scans: dict[int, Scan] = {}
    for scan_id in ids:
        files = [image_path(dataset_dir, scan_id), label_path(dataset_dir, scan_id)]
        if with_superpixels:
            files.append(superpixel_path(derived_dir, scan_id))
        key = (spec.name, tuple(_file_content_key(path) for path in files), with_superpixels, image_size, statistics)
        scan = _SCAN_CACHE.get(key)
        if scan is None:
            scan = _load_scan(dataset_dir, spec, scan_id, derived_dir, with_superpixels, image_size, statistics)
            _SCAN_CACHE[key] = scan
        scans[scan_id] = scan
    logger.debug("loaded %d scans of %s from %s", len(scans), spec.name, dataset_dir)
    return scans
