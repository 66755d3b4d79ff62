"""`dataset.json`, the one file that describes a dataset folder, and its one writer.

Written by `write_dataset_metadata` alone, whether on first use of a dataset
(dataloaders/derived_files.py) or right after a conversion (scripts/prepare_sabs.py, which adds
where each scan came from): the dataset's name, modality and scan ids, each scan's shape (Z, H, W),
spacing (x, y, z mm), voxel count and intensity mean and standard deviation, and the mean and
standard deviation over every voxel of every scan (for information only).

CT datasets are normalised with one mean and standard deviation (docs/PROTOCOL.md, "Preprocessing
from the raw downloads"); `intensity_statistics` merges them from the records of the scans it is
given, which experiment/assembly.py makes the fold's training scans, so that no query or support
scan influences the normalisation of a model it tests.
Fields another writer call recorded (`provenance`, e.g. `source_images`) are kept.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from dataloaders.specs import DatasetSpec
from dataloaders.volumes import DATASET_METADATA_NAME, PSEUDOLABEL_SCRIPT, read_raw_scan
from utils.io import DataError, read_json, write_json

logger = logging.getLogger(__name__)

SCAN_MOMENT_KEYS = ("voxel_count", "intensity_mean", "intensity_std")  # per-scan fields merged into statistics


class RunningMoments:
    """Mean and population standard deviation of many arrays, merged one array (or one summary of
    an array) at a time in float64 (Chan et al.'s pairwise update), so that the arrays never have
    to be in memory together."""

    def __init__(self) -> None:
        self.count, self.mean, self.squared_deviations = 0, 0.0, 0.0

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size:
            values_mean = float(values.mean())
            self.add_summary(values.size, values_mean, float(((values - values_mean) ** 2).sum()))

    def add_summary(self, count: int, mean: float, squared_deviations: float) -> None:
        """Merge `count` values of mean `mean` whose squared deviations from it sum to `squared_deviations`."""
        if count == 0:
            return
        delta = mean - self.mean
        total = self.count + count
        self.squared_deviations += squared_deviations + delta**2 * self.count * count / total
        self.mean += delta * count / total
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
    scans = metadata.get("scans", {}) if isinstance(metadata, dict) else {}
    return (isinstance(metadata, dict) and metadata.get("scan_ids") == expected
            and set(scans) == {str(scan_id) for scan_id in expected}
            and all(set(SCAN_MOMENT_KEYS) <= set(record) for record in scans.values()))


def intensity_statistics(dataset_dir: str | os.PathLike, derived_dir: str | os.PathLike,
                         scan_ids: Iterable[int]) -> tuple[float, float]:
    """(mean, population std) over every voxel of the scans `scan_ids`, merged from their records in
    the dataset's dataset.json (in `derived_dir`, else in `dataset_dir`)."""
    candidates = [Path(folder) / DATASET_METADATA_NAME for folder in (derived_dir, dataset_dir)]
    path = next((candidate for candidate in candidates if candidate.is_file()), None)
    if path is None:
        raise DataError(f"{candidates[0]}: intensity statistics not found; run {PSEUDOLABEL_SCRIPT} for this dataset")
    metadata = read_json(path)
    scans = metadata.get("scans", {}) if isinstance(metadata, dict) else {}
    moments = RunningMoments()
    for scan_id in scan_ids:
        record = scans.get(str(scan_id), {})
        try:
            count, mean, std = (float(record[key]) for key in SCAN_MOMENT_KEYS)
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: no intensity record (voxel_count, intensity_mean, intensity_std) of scan "
                            f"{scan_id}; run {PSEUDOLABEL_SCRIPT} for this dataset") from None
        if not all(math.isfinite(value) for value in (count, mean, std)):
            raise DataError(f"{path}: the intensity record of scan {scan_id} is not finite (voxel_count {count}, "
                            f"mean {mean}, std {std}); delete the file to have it computed again")
        moments.add_summary(int(count), mean, std**2 * count)
    return moments.mean, moments.std


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
        scan_moments = RunningMoments()
        scan_moments.add(raw.intensities)
        records[str(scan_id)] = {"shape": list(raw.intensities.shape), "spacing": list(raw.reference.GetSpacing()),
                                 "voxel_count": scan_moments.count, "intensity_mean": scan_moments.mean,
                                 "intensity_std": scan_moments.std}
        moments.add_summary(scan_moments.count, scan_moments.mean, scan_moments.squared_deviations)
    path = Path(output_dir) / DATASET_METADATA_NAME
    existing = _readable_fields(path)
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


def _readable_fields(path: Path) -> dict:
    """The fields of an existing dataset.json, to be kept; none when it is absent or damaged."""
    if not path.is_file():
        return {}
    try:
        existing = read_json(path)
    except DataError as error:
        logger.warning("%s: damaged, written again without its earlier fields (%s)", path, error)
        return {}
    return existing if isinstance(existing, dict) else {}
