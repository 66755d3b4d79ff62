"""Writing a dataset's derived files: superpixels and `dataset.json`.

docs/PROTOCOL.md, "Derived files" and "Preprocessing from the raw downloads" (CT global statistics), docs/DESIGN.md
"Data on disk". SSL-ALPNet also writes a class-slice index (`classmap_1.json`); here the episodes
find the slices of a class in the label volumes they load (dataloaders/slice_selection.py), so no
index file is written. `ensure_derived_files` is what `scripts/make_pseudolabels.py` and train.py
(through experiment/assembly.py) call: it is idempotent, writes atomically through `utils.io`, and
computes superpixels of several scans in parallel processes.

A derived file is reused only while the content of its inputs is what it was computed from:
`derived_files.json` (in the derived folder, utils/file_records.py) records, per derived file, the
SHA-256 of each input file and of the derived file itself, and how it was computed; a derived file
whose own content changed (truncated, damaged) is computed again, with a log line saying why.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from dataloaders.dataset_metadata import describes_scans, write_dataset_metadata
from dataloaders.specs import DatasetSpec
from dataloaders.superpixels import superpixels_2d
from dataloaders.volumes import (
    DATASET_METADATA_NAME,
    check_dataset_dir,
    default_derived_dir,
    image_path,
    label_path,
    read_raw_scan,
    superpixel_path,
)
from utils.file_records import DAMAGED, FileRecords
from utils.io import file_sha256, write_array_like

logger = logging.getLogger(__name__)

SUPERPIXEL_METHODS = ("2d",)
DERIVED_RECORDS_NAME = "derived_files.json"
METADATA_RECIPE = "dataset metadata"  # the recipe recorded for dataset.json


def _input_hashes(paths: list[Path]) -> dict[str, str]:
    return {path.name: file_sha256(path) for path in paths}


def write_superpixels(dataset_dir: Path, spec: DatasetSpec, scan_id: int, derived_dir: Path) -> int:
    """Compute and write `superpixels_<id>.nii.gz` (image geometry); returns the scan id."""
    raw = read_raw_scan(dataset_dir, spec, scan_id)
    superpixels = superpixels_2d(raw.intensities)
    write_array_like(superpixels, raw.reference, superpixel_path(derived_dir, scan_id))
    return scan_id


def ensure_derived_files(
    dataset_dir: str | os.PathLike,
    spec: DatasetSpec,
    derived_dir: str | os.PathLike | None = None,
    *,
    method: str,
    workers: int = 1,
    on_scan_done: Callable[[int], None] | None = None,
) -> Path:
    """Make sure every derived file of `dataset_dir` exists and was computed from its inputs' current content.

    Writes `superpixels_<id>.nii.gz` per scan (with superpixel `method`) and `dataset.json` into
    `derived_dir` (default `default_derived_dir(dataset_dir)`) and returns that folder.
    `workers` > 1 computes superpixels in that many processes; `on_scan_done(scan_id)` is called
    after each scan's superpixels are up to date (for progress bars).
    """
    if method not in SUPERPIXEL_METHODS:
        raise ValueError(f"unknown superpixel method {method!r}; available: {SUPERPIXEL_METHODS}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    dataset_dir = check_dataset_dir(dataset_dir)
    derived_dir = Path(derived_dir) if derived_dir is not None else default_derived_dir(dataset_dir)
    derived_dir.mkdir(parents=True, exist_ok=True)
    notify = on_scan_done or (lambda scan_id: None)

    inputs = {scan_id: [image_path(dataset_dir, scan_id), label_path(dataset_dir, scan_id)] for scan_id in spec.scan_ids}
    for scan_id, paths in inputs.items():
        if not all(path.is_file() for path in paths):
            read_raw_scan(dataset_dir, spec, scan_id)  # raises the DataError that names the missing file
    input_hashes = {scan_id: _input_hashes(paths) for scan_id, paths in inputs.items()}
    records = FileRecords(derived_dir / DERIVED_RECORDS_NAME)

    stale = []
    for scan_id in spec.scan_ids:
        output = superpixel_path(derived_dir, scan_id)
        reason = records.stale_reason(output, input_hashes[scan_id], method)
        if reason is None:
            notify(scan_id)
        else:
            stale.append(scan_id)
            logger.log(logging.WARNING if reason == DAMAGED else logging.INFO, "%s: computing it (%s)", output, reason)
    logger.info("%s: %d of %d superpixel files to compute in %s", spec.name, len(stale), len(spec.scan_ids), derived_dir)

    def done(scan_id: int) -> None:
        records.record(superpixel_path(derived_dir, scan_id), input_hashes[scan_id], method)
        notify(scan_id)

    if workers == 1 or len(stale) <= 1:
        for scan_id in stale:
            done(write_superpixels(dataset_dir, spec, scan_id, derived_dir))
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(stale))) as pool:
            futures = [pool.submit(write_superpixels, dataset_dir, spec, scan_id, derived_dir) for scan_id in stale]
            for future in futures:
                done(future.result())

    all_hashes = {name: digest for hashes in input_hashes.values() for name, digest in hashes.items()}
    metadata_path = derived_dir / DATASET_METADATA_NAME
    reason = records.stale_reason(metadata_path, all_hashes, METADATA_RECIPE)
    if reason is None and not describes_scans(metadata_path, spec.scan_ids):
        reason = "written without the records of every scan"
    if reason is not None:
        logger.log(logging.WARNING if reason == DAMAGED else logging.INFO, "%s: writing it (%s)", metadata_path, reason)
        write_dataset_metadata(dataset_dir, spec, derived_dir)
        records.record(metadata_path, all_hashes, METADATA_RECIPE)
    return derived_dir
