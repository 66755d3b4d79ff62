"""Learning curves of cross-validated runs as tables: validation Dice and training loss per step.

    python scripts/summarize_curves.py runs/CHAOST2_setting1_psmnet runs/CHAOST2_setting1_alpnet

Each argument is one row, a run-name prefix as in scripts/summarize_folds.py (`+` joins Setting-2
organ groups). From every fold's tensorboard events it reads the validation Dice that train.py
logs every `validate_every` steps (the organs' mean, on training scans whose labels are never
trained on) and the total training loss; the first table shows, per validation step, the mean
± std over folds of the validation Dice, the second the mean training loss over the steps since
the previous validation (single-episode losses are too noisy to read one by one).
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections import defaultdict
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from summarize_folds import PERCENT, fold_run_directories  # noqa: E402  (scripts/ is on the path)
from utils.metrics import mean_and_std  # noqa: E402

VALIDATION_PREFIX = "validation_dice/"
LOSS_TAG = "loss/total"
KEEP_ALL_SCALARS = {SCALARS: 0}  # EventAccumulator subsamples scalars unless told to keep them all
# A resumed run's events restart at its checkpoint's step; the accumulator drops the interrupted
# run's later points (as tensorboard does) and warns once per run about it: expected, not news.
logging.getLogger("tensorboard").setLevel(logging.ERROR)


def read_scalars(event_dir: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of one run's tensorboard events (the last value written per step)."""
    accumulator = EventAccumulator(str(event_dir), size_guidance=KEEP_ALL_SCALARS)
    accumulator.Reload()
    return {tag: {event.step: event.value for event in accumulator.Scalars(tag)}
            for tag in accumulator.Tags()[SCALARS]}


def fold_curves(row: str) -> dict[int, tuple[dict[int, float], dict[int, float]]]:
    """{fold: ({validation step: organs' mean Dice}, {step: training loss})} for one table row.

    Setting-2 rows join one run per organ group; their organs are pooled per step, and the loss
    is the mean of the groups' losses.
    """
    organ_dice: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    losses: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for prefix in row.split("+"):
        for fold, run_dir in fold_run_directories(prefix).items():
            event_dir = run_dir / "tensorboard"
            if not event_dir.is_dir():
                continue
            for tag, values in read_scalars(event_dir).items():
                for step, value in values.items():
                    if tag.startswith(VALIDATION_PREFIX):
                        organ_dice[fold][step].append(value)
                    elif tag == LOSS_TAG:
                        losses[fold][step].append(value)
    if not organ_dice:
        raise SystemExit(f"{row}: no validation Dice found in <prefix>_fold<k>/tensorboard")
    return {
        fold: ({step: sum(values) / len(values) for step, values in organ_dice[fold].items()},
               {step: sum(values) / len(values) for step, values in losses[fold].items()})
        for fold in sorted(organ_dice)
    }


def window_mean(values: dict[int, float], after: int, until: int) -> float | None:
    """Mean of the values logged at steps in (after, until]; None when there are none."""
    window = [value for step, value in values.items() if after < step <= until]
    return sum(window) / len(window) if window else None


def curve_tables(rows: list[str]) -> str:
    curves = {row: fold_curves(row) for row in rows}
    steps = sorted({step for folds in curves.values() for dice, _ in folds.values() for step in dice})
    header = "| method | folds | " + " | ".join(f"step {step}" for step in steps) + " |"
    rule = "|---|---|" + "---|" * len(steps)
    dice_lines, loss_lines = [header, rule], [header, rule]
    for row, folds in curves.items():
        name = " + ".join(Path(prefix).name for prefix in row.split("+"))
        dice_cells, loss_cells = [], []
        for previous, step in zip([0, *steps], steps):
            dice = [curve[step] for curve, _ in folds.values() if step in curve]
            loss = [mean for _, loss_curve in folds.values()
                    if (mean := window_mean(loss_curve, previous, step)) is not None]
            dice_cells.append(_mean_std(dice, PERCENT, "{:.2f}"))
            loss_cells.append(_mean_std(loss, 1, "{:.3f}"))
        dice_lines.append(f"| {name} | {len(folds)} | " + " | ".join(dice_cells) + " |")
        loss_lines.append(f"| {name} | {len(folds)} | " + " | ".join(loss_cells) + " |")
    return ("Validation Dice (%, organs' mean), mean ± std over folds\n\n" + "\n".join(dice_lines)
            + "\n\nTraining loss, mean over the steps since the previous column, mean ± std over folds\n\n"
            + "\n".join(loss_lines))


def _mean_std(values: list[float], scale: float, number_format: str) -> str:
    if not values:
        return "-"
    mean, std = mean_and_std(values)
    return f"{number_format.format(scale * mean)} ± {number_format.format(scale * std)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="+", help="run-name prefixes, one per row ('+' joins organ groups)")
    print(curve_tables(parser.parse_args().rows))


if __name__ == "__main__":
    main()
