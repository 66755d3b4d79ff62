"""The learning curves of runs: the tensorboard tags train.py writes, and reading them back.

train.py logs every loss term under `loss/<name>` and their sum under `loss/total` every
`log_every` steps, the learning rate under `lr`, and the validation Dice of every organ under
`validation_dice/<organ>` every `validate_every` steps (on training scans whose labels are never
trained on; semi-supervised: per class on the validation volumes, and the best mean so far under
`validation_dice/best_mean`), a method's own values (its consistency weight) under `method/<name>`,
and the number of steps skipped so far (no update: SSL-ALPNet's unscorable episodes) under
`skipped_steps`. `fold_curves` reads one table row (a run prefix, or Setting-2 group prefixes joined by
'+') back as per-fold curves; scripts/summarize_curves.py prints them as tables and
scripts/make_figures.py plots them.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator, ScalarEvent

from experiment.layout import fold_runs

VALIDATION_DICE_PREFIX = "validation_dice/"
LOSS_PREFIX = "loss/"
TOTAL_LOSS_TAG = "loss/total"
LEARNING_RATE_TAG = "lr"
SCALAR_PREFIX = "method/"  # other values a method logs (e.g. method/consistency_weight)
BEST_VALIDATION_TAG = "validation_dice/best_mean"  # semi-supervised: the best mean validation Dice so far
SKIPPED_STEPS_TAG = "skipped_steps"  # steps without an update so far (experiment/training_step.py)
KEEP_ALL_SCALARS = {SCALARS: 0}  # EventAccumulator subsamples scalars unless told to keep them all
# A resumed run's events restart at its checkpoint's step; the accumulator drops the interrupted
# run's later points (as tensorboard does) and warns once per run about it: expected, not news.
logging.getLogger("tensorboard").setLevel(logging.ERROR)

Curve = dict[int, float]  # {step: value}


def validation_dice_tag(organ: str) -> str:
    return f"{VALIDATION_DICE_PREFIX}{organ}"


def loss_tag(name: str) -> str:
    return f"{LOSS_PREFIX}{name}"


def scalar_tag(name: str) -> str:
    return f"{SCALAR_PREFIX}{name}"


def read_scalar_events(event_dir: Path) -> dict[str, list[ScalarEvent]]:
    """{tag: its events (wall time, step, value) in the order logged} of one run's tensorboard
    events; a resumed run's points logged after its checkpoint before the interruption are dropped,
    as tensorboard drops them."""
    accumulator = EventAccumulator(str(event_dir), size_guidance=KEEP_ALL_SCALARS)
    accumulator.Reload()
    return {tag: accumulator.Scalars(tag) for tag in accumulator.Tags()[SCALARS]}


def read_scalars(event_dir: Path) -> dict[str, Curve]:
    """{tag: {step: value}} of one run's tensorboard events (the last value written per step)."""
    return {tag: {event.step: event.value for event in events} for tag, events in read_scalar_events(event_dir).items()}


def fold_curves(row: str, folds: Collection[int] | None = None) -> dict[int, tuple[Curve, Curve]]:
    """{fold: ({validation step: organs' mean Dice}, {step: training loss})} for one table row, of
    `folds` only when given.

    Setting-2 rows join one run per organ group; their organs are pooled per step, and the loss
    is the mean of the groups' losses, over the steps that every group has logged (a group still
    training, or not started on a fold, never leaves a point with half of the organs). A row
    without any validation Dice is a SystemExit naming it.
    """
    prefixes = row.split("+")
    organ_dice: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    losses: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    logged_by: dict[int, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))  # fold -> step -> prefixes
    for prefix in prefixes:
        for fold, run in fold_runs(prefix).items():
            if not run.tensorboard.is_dir() or (folds is not None and fold not in folds):
                continue
            for tag, values in read_scalars(run.tensorboard).items():
                for step, value in values.items():
                    if tag.startswith(VALIDATION_DICE_PREFIX) and tag != BEST_VALIDATION_TAG:
                        organ_dice[fold][step].append(value)
                    elif tag == TOTAL_LOSS_TAG:
                        losses[fold][step].append(value)
                    else:
                        continue
                    logged_by[fold][step].add(prefix)
    curves = {}
    for fold in sorted(organ_dice):
        every_run = {step for step, logged in logged_by[fold].items() if len(logged) == len(prefixes)}
        dice = {step: sum(values) / len(values) for step, values in organ_dice[fold].items() if step in every_run}
        if dice:
            curves[fold] = (dice, {step: sum(values) / len(values) for step, values in losses[fold].items()
                                   if step in every_run})
    if not curves:
        raise SystemExit(f"{row}: no validation Dice found in <prefix>_fold<k>/tensorboard"
                         + (" logged by every one of its runs" if len(prefixes) > 1 else ""))
    return curves
