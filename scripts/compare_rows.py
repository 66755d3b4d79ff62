"""Compare two table rows fold by fold: the difference of their organs' mean in every fold both have.

    python scripts/compare_rows.py --pair runs/CHAOST2_setting1_psmnet runs/CHAOST2_setting1_psm_only
    python scripts/compare_rows.py --pair runs/CHAOST2_setting1_psmnet runs/CHAOST2_setting1_alpnet \
        --pair "runs/CHAOST2_setting2_group0_psmnet+runs/CHAOST2_setting2_group1_psmnet" \
               "runs/CHAOST2_setting2_group0_alpnet+runs/CHAOST2_setting2_group1_alpnet" --metrics dice hd95

Rows are run-name prefixes as in scripts/summarize_folds.py ('+' joins Setting-2 organ groups),
read with the same checks. Each `--pair A B` is one line per metric: A's organs' mean minus B's in
every fold both rows have evaluated, the mean ± std of those differences, and on how many folds A
is better (higher Dice; lower HD95). Folds only one row has are named in a note. Paired
differences answer "does A beat B, by how much, on how many folds" without the spread between
folds that both rows share.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from evaluation.metrics import METRICS  # noqa: E402  (after the path set-up)
from evaluation.reports import HEADLINE_METRIC, metric_unit, paired_difference_table  # noqa: E402
from experiment.fold_rows import distance_unit, evaluation_departure, row_evaluations  # noqa: E402
from experiment.layout import row_name  # noqa: E402


def comparison_tables(pairs: list[tuple[str, str]], metrics: tuple[str, ...] = (HEADLINE_METRIC,),
                      folds: list[int] | None = None, departures: dict[str, str] | None = None) -> str:
    """Per metric, one paired-difference table of every pair (from the evaluations of `departures`
    when given, as summarize_folds); then the notes."""
    read = {row: row_evaluations(row, folds=folds, departures=departures) for pair in pairs for row in pair}
    organs = {row: evaluations.organs_per_fold() for row, evaluations in read.items()}
    notes = list(dict.fromkeys(note for evaluations in read.values() for note in evaluations.notes))
    for row_a, row_b in pairs:
        unpaired = sorted(set(organs[row_a]) ^ set(organs[row_b]))
        if unpaired:
            notes.append(f"{row_name(row_a)} minus {row_name(row_b)}: fold(s) {', '.join(map(str, unpaired))} "
                         f"left out, evaluated for one row only")
    distances_in = distance_unit({row_name(row): evaluations for row, evaluations in read.items()})
    sections = []
    for metric in metrics:
        sections += [f"{metric} ({metric_unit(metric, distances_in)}), organs' mean: A minus B per fold",
                     paired_difference_table({(row_name(row_a), row_name(row_b)): (organs[row_a], organs[row_b])
                                              for row_a, row_b in pairs}, metric)]
    return "\n\n".join(sections + notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", nargs=2, action="append", required=True, metavar=("A", "B"),
                        help="two rows (run-name prefixes, '+' joins organ groups); repeat for more pairs")
    parser.add_argument("--metrics", nargs="+", choices=list(METRICS), default=[HEADLINE_METRIC],
                        help="one table per metric (default: %(default)s)")
    parser.add_argument("--folds", type=int, nargs="+", help="only these folds (default: every fold both rows have)")
    parser.add_argument("--departure", type=evaluation_departure, action="append", default=[], metavar="KEY=VALUE",
                        help="the evaluations with this option away from the protocol's (as summarize_folds.py)")
    args = parser.parse_args()
    print(comparison_tables([tuple(pair) for pair in args.pair], tuple(args.metrics), args.folds, dict(args.departure)))


if __name__ == "__main__":
    main()
