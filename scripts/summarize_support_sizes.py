"""Tabulate a metric against the support size N (test.py's `n_support_slices`), over folds.

    python test.py with chaost2 setting1 psmnet eval_fold=0 n_support_slices=4   # one evaluation per N and fold
    python scripts/summarize_support_sizes.py runs/CHAOST2_setting1_psmnet runs/CHAOST2_setting1_universeg
    python scripts/summarize_support_sizes.py runs/CHAOST2_setting1_psmnet --support-sizes 1 8 --folds 0 1 --metrics dice hd95

Rows are run-name prefixes as in scripts/summarize_folds.py ('+' joins Setting-2 organ groups).
A row's sizes are compared on the same folds: those evaluated with every N asked for (a note names
each fold left out). Per metric, three tables: the organs' mean against N, mean ± std over folds,
with the gain from the smallest to the largest N (mean ± std of each fold's difference); every
organ at every N (rows "<method>, N = <k>"), and the organs' mean of every fold at every N, as
summarize_folds prints them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from evaluation.metrics import METRICS  # noqa: E402  (after the path set-up)
from evaluation.reports import HEADLINE_METRIC, fold_means_table, fold_table, support_size_table  # noqa: E402
from experiment.fold_rows import DEFAULT_SUPPORT_SIZES, support_size_evaluations  # noqa: E402
from experiment.layout import row_name  # noqa: E402


def support_size_tables(rows: list[str], support_sizes: tuple[int, ...] = DEFAULT_SUPPORT_SIZES,
                        metrics: tuple[str, ...] = (HEADLINE_METRIC,), folds: list[int] | None = None) -> str:
    """Per metric: the organs' mean against N, every organ at every N, every fold at every N; then the notes."""
    sizes = tuple(sorted(set(support_sizes)))
    rows_read = {row_name(row): support_size_evaluations(row, sizes, folds) for row in rows}
    organs = {name: {size: read.organs_per_fold() for size, read in per_size.items()}
              for name, per_size in rows_read.items()}
    per_organ_rows = {f"{name}, N = {size}": per_fold for name, per_size in organs.items()
                      for size, per_fold in per_size.items()}
    sections = []
    for metric in metrics:
        unit = METRICS[metric].unit
        sections += [f"{metric} ({unit}), organs' mean against the support size N, mean ± std over folds",
                     support_size_table(organs, metric),
                     f"{metric} ({unit}) per organ and support size, mean ± std over folds",
                     fold_table(per_organ_rows, metric),
                     f"{metric} ({unit}), organs' mean per fold and support size",
                     fold_means_table(per_organ_rows, metric)]
    notes = dict.fromkeys(note for per_size in rows_read.values() for read in per_size.values() for note in read.notes)
    return "\n\n".join(sections + list(notes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="+", help="run-name prefixes, one per row ('+' joins organ groups)")
    parser.add_argument("--support-sizes", type=int, nargs="+", default=list(DEFAULT_SUPPORT_SIZES),
                        help="the N of the evaluations to compare (default: %(default)s)")
    parser.add_argument("--metrics", nargs="+", choices=list(METRICS), default=[HEADLINE_METRIC],
                        help="one pair of tables per metric (default: %(default)s)")
    parser.add_argument("--folds", type=int, nargs="+", help="only these folds (default: every fold with all sizes)")
    args = parser.parse_args()
    if min(args.support_sizes) < 1:
        parser.error(f"--support-sizes must be >= 1, got {args.support_sizes}")
    print(support_size_tables(args.rows, tuple(args.support_sizes), tuple(args.metrics), args.folds))


if __name__ == "__main__":
    main()
