"""Seconds per training step of the semi-supervised track, against the few-shot PSMnet step, on ACDC.

Every variant is built as train.py builds it (config.composed_config, experiment/tracks.py) and
times the step train.py takes: the method's losses, backward, the optimiser and schedule step and
its after-update (the EMA teacher); steps are interleaved round-robin so a busy machine slows each
variant alike, and the median of the timed steps is reported with its ratio to the few-shot
`cpu`-profile PSMnet step (ResNet-18, 128 px, one synthetic episode). One test volume (the first
of test.list) is segmented and scored at each variant's patch size. Run from the repository root
with ACDC under the data root:

    FSMIS_DATA_ROOT=../shared/data python bench/bench_semi_supervised.py --steps 6
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_models import synthetic_episode  # noqa: E402
from config import composed_config  # noqa: E402
from evaluation.volume_scoring import evaluate_volumes  # noqa: E402
from experiment.assembly import build_model_from_config  # noqa: E402
from experiment.optimisation import Optimisation  # noqa: E402
from experiment.tracks import build_track  # noqa: E402
from experiment.training_step import episode_losses  # noqa: E402
from utils.distributed import Ranks  # noqa: E402

WARMUP_STEPS = 1
# the iteration passed to the methods: past Mean Teacher's 1000-iteration start on both clocks, so
# that the consistency term (and its backward) is timed
TIMED_ITERATION = 2000
# name -> (named configs, updates): the paper config and the cpu-profile candidates
VARIANTS = {
    "mean_teacher paper (256 px, 12+12)": (["acdc", "mean_teacher"], {"device": "cpu"}),
    "mean_teacher 128 px, 12+12": (["acdc", "mean_teacher", "cpu"], {"batch_size": 24}),
    "mean_teacher 128 px, 4+4 (cpu)": (["acdc", "mean_teacher", "cpu"], {}),
    "supervised 128 px, 8 (cpu)": (["acdc", "supervised", "cpu"], {}),
    # the iteration above reads 33 333 on KnowSAM's scaled clock: past its patch exchange's start (12 000), the
    # dearer three quarters of its cpu-profile steps
    "knowsam 128 px, 4+4 (cpu, small SAM)": (["acdc", "knowsam", "cpu"], {}),
}


def semi_supervised_step(track, optimisation, batches, iteration: int) -> float:
    started = time.perf_counter()
    outcome = track.training_step(next(batches), iteration)
    optimisation.zero_grad()
    sum(outcome.losses.values()).backward()
    optimisation.step()
    track.after_update(iteration)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant (after one warm-up step)")
    arguments = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device("cpu")

    runners, test_volumes = {}, {}
    for name, (named_configs, updates) in VARIANTS.items():
        config = composed_config(named_configs, {**updates, "labelled_patients": 7})
        track = build_track(config, device, "fp32", Ranks())
        optimisation = Optimisation(config, track.parameter_groups())
        batches = track.batches(0)
        runners[name] = (lambda track=track, optimisation=optimisation, batches=batches:
                         semi_supervised_step(track, optimisation, batches, TIMED_ITERATION))
        test_volumes[name] = (track, config)

    few_shot_config = composed_config(["demo", "cpu"], {})
    few_shot = build_model_from_config(few_shot_config).train()
    few_shot_optimisation = Optimisation(few_shot_config, {"model": list(few_shot.parameters())})
    episode = synthetic_episode(few_shot_config["image_size"], 1)
    class_weights = torch.tensor(few_shot_config["class_weights"])

    def few_shot_step() -> float:
        started = time.perf_counter()
        _, losses = episode_losses(few_shot, episode, few_shot_config, class_weights, device, "fp32")
        few_shot_optimisation.zero_grad()
        sum(losses.values()).backward()
        few_shot_optimisation.step()
        return time.perf_counter() - started

    runners["few-shot PSMnet cpu (ResNet-18, 128 px, 1 episode)"] = few_shot_step
    seconds = {name: [] for name in runners}
    for round_index in range(WARMUP_STEPS + arguments.steps):
        for name, run in runners.items():
            elapsed = run()
            if round_index >= WARMUP_STEPS:
                seconds[name].append(elapsed)
    reference = statistics.median(seconds["few-shot PSMnet cpu (ResNet-18, 128 px, 1 episode)"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {arguments.steps} timed steps each")
    print("| variant | s / step (median) | x few-shot PSMnet step | test volume (s) |")
    print("|---|---|---|---|")
    for name, values in seconds.items():
        volume_seconds = ""
        if name in test_volumes:
            track, config = test_volumes[name]
            volume = track.data.evaluation_volumes(track.data.test_ids[:1])
            started = time.perf_counter()
            evaluate_volumes(track.model, volume, track.data.classes, config["image_size"], device, "fp32",
                             config["eval_batch_size"], config["metrics"], config["metric_rules"])
            volume_seconds = f"{time.perf_counter() - started:.2f}"
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {median / reference:.1f} | {volume_seconds} |")


if __name__ == "__main__":
    main()
