"""Train and test every cross-validation fold of one experiment, resuming what is already done.

    python scripts/run_folds.py --folds 0 1 2 3 4 -- with chaost2 setting1 psmnet cpu

Everything after `--` is passed to train.py and test.py (with `eval_fold=<k>` added). A fold whose
training finished is not trained again (train.py resumes from its last checkpoint and stops at
once); a fold whose evaluation is newer than its checkpoint is not evaluated again. Summarise the
folds with scripts/summarize_folds.py. Adding `n_support_slices=<N>` to trained folds evaluates
them with larger support sets, next to the protocol's evaluation (experiment/layout.py).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from config import composed_config, parse_command_line  # noqa: E402  (after the path set-up)
from evaluation.reports import SUMMARY_NAME  # noqa: E402
from experiment.layout import RunLayout  # noqa: E402


def fold_run(sacred_args: list[str], fold: int) -> tuple[RunLayout, int]:
    """The run folder train.py uses for these arguments and fold, and the support slices test.py uses."""
    named_configs, updates = parse_command_line(sacred_args)
    config = composed_config(named_configs, {**updates, "eval_fold": fold})
    return RunLayout.of(config), config["n_support_slices"]


def run_script(script: str, sacred_args: list[str], fold: int) -> float:
    command = [sys.executable, str(REPO_ROOT / script), *sacred_args, f"eval_fold={fold}"]
    if "with" not in sacred_args:
        command.insert(2, "with")
    print(f"$ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO_ROOT, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="folds to run (default: 0..4)")
    parser.add_argument("sacred_args", nargs=argparse.REMAINDER, help="-- then train.py/test.py arguments")
    args = parser.parse_args()
    sacred_args = [arg for arg in args.sacred_args if arg != "--"]

    for fold in args.folds:
        layout, n_support_slices = fold_run(sacred_args, fold)
        summary = layout.evaluation(fold, n_support_slices=n_support_slices) / SUMMARY_NAME
        train_seconds = run_script("train.py", sacred_args, fold)
        if summary.is_file() and summary.stat().st_mtime > layout.last_checkpoint.stat().st_mtime:
            print(f"fold {fold}: evaluation up to date ({summary})")
            continue
        test_seconds = run_script("test.py", sacred_args, fold)
        print(f"fold {fold}: train {train_seconds:.0f} s, test {test_seconds:.0f} s -> {summary}", flush=True)


if __name__ == "__main__":
    main()
