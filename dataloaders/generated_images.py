"""Synthetic unlabelled images, as scripts/generate_unlabelled.py writes them and the semi-supervised
track reads them (`unlabelled_source`: "real" | "generated" | "both"; docs/METHOD.md, "MGCC").

    <folder>/generation.json         the record: the generator's checkpoint (path, sha256, step),
                                     the sampling seed and steps, the dataset, the image count and format
    <folder>/images/gen_<i>.png      a 2D image dataset's format: 8-bit grey (dataloaders/image_datasets.py)
    <folder>/slices/gen_<i>.h5       ACDC's and the volume datasets' slice format: an `image` (H, W) in [0, 1]

The images are in [0, 1], as the dataset's own slices; they carry no label.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from dataloaders.acdc import IMAGE_KEY, read_slice_image
from dataloaders.image_datasets import GREY_LEVELS, read_image
from dataloaders.semi_supervised_data import SemiSupervisedData
from dataloaders.slice_batches import SliceSet
from utils.io import DataError, atomic_path, read_json, write_json, write_png

RECORD_FILE = "generation.json"
PNG_FORMAT, H5_FORMAT = "png", "h5"
FORMAT_FOLDERS = {PNG_FORMAT: "images", H5_FORMAT: "slices"}
REAL, GENERATED, BOTH = "real", "generated", "both"
UNLABELLED_SOURCES = (REAL, GENERATED, BOTH)


def image_file(folder: Path, image_format: str, index: int) -> Path:
    return folder / FORMAT_FOLDERS[image_format] / f"gen_{index:05d}.{image_format}"


def write_generated_image(folder: Path, image_format: str, index: int, image: np.ndarray) -> Path:
    """Write one (H, W) image in [0, 1] as the `index`-th generated image (atomically); returns its path."""
    path = image_file(folder, image_format, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.clip(image, 0.0, 1.0)
    if image_format == PNG_FORMAT:
        write_png(np.round(image * GREY_LEVELS).astype(np.uint8), path)
    else:
        with atomic_path(path, suffix=".h5") as temporary, h5py.File(temporary, "w") as handle:
            handle[IMAGE_KEY] = image.astype(np.float32)
    return path


def read_generated_image(folder: Path, image_format: str, index: int) -> np.ndarray:
    """The `index`-th generated image of `folder`: (H, W) in [0, 1]."""
    path = image_file(folder, image_format, index)
    return read_image(path) if image_format == PNG_FORMAT else read_slice_image(path)


def write_record(folder: Path, record: dict) -> None:
    write_json(record, folder / RECORD_FILE)


def read_generated(folder: Path, n_classes: int) -> SliceSet:
    """The generated images of `folder` as an unlabelled SliceSet, every image read and checked."""
    record_path = folder / RECORD_FILE
    if not record_path.is_file():
        raise DataError(f"{record_path}: no generation record; write the folder with scripts/generate_unlabelled.py")
    record = read_json(record_path)
    image_format = record.get("format")
    if image_format not in FORMAT_FOLDERS or not isinstance(record.get("n_images"), int):
        raise DataError(f"{record_path}: expected 'format' in {sorted(FORMAT_FOLDERS)} and an integer 'n_images'")
    paths = [image_file(folder, image_format, index) for index in range(record["n_images"])]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise DataError(f"{record_path} records {record['n_images']} images, {len(missing)} are missing, e.g. {missing[0]}")
    images = [read_generated_image(folder, image_format, index) for index in range(record["n_images"])]
    return SliceSet(tuple(path.stem for path in paths), tuple(images), None, n_classes)


def with_unlabelled_source(data: SemiSupervisedData, source: str, generated_dir: Path | None) -> SemiSupervisedData:
    """The experiment's data with its unlabelled pool from `source`: the dataset's own ("real"),
    the generated images ("generated"), or both, the real ones first ("both")."""
    if source not in UNLABELLED_SOURCES:
        raise ValueError(f"unlabelled_source must be one of {UNLABELLED_SOURCES}, got {source!r}")
    if source == REAL:
        return data
    if generated_dir is None:
        raise ValueError(f"unlabelled_source={source!r} needs generated_dir (a folder of scripts/generate_unlabelled.py)")
    generated = read_generated(Path(generated_dir), data.n_classes)
    if source == GENERATED:
        return replace(data, unlabelled=generated)
    real = data.unlabelled
    return replace(data, unlabelled=SliceSet(real.ids + generated.ids, real.images + generated.images, None,
                                             data.n_classes))
