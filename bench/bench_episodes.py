"""Episodes per second of the data pipeline (superpixel, supervised, test-episode building).

Measures, on CHAOST2 (or synthetic DEMO scans when CHAOST2 is absent), for each image size and
DataLoader worker count: training episodes per second of `SuperpixelEpisodes` and
`SupervisedEpisodes` (with the protocol augmentation, batch 1, the first batch excluded so that
worker start-up is not counted), and test episodes built per second by `build_test_episodes`
(all test organs of one fold; no DataLoader, so only measured once per size).

    python bench/bench_episodes.py [--dataset-dir DIR] [--sizes 256 128] [--workers 0 2]
                                   [--episodes 64] [--fold 0] [--torch-threads 1]

`--torch-threads` sets torch's intra-op threads of the main process (DataLoader workers always use
one): the per-episode tensors are small, so extra threads only add overhead on a busy machine.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders.augmentation import AugmentationParams  # noqa: E402
from dataloaders.demo_data import write_demo_dataset  # noqa: E402
from dataloaders.derived_files import ensure_derived_files  # noqa: E402
from dataloaders.episodes_superpixel import SuperpixelEpisodes  # noqa: E402
from dataloaders.episodes_supervised import SupervisedEpisodes  # noqa: E402
from dataloaders.episodes_test import build_test_episodes  # noqa: E402
from dataloaders.folds import fold_split  # noqa: E402
from dataloaders.specs import DEMO_SCAN_COUNT, DatasetSpec, get_spec  # noqa: E402
from dataloaders.volumes import load_scans  # noqa: E402
from utils.seeding import make_generator, worker_init_fn  # noqa: E402

DEFAULT_CHAOST2 = Path(__file__).resolve().parents[2] / "shared/data/CHAOST2"
EXCLUDED_GROUP = 1  # Setting-2 group removed from supervised training (the kidneys on CHAOST2)
SEED = 1234


def episodes_per_second(dataset: Dataset, workers: int) -> float:
    """Iterate a batch-1 DataLoader over `dataset`; episodes per second after the first batch."""
    loader = DataLoader(dataset, batch_size=1, num_workers=workers, worker_init_fn=worker_init_fn,
                        generator=make_generator(SEED))
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    count = sum(1 for _ in iterator)
    return count / (time.perf_counter() - start)


def dataset_and_spec(dataset_dir: Path | None, scratch: Path) -> tuple[Path, DatasetSpec]:
    if dataset_dir is not None and dataset_dir.is_dir():
        return dataset_dir, get_spec(dataset_dir.name)
    logging.warning("CHAOST2 not found at %s: benchmarking synthetic DEMO scans", dataset_dir)
    demo_dir = scratch / "DEMO"
    write_demo_dataset(demo_dir, DEMO_SCAN_COUNT)
    return demo_dir, get_spec("DEMO")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-dir", type=Path, default=DEFAULT_CHAOST2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as scratch:
        dataset_dir, spec = dataset_and_spec(args.dataset_dir, Path(scratch))
        derived_dir = ensure_derived_files(dataset_dir, spec, workers=max(1, *args.workers))
        split = fold_split(spec, args.fold)
        excluded = spec.setting2_groups[EXCLUDED_GROUP]
        base_labels = [label for label in spec.labels if label not in excluded]
        print(f"dataset {spec.name} ({dataset_dir}), fold {args.fold}: {len(split.train_ids)} training scans, "
              f"{args.episodes} episodes per measurement, {args.torch_threads} torch thread(s)")
        print("| loader | size | workers | episodes/s |")
        print("|---|---|---|---|")
        for size in args.sizes:
            train = load_scans(dataset_dir, spec, split.train_ids, derived_dir=derived_dir,
                               with_superpixels=True, image_size=size)
            datasets = {
                "superpixel": SuperpixelEpisodes(train, episodes_per_epoch=args.episodes,
                                                 augmentation=AugmentationParams(), seed=SEED),
                "supervised": SupervisedEpisodes(train, base_labels, episodes_per_epoch=args.episodes,
                                                 excluded_labels=excluded, augmentation=AugmentationParams(),
                                                 seed=SEED),
            }
            for name, dataset in datasets.items():
                for workers in args.workers:
                    print(f"| {name} | {size} | {workers} | {episodes_per_second(dataset, workers):.1f} |",
                          flush=True)
            test_scans = load_scans(dataset_dir, spec, [*split.query_ids, *split.support_ids],
                                    derived_dir=derived_dir, image_size=size)
            start = time.perf_counter()
            built = sum(len(build_test_episodes(test_scans, split, label, spec.organs[label]))
                        for label in spec.test_labels)
            rate = built / (time.perf_counter() - start)
            print(f"| test episodes ({built} built) | {size} | 0 | {rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
