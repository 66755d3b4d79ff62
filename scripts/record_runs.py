"""Record finished runs without their weights (experiment/records.py), so that their tables and
curves outlive the run folders.

    python scripts/record_runs.py runs/CHAOST2_setting1_psmnet_q2s                  # every fold of a row
    python scripts/record_runs.py runs/CHAOST2_setting2_group0_panet+runs/CHAOST2_setting2_group1_panet
    python scripts/record_runs.py runs/CHAOST2_setting1_panet --folds 1 2 --to docs/records
    python scripts/record_runs.py runs/CHAOST2_setting1_mcam_only --folds 4 --failed  # a diverged training
    python scripts/summarize_folds.py docs/records/CHAOST2_setting1_psmnet_q2s      # tables from the records

Each argument is a row as scripts/summarize_folds.py takes it (a run-name prefix, '+' joining
Setting-2 groups); each of its evaluated folds `<prefix>_fold<k>` is recorded as
`<records root>/<prefix name>_fold<k>` (default root docs/records, where docs/RESULTS.md's runs
are kept). Folds not evaluated yet are skipped with a note; with --failed, a fold whose training
failed (a diverged model: its last train.py call's status FAILED, the traceback in its run.json)
is recorded without an evaluation, its curves up to the failure and its Sacred calls being the
result. Recording again adds only what is new; a record that would change is refused, naming the
file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from experiment.layout import fold_runs  # noqa: E402  (after the path set-up)
from experiment.records import RecordError, is_evaluated, record_run  # noqa: E402

DEFAULT_RECORDS_ROOT = REPO_ROOT / "docs" / "records"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="+", help="run-name prefixes (their folds are <prefix>_fold<k>; '+' joins groups)")
    parser.add_argument("--to", type=Path, default=DEFAULT_RECORDS_ROOT, help="records root (default: docs/records)")
    parser.add_argument("--folds", type=int, nargs="+", help="only these folds (default: every fold found)")
    parser.add_argument("--failed", action="store_true",
                        help="also record folds whose training failed (no evaluation; their curves and traceback)")
    args = parser.parse_args()
    prefixes = [prefix for row in args.rows for prefix in row.split("+")]
    for prefix in prefixes:
        runs = {fold: run for fold, run in fold_runs(prefix).items() if args.folds is None or fold in args.folds}
        if not runs:
            raise SystemExit(f"{prefix}: no run folders <prefix>_fold<k>" + (f" of folds {args.folds}" if args.folds else ""))
        for fold, run in runs.items():
            if not is_evaluated(run) and not (args.failed and run.training_failed()):
                failed = " (its training failed: --failed records it)" if run.training_failed() else ""
                print(f"{run.folder}: not evaluated yet, skipped{failed}")
                continue
            try:
                recorded = record_run(run, args.to, failed_training=args.failed)
            except RecordError as error:
                raise SystemExit(f"error: {error}") from None
            added = ", ".join(str(path) for path in recorded.added) or "nothing new"
            print(f"{run.folder} -> {recorded.record.folder}: added {added}; {recorded.unchanged} already recorded")


if __name__ == "__main__":
    main()
