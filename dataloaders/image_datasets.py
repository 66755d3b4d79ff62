"""2D image datasets of the semi-supervised track (BUSI; docs/PROTOCOL.md, "Semi-supervised
segmentation"), in the layout scripts/prepare_busi.py writes:

    <root>/<NAME>/images/<case>.png          8-bit grey image (intensity / 255 -> [0, 1])
    <root>/<NAME>/masks/<case>.png           8-bit label ids 0..K-1, the image's size
    <root>/<NAME>/train<k>.list, val<k>.list case ids of split k = 1..n_splits, one a line
    <root>/<NAME>/dataset.json               classes, splits and where they came from

A run's split is `eval_fold` + 1. As MGCC's train.py (FengheTan9/Multi-Level-Global-Context-
Cross-Consistency): the first int(semi_percent x N) cases of the training list are labelled, the
rest is the unlabelled pool; the validation list validates and is also the test set (MGCC keeps
the checkpoint of the best validation IoU and reports it on the same images; the split files have
no third part). Each image is a one-slice evaluation volume at its own size; distances are in
pixels. Every read checks what it reads and names the file in its error.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dataloaders.acdc import check_listed_files, read_id_list
from dataloaders.semi_supervised_data import EvaluationVolume, SemiSupervisedData
from dataloaders.slice_batches import SliceSet
from utils.io import DataError

IMAGES_DIR, MASKS_DIR = "images", "masks"
IMAGE_SUFFIX = ".png"
METADATA_FILE = "dataset.json"
GREY_LEVELS = 255  # 8-bit images: intensity / 255, as MGCC's dataset (`image.astype('float32') / 255`)
PIXEL_SPACING = (1.0, 1.0, 1.0)  # one-slice volumes without a physical spacing: distances in pixels


@dataclass(frozen=True)
class ImageDatasetSpec:
    """A 2D image dataset: its folder name, classes (label id -> name, background 0 excluded) and splits."""

    name: str
    classes: dict[int, str]
    n_splits: int

    @property
    def n_classes(self) -> int:
        return max(self.classes) + 1


# BUSI (Al-Dhabyani et al. 2020) as MGCC uses it: benign and malignant cases, lesion masks, 3 splits
IMAGE_DATASET_SPECS = {"BUSI": ImageDatasetSpec("BUSI", {1: "lesion"}, n_splits=3)}


def is_image_dataset(name: str) -> bool:
    return name in IMAGE_DATASET_SPECS


def split_list_names(split: int) -> tuple[str, str]:
    """The training and validation list files of split `split` (1-based, as MGCC's busi_train1.txt)."""
    return f"train{split}.list", f"val{split}.list"


def image_path(dataset_dir: Path, case_id: str) -> Path:
    return dataset_dir / IMAGES_DIR / f"{case_id}{IMAGE_SUFFIX}"


def mask_path(dataset_dir: Path, case_id: str) -> Path:
    return dataset_dir / MASKS_DIR / f"{case_id}{IMAGE_SUFFIX}"


def read_png(path: Path) -> np.ndarray:
    """An 8-bit single-channel PNG as (H, W) uint8; a missing, unreadable or other file names itself."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DataError(f"{path}: cannot be read as an image")
    if array.ndim != 2 or array.dtype != np.uint8:
        raise DataError(f"{path}: expected an 8-bit single-channel image, got shape {array.shape} of {array.dtype} "
                        f"(scripts/prepare_busi.py writes grey images)")
    return array


def read_image(path: Path) -> np.ndarray:
    """(H, W) float32 in [0, 1]: the 8-bit grey image / 255."""
    return read_png(path).astype(np.float32) / GREY_LEVELS


def read_label(path: Path, n_classes: int, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """(H, W) int64 label ids, checked to lie in 0..n_classes-1 (and to have `shape` when given)."""
    labels = read_png(path).astype(np.int64)
    outside = np.setdiff1d(np.unique(labels), np.arange(n_classes))
    if outside.size:
        raise DataError(f"{path}: label values {outside.tolist()} outside the dataset's classes 0..{n_classes - 1} "
                        f"(a 0/255 mask must be converted: scripts/prepare_busi.py)")
    if shape is not None and labels.shape != shape:
        raise DataError(f"{path}: mask shape {labels.shape} != image shape {shape}")
    return labels


def dataset_files(dataset_dir: Path, spec: ImageDatasetSpec) -> list[Path]:
    """The files that define the dataset (its content fingerprint, experiment/data_identity.py)."""
    lists = [dataset_dir / name for split in range(1, spec.n_splits + 1) for name in split_list_names(split)]
    return lists + sorted((dataset_dir / IMAGES_DIR).glob(f"*{IMAGE_SUFFIX}")) + sorted(
        (dataset_dir / MASKS_DIR).glob(f"*{IMAGE_SUFFIX}"))


def labelled_image_count(n_training: int, semi_percent: float) -> int:
    """MGCC's labelled count: int(semi_percent x the training list's length)."""
    if not 0.0 < semi_percent <= 1.0:
        raise ValueError(f"semi_percent={semi_percent!r}: expected a share in (0, 1]")
    return int(semi_percent * n_training)


def image_dataset_data(dataset_dir: Path, spec: ImageDatasetSpec, fold: int, semi_percent: float) -> SemiSupervisedData:
    """Split `fold` + 1 of a 2D image dataset (see the module docstring); every image and every
    label that is used is read and checked now (the unlabelled pool's labels are never read)."""
    if not 0 <= fold < spec.n_splits:
        raise ValueError(f"{spec.name}: eval_fold={fold!r} is out of range: its splits are folds 0..{spec.n_splits - 1}")
    train_list, validation_list = (dataset_dir / name for name in split_list_names(fold + 1))
    training_ids, validation_ids = read_id_list(train_list), read_id_list(validation_list)
    for ids, list_file in ((training_ids, train_list), (validation_ids, validation_list)):
        check_listed_files([image_path(dataset_dir, case_id) for case_id in ids], list_file)
    n_labelled = labelled_image_count(len(training_ids), semi_percent)
    images = {case_id: read_image(image_path(dataset_dir, case_id)) for case_id in training_ids + validation_ids}

    def labels(case_ids: list[str]) -> tuple[np.ndarray, ...]:
        return tuple(read_label(mask_path(dataset_dir, case_id), spec.n_classes, images[case_id].shape)
                     for case_id in case_ids)

    labelled_ids, unlabelled_ids = training_ids[:n_labelled], training_ids[n_labelled:]
    labelled = SliceSet(tuple(labelled_ids), tuple(images[case_id] for case_id in labelled_ids), labels(labelled_ids),
                        spec.n_classes)
    unlabelled = SliceSet(tuple(unlabelled_ids), tuple(images[case_id] for case_id in unlabelled_ids), None,
                          spec.n_classes)
    volumes = {case_id: EvaluationVolume(case_id, images[case_id][None], label[None], PIXEL_SPACING, "pixels")
               for case_id, label in zip(validation_ids, labels(validation_ids))}
    return SemiSupervisedData(spec.name, dict(spec.classes), labelled, unlabelled, tuple(validation_ids),
                              tuple(validation_ids), volumes=volumes)
