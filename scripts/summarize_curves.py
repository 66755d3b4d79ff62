"""Learning curves of cross-validated runs as tables: validation Dice and training loss per step.

    python scripts/summarize_curves.py runs/CHAOST2_setting1_psmnet runs/CHAOST2_setting1_alpnet

Each argument is one row, a run-name prefix as in scripts/summarize_folds.py (`+` joins Setting-2
organ groups). From every fold's tensorboard events (experiment/curves.py) it reads the validation
Dice that train.py logs every `validate_every` steps (the organs' mean, on training scans whose
labels are never trained on) and the total training loss; the first table shows, per validation
step, the mean ± std over folds of the validation Dice, the second the mean training loss over the
steps since the previous validation (single-episode losses are too noisy to read one by one).
scripts/make_figures.py plots the same curves.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from evaluation.scoring import mean_and_std  # noqa: E402  (after the path set-up)
from experiment.curves import Curve, fold_curves  # noqa: E402
from experiment.layout import row_name  # noqa: E402

PERCENT = 100


def window_mean(values: Curve, after: int, until: int) -> float | None:
    """Mean of the values logged at steps in (after, until]; None when there are none."""
    window = [value for step, value in values.items() if after < step <= until]
    return sum(window) / len(window) if window else None


def curve_tables(rows: list[str], folds: list[int] | None = None) -> str:
    curves = {row: fold_curves(row, folds) for row in rows}
    steps = sorted({step for folds in curves.values() for dice, _ in folds.values() for step in dice})
    header = "| method | folds | " + " | ".join(f"step {step}" for step in steps) + " |"
    rule = "|---|---|" + "---|" * len(steps)
    dice_lines, loss_lines = [header, rule], [header, rule]
    for row, folds in curves.items():
        dice_cells, loss_cells = [], []
        for previous, step in zip([0, *steps], steps):
            dice = [curve[step] for curve, _ in folds.values() if step in curve]
            loss = [mean for _, loss_curve in folds.values()
                    if (mean := window_mean(loss_curve, previous, step)) is not None]
            dice_cells.append(_mean_std(dice, PERCENT, "{:.2f}"))
            loss_cells.append(_mean_std(loss, 1, "{:.3f}"))
        dice_lines.append(f"| {row_name(row)} | {len(folds)} | " + " | ".join(dice_cells) + " |")
        loss_lines.append(f"| {row_name(row)} | {len(folds)} | " + " | ".join(loss_cells) + " |")
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
    parser.add_argument("--folds", type=int, nargs="+", help="only these folds (default: every fold with events)")
    args = parser.parse_args()
    print(curve_tables(args.rows, args.folds))


if __name__ == "__main__":
    main()
