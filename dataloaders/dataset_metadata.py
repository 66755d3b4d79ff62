"""`dataset.json`, the one file that describes a dataset folder, and its one writer.

Written by `write_dataset_metadata` alone, whether on first use of a dataset
(dataloaders/derived_files.py) or right after a conversion (scripts/prepare_sabs.py, which adds
where each scan came from): the dataset's name, modality and scan ids, each scan's shape (Z, H, W)
and spacing (x, y, z mm), and the mean and standard deviation of every voxel of every scan, which
CT datasets are normalised with (docs/PROTOCOL.md, "Preprocessing from the raw downloads").
Fields another writer call recorded (`provenance`, e.g. `source_images`) are kept.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from dataloaders.specs import DatasetSpec
from dataloaders.volumes import DATASET_METADATA_NAME, read_raw_scan
from utils.io import read_json, write_json


class RunningMoments:
    """Mean and population standard deviation of many arrays, merged one array at a time in
    float64 (Chan et al.'s pairwise update), so that the arrays never have to be in memory together."""

    def __init__(self) -> None:
        self.count, self.mean, self.squared_deviations = 0, 0.0, 0.0

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size == 0:
            return
        values_mean = float(values.mean())
        delta = values_mean - self.mean
        total = self.count + values.size
        self.squared_deviations += float(((values - values_mean) ** 2).sum()) + delta**2 * self.count * values.size / total
        self.mean += delta * values.size / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.squared_deviations / self.count) if self.count else math.nan


def describes_scans(path: str | os.PathLike, scan_ids: Iterable[int]) -> bool:
    """Whether the dataset.json at `path` exists and holds the records of exactly `scan_ids`
    (a file written by hand or by an earlier version may lack them)."""
    path = Path(path)
    if not path.is_file():
        return False
    metadata = read_json(path)
    expected = [int(scan_id) for scan_id in scan_ids]
    return (isinstance(metadata, dict) and metadata.get("scan_ids") == expected
            and set(metadata.get("scans", {})) == {str(scan_id) for scan_id in expected}
            and all(key in metadata for key in ("intensity_mean", "intensity_std")))


def write_dataset_metadata(
    dataset_dir: str | os.PathLike,
    spec: DatasetSpec,
    output_dir: str | os.PathLike,
    scan_ids: Iterable[int] | None = None,
    provenance: Mapping[str, object] | None = None,
) -> Path:
    """Write `<output_dir>/dataset.json` for the scans `scan_ids` (default: the spec's) of
    `dataset_dir`, read one at a time and validated as the loaders read them; returns its path.

    `provenance` adds fields of the caller's (e.g. the source file of every id); fields already
    in the file and not computed here are kept.
    """
    ids = [int(scan_id) for scan_id in (spec.scan_ids if scan_ids is None else scan_ids)]
    records: dict[str, dict] = {}
    moments = RunningMoments()
    for scan_id in ids:
        raw = read_raw_scan(dataset_dir, spec, scan_id)
        records[str(scan_id)] = {"shape": list(raw.intensities.shape), "spacing": list(raw.reference.GetSpacing())}
        moments.add(raw.intensities)
    path = Path(output_dir) / DATASET_METADATA_NAME
    existing = read_json(path) if path.is_file() else {}
    write_json({
        **existing,
        **(provenance or {}),
        "name": spec.name,
        "modality": spec.modality,
        "scan_ids": ids,
        "scans": records,
        "intensity_mean": moments.mean,
        "intensity_std": moments.std,
    }, path)
    return path
