"""Where the demo's time goes: drawing an episode (with and without augmentation), one training
step of the model, and the evaluation of the demo fold with Dice only and with every metric.

    python bench/bench_demo_split.py --data-root data          # the DEMO data run_demo.sh writes
    OMP_NUM_THREADS=1 python bench/bench_demo_split.py --data-root data --steps 20

Builds everything as train.py does for `demo cpu quick` (experiment/assembly.py) and times each
part in one process, so the ratios hold on a busy machine even when the seconds do not.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.step_timing import time_training_steps  # noqa: E402
from config import composed_config  # noqa: E402
from evaluation.scoring import evaluate_episodes  # noqa: E402
from experiment.assembly import (build_model_from_config, ensure_superpixels, fold_data, test_episodes,  # noqa: E402
                                 training_dataset)
from experiment.optimisation import build_optimizer  # noqa: E402
from utils.runtime import check_precision  # noqa: E402

WARMUP_STEPS = 3  # untimed steps first (allocator and kernel selection)


def seconds_per_episode(dataset, count: int) -> float:
    dataset.set_epoch(0)
    started = time.perf_counter()
    for index in range(count):
        dataset[index]
    return (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="data", help="folder holding DEMO/")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    args = parser.parse_args()

    config = composed_config(["demo", "cpu", "quick"], {"data_root": args.data_root})
    data = fold_data(config)
    ensure_superpixels(config, data)
    augmented = training_dataset(config, data)
    plain = training_dataset({**config, "augment": False}, data)
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"episode with augmentation: {seconds_per_episode(augmented, args.steps) * 1e3:.1f} ms, "
          f"without: {seconds_per_episode(plain, args.steps) * 1e3:.1f} ms")

    model = build_model_from_config(config)
    model.train()
    optimizer = build_optimizer(config, model.parameters())
    class_weights = torch.tensor(config["class_weights"])
    precision = check_precision(config["precision"])
    augmented.set_epoch(0)
    batches = [default_collate([augmented[index]]) for index in range(WARMUP_STEPS + args.steps)]
    step_seconds = time_training_steps(model, optimizer, batches, config, class_weights, "cpu", precision)[WARMUP_STEPS:]
    print(f"training step (forward, losses, backward, SGD): median {statistics.median(step_seconds) * 1e3:.0f} ms")

    model.eval()
    episodes = test_episodes(config, data)
    for metrics in (("dice",), tuple(config["metrics"])):
        started = time.perf_counter()
        evaluate_episodes(model, episodes, "cpu", precision, config["eval_batch_size"], metrics)
        print(f"evaluation of {len(episodes)} test episodes, metrics {', '.join(metrics)}: "
              f"{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
