"""Benchmark of the data pipeline on CHAOST2: superpixel generation and scan loading.

Times `ensure_derived_files` (2D superpixels and dataset.json) for all scans
with 1 and 2 worker processes, each into a fresh temporary folder, then `load_scans` of every
scan with superpixels, cold (empty in-process cache) and cached.

Example: python bench/bench_superpixels.py --data-root ../shared/data
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import composed_config  # noqa: E402
from dataloaders.dataset_metadata import intensity_statistics  # noqa: E402
from dataloaders.derived_files import ensure_derived_files  # noqa: E402
from dataloaders.specs import get_spec  # noqa: E402
from dataloaders.volumes import clear_scan_cache, load_scans, resolve_data_root  # noqa: E402


def timed(action) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="CHAOST2")
    parser.add_argument("--data-root", default=None, help="folder holding <DATASET>/ (default: $FSMIS_DATA_ROOT or data/)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    spec = get_spec(args.dataset)
    method = composed_config()["superpixel_method"]
    dataset_dir = resolve_data_root(args.data_root) / spec.name

    with tempfile.TemporaryDirectory(prefix="bench_superpixels_") as scratch:
        derived_dir = None
        for workers in args.workers:
            derived_dir = Path(scratch) / f"workers_{workers}"
            seconds, _ = timed(lambda: ensure_derived_files(dataset_dir, spec, derived_dir, method=method,
                                                                  workers=workers))
            print(f"{method} superpixels + dataset.json, {len(spec.scan_ids)} scans, {workers} worker(s): {seconds:.1f} s")
        clear_scan_cache()
        statistics = (intensity_statistics(dataset_dir, derived_dir, spec.scan_ids)  # every scan: a timing, no model
                      if spec.normalization == "global" else None)
        load = lambda: load_scans(dataset_dir, spec, derived_dir=derived_dir, with_superpixels=True,  # noqa: E731
                                  intensity_statistics=statistics)
        cold, scans = timed(load)
        cached, _ = timed(load)
        n_slices = sum(scan.image.shape[0] for scan in scans.values())
        print(f"load_scans with superpixels, {len(scans)} scans / {n_slices} slices: cold {cold:.2f} s, cached {cached * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
