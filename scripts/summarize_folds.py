"""Summarise cross-validation folds as mean +- std Dice per organ, in the papers' table layout.

    python scripts/summarize_folds.py runs/CHAOST2_setting1_psmnet runs/CHAOST2_setting1_alpnet
    python scripts/summarize_folds.py "runs/CHAOST2_setting2_group0_psmnet+runs/CHAOST2_setting2_group1_psmnet"

Each argument is one table row: a run-name prefix (the folds are `<prefix>_fold<k>`), or several
prefixes joined by `+` whose organs are combined (Setting 2 trains one model per organ group).
Per organ and fold, Dice is the mean over that fold's query scans (test.py's summary.json); the
table shows the mean and standard deviation over folds, and the organs' mean per fold likewise.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from utils.io import read_json  # noqa: E402  (after the path set-up)
from utils.metrics import mean_and_std  # noqa: E402

FOLD_PATTERN = re.compile(r"_fold(\d+)$")
PERCENT = 100


def fold_run_directories(prefix: str) -> dict[int, Path]:
    """{fold: run directory} of the runs named `<prefix>_fold<k>`."""
    prefix_path = Path(prefix)
    run_dirs = {}
    for run_dir in prefix_path.parent.glob(f"{prefix_path.name}_fold*"):
        match = FOLD_PATTERN.search(run_dir.name)
        if match and run_dir.name == f"{prefix_path.name}_fold{match.group(1)}":
            run_dirs[int(match.group(1))] = run_dir
    return dict(sorted(run_dirs.items()))


def fold_dice(row: str) -> tuple[dict[int, dict[str, float]], dict[str, int]]:
    """({fold: {organ: mean Dice over the fold's query scans}}, {organ: label id}) for one table row."""
    per_fold: dict[int, dict[str, float]] = defaultdict(dict)
    organ_labels: dict[str, int] = {}
    for prefix in row.split("+"):
        for fold, run_dir in fold_run_directories(prefix).items():
            summary_path = run_dir / f"evaluation_fold{fold}" / "summary.json"
            if not summary_path.is_file():
                continue
            for organ, scores in read_json(summary_path)["organs"].items():
                per_fold[fold][organ] = scores["dice"]
                organ_labels[organ] = scores["label"]
    if not per_fold:
        raise SystemExit(f"{row}: no evaluated folds found (expected <prefix>_fold<k>/evaluation_fold<k>/summary.json)")
    return dict(per_fold), organ_labels


def format_cell(values: list[float]) -> str:
    mean, std = mean_and_std(values)
    return f"{PERCENT * mean:.2f} ± {PERCENT * std:.2f}"


def summary_table(rows: list[str]) -> str:
    results, organ_labels = {}, {}
    for row in rows:
        results[row], row_labels = fold_dice(row)
        organ_labels.update(row_labels)
    organs = sorted(organ_labels, key=organ_labels.get)  # the papers' column order: by label id
    lines = ["| method | folds | " + " | ".join(organs) + " | mean |", "|---|---|" + "---|" * (len(organs) + 1)]
    for row, folds in results.items():
        cells = [format_cell([scores[organ] for scores in folds.values() if organ in scores]) for organ in organs]
        fold_means = [mean_and_std(list(scores.values()))[0] for scores in folds.values()]
        name = " + ".join(Path(prefix).name for prefix in row.split("+"))
        lines.append(f"| {name} | {len(folds)} | " + " | ".join(cells) + f" | {format_cell(fold_means)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="+", help="run-name prefixes, one per row ('+' joins organ groups)")
    print(summary_table(parser.parse_args().rows))


if __name__ == "__main__":
    main()
