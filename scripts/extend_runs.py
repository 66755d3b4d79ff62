"""Continue finished runs to more steps in new run folders, leaving the runs and their evaluations as they are.

    python scripts/extend_runs.py runs/CHAOST2_setting1_psmnet --suffix steps6000
    python scripts/run_sweep.py --row "setting1 psmnet model_label=psmnet_steps6000 n_steps=6000" \
        -- with chaost2 cpu ...                                     # resumes every copy from its step

Each `<prefix>_fold<k>` (of the folds asked for, default all) is copied to
`<prefix>_<suffix>_fold<k>`: its last checkpoint, initial weights and tensorboard curves, with
extended_from.json naming the run, step and checkpoint it started from (experiment/extension.py).
train.py then resumes the copy exactly as the run would have gone on, when given the printed
`model_label` (which names the new folders) and a larger `n_steps`. Run again, it copies only the
folds not extended yet; a target folder that exists but was not extended from its run is refused,
so that nothing is overwritten. '+'-joined rows (Setting-2 organ groups) extend each group.
A run that another process is writing (its .lock, utils/run_lock.py) is refused, and so is a run
that stopped before its n_steps unless --allow-unfinished.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from experiment.extension import ExtensionError, extend_run  # noqa: E402  (after the path set-up)
from experiment.layout import fold_runs  # noqa: E402
from utils.checkpoint import CheckpointError  # noqa: E402
from utils.run_lock import RunLockError  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="+", help="run-name prefixes (their folds are <prefix>_fold<k>; '+' joins groups)")
    parser.add_argument("--suffix", required=True, help="added before _fold<k> in the new run names, e.g. steps6000")
    parser.add_argument("--folds", type=int, nargs="+", help="only these folds (default: every fold found)")
    parser.add_argument("--allow-unfinished", action="store_true",
                        help="also extend runs whose last checkpoint stopped before their n_steps (interrupted, failed)")
    args = parser.parse_args()
    prefixes = [prefix for row in args.rows for prefix in row.split("+")]
    runs = []
    for prefix in prefixes:
        found = [run for fold, run in fold_runs(prefix).items() if args.folds is None or fold in args.folds]
        if not found:
            raise SystemExit(f"{prefix}: no run folders <prefix>_fold<k>" + (f" of folds {args.folds}" if args.folds else ""))
        runs += found
    for run in runs:
        try:
            extension = extend_run(run, args.suffix, allow_unfinished=args.allow_unfinished)
        except (ExtensionError, CheckpointError, RunLockError) as error:
            raise SystemExit(f"error: {error}") from None
        done = "copied" if extension.copied else "already extended from it, left as it is"
        print(f"{extension.source.folder} (step {extension.step}) -> {extension.target.folder} ({done}): "
              f"resume with model_label={extension.model_label} n_steps=<more than {extension.step}>")


if __name__ == "__main__":
    main()
