"""Writing a dataset's derived files: superpixels and `dataset.json`.

docs/PROTOCOL.md, "Derived files" and "Preprocessing from the raw downloads" (CT global statistics), docs/DESIGN.md
"Data on disk". SSL-ALPNet also writes a class-slice index (`classmap_1.json`); here the episodes
find the slices of a class in the label volumes they load (dataloaders/slice_selection.py), so no
index file is written. `ensure_derived_files` is what `scripts/make_pseudolabels.py` and train.py
(through experiment/assembly.py) call: it is idempotent (an output newer than all of its inputs is kept), writes atomically through
`utils.io`, and computes superpixels of several scans in parallel processes.
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
from utils.io import write_array_like

logger = logging.getLogger(__name__)

SUPERPIXEL_METHODS = ("2d",)


def _is_up_to_date(output: Path, inputs: list[Path]) -> bool:
    if not output.is_file():
        return False
    newest_input = max(path.stat().st_mtime_ns for path in inputs)
    return output.stat().st_mtime_ns >= newest_input


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
    """Make sure every derived file of `dataset_dir` exists and is newer than its inputs.

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

    stale = [scan_id for scan_id in spec.scan_ids if not _is_up_to_date(superpixel_path(derived_dir, scan_id), inputs[scan_id])]
    for scan_id in spec.scan_ids:
        if scan_id not in stale:
            notify(scan_id)
    logger.info("%s: %d of %d superpixel files to compute in %s", spec.name, len(stale), len(spec.scan_ids), derived_dir)
    if workers == 1 or len(stale) <= 1:
        for scan_id in stale:
            notify(write_superpixels(dataset_dir, spec, scan_id, derived_dir))
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(stale))) as pool:
            futures = [pool.submit(write_superpixels, dataset_dir, spec, scan_id, derived_dir) for scan_id in stale]
            for future in futures:
                notify(future.result())

    all_inputs = [path for paths in inputs.values() for path in paths]
    metadata_path = derived_dir / DATASET_METADATA_NAME
    if not (_is_up_to_date(metadata_path, all_inputs) and describes_scans(metadata_path, spec.scan_ids)):
        write_dataset_metadata(dataset_dir, spec, derived_dir)
    return derived_dir
