"""Train and test every cross-validation fold of one experiment, resuming what is already done.

    python scripts/run_folds.py --folds 0 1 2 3 4 -- with chaost2 setting1 psmnet cpu

Everything after `--` is passed to train.py and test.py (with `eval_fold=<k>` added). A fold whose
training finished is not trained again (train.py resumes from its last checkpoint and stops at
once); a fold whose evaluation is newer than its checkpoint is not evaluated again. Summarise the
folds with scripts/summarize_folds.py.
"""
from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from config import ex  # noqa: E402  (after the path set-up)
from utils.checkpoint import LAST_CHECKPOINT  # noqa: E402


def fold_run_directory(sacred_args: list[str], fold: int) -> Path:
    """The run directory train.py uses for these arguments and fold."""
    named_configs = [arg for arg in sacred_args if "=" not in arg and arg != "with"]
    updates = {key: parse_value(value) for key, value in (arg.split("=", 1) for arg in sacred_args if "=" in arg)}
    updates["eval_fold"] = fold
    return Path(ex.run("run_directory_of", config_updates=updates, named_configs=named_configs,
                       options={"--force": True, "--loglevel": "ERROR"}).result)


def parse_value(text: str):
    """A command-line value as Sacred reads it: a Python literal, else a plain string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def run(script: str, sacred_args: list[str], fold: int) -> float:
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
        run_dir = fold_run_directory(sacred_args, fold)
        checkpoint = run_dir / LAST_CHECKPOINT
        summary = run_dir / f"evaluation_fold{fold}" / "summary.json"
        train_seconds = run("train.py", sacred_args, fold)
        if summary.is_file() and summary.stat().st_mtime > checkpoint.stat().st_mtime:
            print(f"fold {fold}: evaluation up to date ({summary})")
            continue
        test_seconds = run("test.py", sacred_args, fold)
        print(f"fold {fold}: train {train_seconds:.0f} s, test {test_seconds:.0f} s -> {summary}", flush=True)


if __name__ == "__main__":
    main()
