"""Write the synthetic DEMO dataset (dataloaders/demo_data.py) in the preprocessed layout.

Example: python scripts/make_demo_data.py --out data/DEMO --scans 10 --seed 0
Then: python scripts/make_pseudolabels.py --dataset DEMO --data-root data
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders.demo_data import DEFAULT_IMAGE_SIZE, write_demo_dataset  # noqa: E402
from dataloaders.specs import DEMO_SCAN_COUNT  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/DEMO"), help="output folder")
    parser.add_argument("--scans", type=int, default=DEMO_SCAN_COUNT, help="number of scans (the DEMO spec expects %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    parser.add_argument("--size", type=int, default=DEFAULT_IMAGE_SIZE, help="in-plane size in pixels")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.scans != DEMO_SCAN_COUNT:
        logging.warning("the DEMO dataset spec expects %d scans; %d requested", DEMO_SCAN_COUNT, args.scans)
    written = write_demo_dataset(args.out, n_scans=args.scans, seed=args.seed, size=args.size)
    logging.info("wrote %d files to %s", len(written), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
