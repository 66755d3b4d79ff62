"""Write a dataset's derived files: superpixel pseudolabels and dataset.json.

docs/PROTOCOL.md, "Derived files". Idempotent (an output is kept while derived_files.json shows it
was computed from its inputs' present content and is intact) and atomic;
superpixels of several scans are computed in parallel with --workers.

Example: python scripts/make_pseudolabels.py --dataset CHAOST2 --data-root ../shared/data \
             --derived-dir data/derived/CHAOST2 --workers 2
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import composed_config  # noqa: E402
from dataloaders.derived_files import SUPERPIXEL_METHODS, ensure_derived_files  # noqa: E402
from dataloaders.specs import DATASET_SPECS, get_spec  # noqa: E402
from dataloaders.volumes import DATA_ROOT_ENV, resolve_data_root  # noqa: E402
from utils.io import DataError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help=f"dataset name, one of {sorted(DATASET_SPECS)}")
    parser.add_argument("--data-root", default=None, help=f"folder holding <DATASET>/ (default: ${DATA_ROOT_ENV} or data/)")
    parser.add_argument("--derived-dir", type=Path, default=None, help="output folder (default: the dataset folder if writable, else data/derived/<DATASET>)")
    parser.add_argument("--method", choices=SUPERPIXEL_METHODS, default=composed_config()["superpixel_method"],
                        help="superpixel method (default: config.py's superpixel_method, %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes for superpixels")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    spec = get_spec(args.dataset)
    dataset_dir = resolve_data_root(args.data_root) / spec.name
    try:
        with tqdm(total=len(spec.scan_ids), desc=f"{spec.name} superpixels", unit="scan") as progress:
            derived_dir = ensure_derived_files(
                dataset_dir, spec, args.derived_dir, method=args.method, workers=args.workers,
                on_scan_done=lambda scan_id: progress.update(1),
            )
    except DataError as error:
        logging.error("%s", error)
        return 1
    logging.info("derived files of %s are up to date in %s", spec.name, derived_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
