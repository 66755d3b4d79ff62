"""Train and test every cross-validation fold of one experiment in turn, resuming what is already done.

    python scripts/run_folds.py --folds 0 1 2 3 4 -- with chaost2 setting1 psmnet cpu

Everything after `--` is passed to train.py and test.py (with `eval_fold=<k>` added). A fold whose
evaluation is newer than its checkpoint and scores the configured steps is skipped; any other fold
runs train.py (which resumes from its last checkpoint, or stops at once when training finished)
and test.py. Several rows, seeds, GPUs, CPU workers or Slurm: scripts/run_sweep.py. Summarise the
folds with scripts/summarize_folds.py. Adding `n_support_slices=<N>` to trained folds evaluates
them with larger support sets, next to the protocol's evaluation (experiment/layout.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from config import composed_config, parse_command_line  # noqa: E402  (after the path set-up)
from experiment.sweep import run_fold_job, table_jobs  # noqa: E402


def compose(arguments) -> dict:
    return composed_config(*parse_command_line(arguments))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="folds to run (default: 0..4)")
    parser.add_argument("sacred_args", nargs=argparse.REMAINDER, help="-- then train.py/test.py arguments")
    args = parser.parse_args()
    sacred_args = [arg for arg in args.sacred_args if arg != "--"]

    for job in table_jobs([sacred_args], args.folds, compose):
        outcome = run_fold_job(job)
        print(f"fold {job.fold}: {outcome.describe()} ({job.run_folder})", flush=True)


if __name__ == "__main__":
    main()
