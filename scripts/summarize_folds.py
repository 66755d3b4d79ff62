"""Summarise cross-validation folds in the papers' layout: mean ± std over folds per organ.

    python scripts/summarize_folds.py runs/CHAOST2_setting1_psmnet runs/CHAOST2_setting1_alpnet
    python scripts/summarize_folds.py "runs/CHAOST2_setting2_group0_psmnet+runs/CHAOST2_setting2_group1_psmnet"
    python scripts/summarize_folds.py runs/CHAOST2_setting1_psmnet --metrics dice hd95 assd precision recall
    python scripts/summarize_folds.py runs/CHAOST2_setting1_universeg --support-slices 4   # test.py n_support_slices=4
    python scripts/summarize_folds.py runs/CHAOST2_setting1_psmnet runs/CHAOST2_setting1_alpnet --folds 0 1 2
    python scripts/summarize_folds.py runs/CHAOST2_mean_teacher_labelled1 \
        --departure metric_rules=project --departure scored_slices=organ_extent   # test.py with those options

Each argument is one table row: a run-name prefix (the folds are `<prefix>_fold<k>`), or several
prefixes joined by `+` whose organs are combined (Setting 2 trains one model per organ group).
Per organ and fold, a metric is the mean over that fold's query scans (test.py's summary.json);
each table shows the mean and standard deviation over folds, organs as columns in label order,
and the organs' mean per fold likewise; a second table per metric lists the organs' mean of every
fold (a fold not evaluated is '-'). Dice and HD95 by default (Dice in %, HD95 in mm, or in voxels
for data without spacing: ACDC; rows in different units are refused). A row
whose folds were trained with different models or configs (other than the fold, and the label
group between '+'-joined prefixes), or evaluated with `allow_config_mismatch`, is refused with the
differing key (the provenance test.py writes into summary.json); a fold that not every '+'-joined
prefix has evaluated yet is left out with a note (experiment/fold_rows.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from evaluation.metrics import METRICS  # noqa: E402  (after the path set-up)
from evaluation.reports import fold_means_table, fold_table, metric_unit, undefined_counts  # noqa: E402
from experiment.fold_rows import distance_unit, evaluation_departure, row_evaluations  # noqa: E402
from experiment.layout import PROTOCOL_SUPPORT_SLICES, row_name  # noqa: E402

DEFAULT_METRICS = ("dice", "hd95")


def summary_tables(rows: list[str], metrics: tuple[str, ...] = DEFAULT_METRICS,
                   n_support_slices: int = PROTOCOL_SUPPORT_SLICES, folds: list[int] | None = None,
                   departures: dict[str, str] | None = None) -> str:
    """Two markdown tables per metric (mean ± std over folds per organ; the organs' mean of each
    fold), with a note where a metric was undefined for some scans, and one where query scans
    without an organ were skipped (docs/PROTOCOL.md)."""
    rows_read = {row_name(row): row_evaluations(row, n_support_slices, folds, departures) for row in rows}
    evaluations = {name: read.evaluations for name, read in rows_read.items()}
    results = {name: read.organs_per_fold() for name, read in rows_read.items()}
    distances_in = distance_unit(rows_read)
    sections = []
    for metric in metrics:
        unit = metric_unit(metric, distances_in)
        title = f"{metric} ({unit}), mean ± std over folds"
        notes = [f"{name}: {count} query scan(s) without a value (empty prediction), left out of the means"
                 for name, count in undefined_counts(results, metric).items() if count]
        per_fold_title = f"{metric} ({unit}), organs' mean per fold"
        sections.append("\n\n".join([title, fold_table(results, metric), per_fold_title,
                                      fold_means_table(results, metric), *notes]))
    skipped = {name: sum(evaluation.summary.get("n_skipped_scans", 0) for evaluation in row)
               for name, row in evaluations.items()}
    sections += [f"{name}: {count} query scan(s) skipped for an organ absent from them (docs/PROTOCOL.md, "
                 f"\"Organs absent from a query scan\")" for name, count in skipped.items() if count]
    sections += [note for read in rows_read.values() for note in read.notes]
    return "\n\n".join(sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="+", help="run-name prefixes, one per row ('+' joins organ groups)")
    parser.add_argument("--metrics", nargs="+", choices=list(METRICS), default=list(DEFAULT_METRICS),
                        help="one table per metric (default: %(default)s)")
    parser.add_argument("--support-slices", type=int, default=PROTOCOL_SUPPORT_SLICES,
                        help="the evaluations with this n_support_slices (default: the protocol's %(default)s)")
    parser.add_argument("--folds", type=int, nargs="+", help="only these folds (default: every evaluated fold)")
    parser.add_argument("--departure", type=evaluation_departure, action="append", default=[], metavar="KEY=VALUE",
                        help="the evaluations with this option away from the protocol's, in their own folders "
                             "(e.g. metric_rules=project scored_slices=organ_extent); repeat for several")
    args = parser.parse_args()
    print(summary_tables(args.rows, tuple(args.metrics), args.support_slices, args.folds, dict(args.departure)))


if __name__ == "__main__":
    main()
