"""Episodes per second of the data pipeline (superpixel, supervised, test-episode building).

Measures, on CHAOST2 (or synthetic DEMO scans when CHAOST2 is absent), for each image size and
DataLoader worker count: training episodes per second of `SuperpixelEpisodes` and
`SupervisedEpisodes` (with the protocol augmentation, batch 1, the first batch excluded so that
worker start-up is not counted), and test episodes built per second by `build_test_episodes`
(all test organs of one fold; no DataLoader, so only measured once per size). Datasets and
episodes come from the experiment assembly with the configs train.py would use.

    python bench/bench_episodes.py [--data-root DIR] [--sizes 256 128] [--workers 0 2]
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

from config import composed_config  # noqa: E402
from dataloaders.demo_data import write_demo_dataset  # noqa: E402
from dataloaders.specs import DEMO_SCAN_COUNT  # noqa: E402
from experiment.assembly import ensure_superpixels, fold_data, test_episodes, training_dataset  # noqa: E402
from utils.seeding import make_generator, worker_init_fn  # noqa: E402

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
EXCLUDED_GROUP = 1  # Setting-2 group removed from supervised training (the kidneys on CHAOST2)
# named configs and updates of the two training modes (the superpixel one in Setting 1)
TRAINING_MODES = {
    "superpixel": (["setting1"], {}),
    "supervised": (["setting2", "base_classes"], {"label_group": EXCLUDED_GROUP}),
}


def episodes_per_second(dataset: Dataset, workers: int, seed: int) -> float:
    """Iterate a batch-1 DataLoader over `dataset`; episodes per second after the first batch."""
    loader = DataLoader(dataset, batch_size=1, num_workers=workers, worker_init_fn=worker_init_fn,
                        generator=make_generator(seed))
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    count = sum(1 for _ in iterator)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="folder holding CHAOST2/")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as scratch:
        data_root, dataset = args.data_root, "chaost2"
        if not (data_root / "CHAOST2").is_dir():
            logging.warning("CHAOST2 not found in %s: benchmarking synthetic DEMO scans", data_root)
            data_root, dataset = Path(scratch), "demo"
            write_demo_dataset(data_root / "DEMO", DEMO_SCAN_COUNT)
        common = {"data_root": str(data_root), "eval_fold": args.fold, "steps_per_epoch": args.episodes}
        printed_header = False
        for size in args.sizes:
            configs = {mode: composed_config([dataset, *named], {**common, **updates, "image_size": size})
                       for mode, (named, updates) in TRAINING_MODES.items()}
            data = fold_data(configs["superpixel"])
            if not printed_header:
                ensure_superpixels(configs["superpixel"], data)
                print(f"dataset {data.spec.name} ({data.dataset_dir}), fold {args.fold}: {len(data.split.train_ids)} "
                      f"training scans, {args.episodes} episodes per measurement, {args.torch_threads} torch thread(s)")
                print("| loader | size | workers | episodes/s |")
                print("|---|---|---|---|")
                printed_header = True
            for mode, config in configs.items():
                dataset_of_mode = training_dataset(config, data)
                for workers in args.workers:
                    rate = episodes_per_second(dataset_of_mode, workers, config["seed"])
                    print(f"| {mode} | {size} | {workers} | {rate:.1f} |", flush=True)
            start = time.perf_counter()
            built = len(test_episodes(configs["superpixel"], data))
            rate = built / (time.perf_counter() - start)
            print(f"| test episodes ({built} built) | {size} | 0 | {rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
