"""ACDC in the layout of the semi-supervised benchmark (HiLab-git/SSL4MIS; ../shared/data/ACDC/README.md).

    <root>/ACDC/train_slices.list     training slice ids, in the order that defines the labelled subsets
    <root>/ACDC/val.list, test.list   frame ids of the validation and test volumes
    <root>/ACDC/data/slices/<id>.h5   one training slice: `image` (H, W) float32 in [0, 1], `label` (H, W) uint8
    <root>/ACDC/data/<frame>.h5       one volume: `image` (Z, H, W), `label` (Z, H, W)

Labels: 0 background, 1 right ventricle, 2 myocardium, 3 left ventricle. Images are min-max
normalised per volume by the benchmark's preprocessing. The labelled subset of `n` patients is the
first `PATIENTS_TO_SLICES[n]` slices of train_slices.list, as SSL4MIS's `patients_to_slices`.
Every read checks what it reads (datasets present, shapes, finite values, label values) and names
the file in its error.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from utils.io import DataError

ACDC_NAME = "ACDC"
ACDC_CLASSES = {1: "RV", 2: "Myo", 3: "LV"}  # label id -> structure (background 0 excluded)
# SSL4MIS's patients_to_slices for ACDC: labelled patients -> the first N slices of train_slices.list
# (140 is its key for the whole training set, 70 patients x 2 frames)
PATIENTS_TO_SLICES = {3: 68, 7: 136, 14: 256, 21: 396, 28: 512, 35: 664, 140: 1312}
TRAIN_SLICES_LIST = "train_slices.list"
VALIDATION_LIST = "val.list"
TEST_LIST = "test.list"
IMAGE_KEY, LABEL_KEY = "image", "label"
SLICE_NDIM, VOLUME_NDIM = 2, 3


def labelled_slice_count(labelled_patients: int) -> int:
    """The number of labelled slices SSL4MIS uses for `labelled_patients` (only its defined counts)."""
    if labelled_patients not in PATIENTS_TO_SLICES:
        raise ValueError(f"labelled_patients={labelled_patients!r}: SSL4MIS defines ACDC's labelled subsets for "
                         f"{sorted(PATIENTS_TO_SLICES)} patients only (140: every training slice)")
    return PATIENTS_TO_SLICES[labelled_patients]


def read_id_list(path: Path) -> list[str]:
    """The ids of a .list file, one per line (blank lines ignored)."""
    if not path.is_file():
        raise DataError(f"{path}: list file not found; pass data_root=<folder holding {path.parent.name}/> or set "
                        f"FSMIS_DATA_ROOT (e.g. ../shared/data)")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{path}: the list is empty")
    return ids


def slice_path(dataset_dir: Path, slice_id: str) -> Path:
    return dataset_dir / "data" / "slices" / f"{slice_id}.h5"


def volume_path(dataset_dir: Path, frame_id: str) -> Path:
    return dataset_dir / "data" / f"{frame_id}.h5"


def dataset_files(dataset_dir: Path) -> list[Path]:
    """The files that define the dataset: its .list files and every h5 file under data/ (the
    fingerprint of what a run trained on, experiment/data_identity.py)."""
    lists = [dataset_dir / name for name in (TRAIN_SLICES_LIST, VALIDATION_LIST, TEST_LIST)]
    return lists + sorted((dataset_dir / "data").rglob("*.h5"))


def check_listed_files(paths: list[Path], list_file: Path) -> None:
    """Every file a list names must exist: refuse with the first missing ones and the list."""
    missing = [path for path in paths if not path.is_file()]
    if missing:
        shown = ", ".join(str(path) for path in missing[:3])
        raise DataError(f"{list_file} names {len(missing)} file(s) that do not exist, e.g. {shown}")


def read_h5_array(path: Path, key: str, ndim: int, n_classes: int | None = None) -> np.ndarray:
    """One dataset of an h5 file, checked: present, `ndim` axes, finite (images) or label values in
    0..n_classes-1 (labels, when n_classes is given). Errors name the file."""
    try:
        with h5py.File(path, "r") as handle:
            if key not in handle:
                raise DataError(f"{path}: no '{key}' dataset (found {sorted(handle.keys())}); expected the SSL4MIS "
                                f"layout with '{IMAGE_KEY}' and '{LABEL_KEY}'")
            array = handle[key][()]
    except OSError as error:
        raise DataError(f"{path}: cannot be read as an h5 file ({error})") from None
    if array.ndim != ndim:
        raise DataError(f"{path}: '{key}' has shape {array.shape}, expected {ndim} axes")
    if n_classes is None:
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise DataError(f"{path}: '{key}' holds {int((~np.isfinite(array)).sum())} NaN or infinite values")
        return array
    if not np.issubdtype(array.dtype, np.integer) and not np.array_equal(array, np.round(array)):
        raise DataError(f"{path}: '{key}' holds non-integer label values")
    labels = array.astype(np.int64)
    outside = np.setdiff1d(np.unique(labels), np.arange(n_classes))
    if outside.size:
        raise DataError(f"{path}: '{key}' holds label values {outside.tolist()} outside the dataset's classes "
                        f"0..{n_classes - 1}")
    return labels


def read_slice_image(path: Path) -> np.ndarray:
    """(H, W) float32 image of a training slice file."""
    return read_h5_array(path, IMAGE_KEY, SLICE_NDIM)


def read_slice_label(path: Path, n_classes: int) -> np.ndarray:
    """(H, W) int64 label of a training slice file."""
    return read_h5_array(path, LABEL_KEY, SLICE_NDIM, n_classes)


def read_volume(path: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(Z, H, W) float32 image and (Z, H, W) int64 label of a validation or test volume file."""
    image = read_h5_array(path, IMAGE_KEY, VOLUME_NDIM)
    label = read_h5_array(path, LABEL_KEY, VOLUME_NDIM, n_classes)
    if image.shape != label.shape:
        raise DataError(f"{path}: image shape {image.shape} != label shape {label.shape}")
    return image, label
