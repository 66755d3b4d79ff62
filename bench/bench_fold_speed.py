"""Training step time and evaluation time per fold of every model, as ratios to SSL-ALPNet (or --reference).

Every model variant is built from the same Sacred named configs as train.py (dataset, setting,
variant, profile), so the comparison is under one profile. In one process and interleaved
round-robin (a busy machine slows every variant alike):

- training step: forward (with alignment where the variant's config trains with it), the training
  losses (`episode_losses` of experiment/training_step.py, as train.py computes them), backward
  and the variant's optimiser step (SGD; AdamW for UniverSeg), on the same pre-drawn superpixel
  episodes for every variant (drawing an episode is model-independent and not timed); the median
  over the timed steps;
- evaluation of one fold: every protocol test episode of the fold's query scans (all test organs
  of the setting), as test.py segments them, scored with Dice only (the surface distances cost the
  same for every model), from freshly initialised weights (speed does not depend on them); the
  fastest of the rounds.

    python bench/bench_fold_speed.py                       # CHAOST2 in ../shared/data, `cpu` profile
    python bench/bench_fold_speed.py --data-root DIR --derived-root data/derived --steps 30 --rounds 3
    python bench/bench_fold_speed.py --config precision=bf16     # the profile of the CHAOST2 table
    python bench/bench_fold_speed.py --variants psmnet universeg --reference psmnet   # UniverSeg vs PSMnet

Without CHAOST2 it benchmarks the synthetic DEMO dataset (written to a temporary folder).
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.step_timing import time_training_steps  # noqa: E402
from config import composed_config, parse_command_line  # noqa: E402
from dataloaders.demo_data import write_demo_dataset  # noqa: E402
from dataloaders.specs import DEMO_SCAN_COUNT  # noqa: E402
from evaluation.scoring import evaluate_episodes  # noqa: E402
from experiment.assembly import (build_model_from_config, ensure_superpixels, fold_data, test_episodes,  # noqa: E402
                                 training_dataset)
from experiment.optimisation import build_optimizer  # noqa: E402
from utils.runtime import check_precision, select_device  # noqa: E402
from utils.seeding import seed_everything  # noqa: E402

DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
REFERENCE_VARIANT = "alpnet"  # the variant the ratios divide by, unless --reference names another
VARIANTS = ["alpnet", "panet", "psmnet", "psm_only", "mcam_only"]
EVALUATION_METRICS = ("dice",)  # the speed of the model's segmentation, not of the surface metrics


def stacked(episode: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One dataset episode as a batch of 1 (the DataLoader's stacking)."""
    return {key: value.unsqueeze(0) for key, value in episode.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="folder holding CHAOST2/")
    parser.add_argument("--derived-root", default="data/derived", help="where superpixels are (or get) written")
    parser.add_argument("--profile", default="cpu", help="compute profile named config")
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config updates on top of the profile, as on train.py's command line")
    parser.add_argument("--setting", type=int, default=1, choices=[1, 2])
    parser.add_argument("--variants", nargs="+", default=VARIANTS)
    parser.add_argument("--reference", default=REFERENCE_VARIANT, help="variant the ratios divide by")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per variant and round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved timed rounds (after a one-step warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the fold runs used 1 each)")
    args = parser.parse_args()
    reference = args.reference
    if reference not in args.variants:
        parser.error(f"--variants must include {reference} (the reference of the ratios)")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as scratch:
        data_root, derived_root, dataset = args.data_root, args.derived_root, "chaost2"
        if not (data_root / "CHAOST2").is_dir():
            logging.warning("CHAOST2 not found in %s: benchmarking the synthetic DEMO dataset", data_root)
            data_root, derived_root, dataset = Path(scratch), str(Path(scratch) / "derived"), "demo"
            write_demo_dataset(data_root / "DEMO", DEMO_SCAN_COUNT)
        updates = dict(parse_command_line(args.config)[1], data_root=str(data_root), derived_root=derived_root,
                       eval_fold=args.fold)
        configs = {variant: composed_config([dataset, f"setting{args.setting}", variant, args.profile], updates)
                   for variant in args.variants}
        config = configs[reference]  # the data and episodes every variant runs on
        sizes = {variant: variant_config["image_size"] for variant, variant_config in configs.items()}
        if len(set(sizes.values())) > 1:
            parser.error(f"the variants run at different image sizes {sizes} under this profile; pass "
                         "--config image_size=<one size> to compare them on the same episodes")
        seed_everything(config["seed"])
        device = select_device(config["device"])
        precision = check_precision(config["precision"])

        data = fold_data(config)
        ensure_superpixels(config, data)
        episodes = training_dataset({**config, "training_mode": "superpixel",
                                     "steps_per_epoch": args.rounds * args.steps, "batch_size": 1}, data)
        batches = [stacked(episodes[index]) for index in range(len(episodes))]
        fold_episodes = test_episodes(config, data)

        models, optimizers = {}, {}
        for variant, variant_config in configs.items():
            models[variant] = build_model_from_config(variant_config).to(device)
            optimizers[variant] = build_optimizer(variant_config, models[variant].parameters())
        class_weights = torch.tensor(config["class_weights"], dtype=torch.float32, device=device)
        for variant in configs:  # warm-up (first-call allocations), not counted
            models[variant].train()
            time_training_steps(models[variant], optimizers[variant], batches[:1], configs[variant], class_weights,
                                device, precision)
            models[variant].eval()
            evaluate_episodes(models[variant], fold_episodes[:1], device, precision, config["eval_batch_size"],
                              EVALUATION_METRICS)
        step_times = {variant: [] for variant in configs}
        eval_times = {variant: [] for variant in configs}
        for round_index in range(args.rounds):
            round_batches = batches[round_index * args.steps : (round_index + 1) * args.steps]
            for variant in configs:
                models[variant].train()
                step_times[variant] += time_training_steps(models[variant], optimizers[variant], round_batches,
                                                           configs[variant], class_weights, device, precision)
                models[variant].eval()
                start = time.perf_counter()
                evaluate_episodes(models[variant], fold_episodes, device, precision, config["eval_batch_size"],
                                  EVALUATION_METRICS)
                eval_times[variant].append(time.perf_counter() - start)
            print(f"round {round_index + 1} of {args.rounds} done", file=sys.stderr, flush=True)

    step = {variant: statistics.median(times) for variant, times in step_times.items()}
    evaluation = {variant: min(times) for variant, times in eval_times.items()}
    query_slices = sum(episode.query_images.shape[0] for episode in fold_episodes)
    print(f"{data.spec.name} fold {args.fold}, setting {args.setting}, profile {' '.join([args.profile, *args.config])} "
          f"({config['model']['encoder']}, {precision}, {config['image_size'] or 'native'} px, output stride "
          f"{config['model']['output_stride']}), {args.threads} thread(s); training step: median of "
          f"{args.rounds} x {args.steps} steps; evaluation: {len(fold_episodes)} test episodes, "
          f"{query_slices} query slices, fastest of {args.rounds}")
    print(f"{'model':<10} {'step s':>8} {'step / ' + reference:>14} {'eval s':>8} {'eval / ' + reference:>14}")
    for variant in configs:
        print(f"{variant:<10} {step[variant]:>8.3f} {step[variant] / step[reference]:>14.2f} "
              f"{evaluation[variant]:>8.2f} {evaluation[variant] / evaluation[reference]:>14.2f}")


if __name__ == "__main__":
    main()
