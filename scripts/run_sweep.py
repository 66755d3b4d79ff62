"""Run a table (rows x folds x seeds) on every visible GPU, on CPU worker processes, or on Slurm.

    # rows x folds on the visible GPUs, one run per GPU at a time
    python scripts/run_sweep.py --row "setting1 psmnet" --row "setting1 alpnet" -- with chaost2
    # the same on 2 CPU processes with one torch thread each
    python scripts/run_sweep.py --cpu-workers 2 --threads-per-worker 1 --row psmnet -- with chaost2 cpu
    # on Slurm, one array task per run (needs `pip install submitit`)
    python scripts/run_sweep.py --slurm --partition gpu --time 1440 --table table.json
    # the runs and whether each is done, without running anything
    python scripts/run_sweep.py --dry-run --table table.json

A row is train.py's arguments (named configs and key=value); everything after `--` is added to
every row, and `eval_fold=<k>` to every run. A table file (JSON) may hold the same:
{"common": "chaost2 cpu", "rows": ["setting1 psmnet", "setting2 label_group=0 psmnet"],
"folds": [0, 1, 2, 3, 4], "seeds": [1234, 1235]}; command-line rows and arguments are added to
its own, and --folds / --seeds replace its. With seeds, each run is repeated per seed in
runs_root/seed<s>/. Runs start fold-major; a run whose evaluation is current is skipped, any
other resumes from its last checkpoint (experiment/sweep.py). Each run's output goes to
<run folder>/sweep.log; this script prints one line per finished run and exits with 1 if any failed.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from config import composed_config, parse_command_line  # noqa: E402  (after the path set-up)
from experiment.sweep import (SWEEP_LOG_NAME, cpu_workers, evaluation_is_current, gpu_workers,  # noqa: E402
                              run_on_workers, submit_with_submitit, table_jobs, visible_gpu_ids)
from utils.io import DataError, read_json  # noqa: E402

DEFAULT_FOLDS = [0, 1, 2, 3, 4]  # every cross-validation fold
SUBMITIT_FOLDER = "runs/submitit"  # submitit's job files and Slurm logs
SLURM_GPUS_PER_RUN = 1  # one run per GPU, as on local workers
SLURM_CPUS_PER_RUN = 8  # data loading and superpixels of one run
TABLE_KEYS = {"common", "rows", "folds", "seeds"}


def compose(arguments) -> dict:
    return composed_config(*parse_command_line(arguments))


def read_table(path: Path) -> dict:
    """A table file: {"common": str, "rows": [str], "folds": [int], "seeds": [int]}, each optional."""
    table = read_json(path)
    if not isinstance(table, dict) or not set(table) <= TABLE_KEYS or not isinstance(table.get("rows", []), list):
        raise DataError(f"{path}: expected a JSON object with keys among {sorted(TABLE_KEYS)} and a list of rows, "
                        f"e.g. {{\"common\": \"chaost2 cpu\", \"rows\": [\"setting1 psmnet\"], \"folds\": [0, 1]}}")
    return table


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    table = parser.add_argument_group("the table")
    table.add_argument("--row", action="append", default=[], help="train.py arguments of one row (repeatable)")
    table.add_argument("--table", type=Path, help="JSON table file (see above)")
    table.add_argument("--folds", type=int, nargs="+", help="folds (default: the table's, else 0..4)")
    table.add_argument("--seeds", type=int, nargs="+", help="seeds, each in runs_root/seed<s> (default: config seed)")
    table.add_argument("--dry-run", action="store_true", help="list the runs and whether each is done")
    local = parser.add_argument_group("local workers (default: one per visible GPU)")
    local.add_argument("--gpus", nargs="+", help="GPU ids to use (default: every visible GPU)")
    local.add_argument("--cpu-workers", type=int, help="run on this many CPU processes instead of GPUs")
    local.add_argument("--threads-per-worker", type=int, help="torch threads per CPU worker (default: cores / workers)")
    slurm = parser.add_argument_group("Slurm through submitit")
    slurm.add_argument("--slurm", action="store_true", help="submit one Slurm array task per run")
    slurm.add_argument("--partition", help="Slurm partition")
    slurm.add_argument("--time", type=int, help="time limit per run in minutes (required with --slurm)")
    slurm.add_argument("--gpus-per-run", type=int, default=SLURM_GPUS_PER_RUN, help="GPUs per run")
    slurm.add_argument("--cpus-per-run", type=int, default=SLURM_CPUS_PER_RUN, help="CPU cores per run")
    slurm.add_argument("--mem-gb", type=int, help="memory per run in GB (default: the partition's)")
    slurm.add_argument("--max-parallel", type=int, help="runs at once (Slurm array parallelism)")
    slurm.add_argument("--submitit-folder", type=Path, default=Path(SUBMITIT_FOLDER), help="submitit's files")
    slurm.add_argument("--submitit-cluster", default="slurm", choices=("slurm", "local"),
                       help="'local': submitit's local executor (tests), same jobs without Slurm")
    slurm.add_argument("--no-wait", action="store_true", help="submit and return without waiting for the runs")
    parser.add_argument("common", nargs=argparse.REMAINDER, help="-- then arguments added to every row")
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    table = read_table(args.table) if args.table else {}
    common = shlex.split(table.get("common", "")) + [arg for arg in args.common if arg != "--"]
    rows = [shlex.split(row) for row in table.get("rows", []) + args.row] or [[]]
    folds = args.folds or table.get("folds") or DEFAULT_FOLDS
    jobs = table_jobs(rows, folds, compose, seeds=args.seeds or table.get("seeds") or (), common=common)

    if args.dry_run:
        for job in jobs:
            print(f"{'done' if evaluation_is_current(job) else 'todo'}  {job.run_folder}  {shlex.join(job.arguments)}")
        return
    if args.slurm:
        sys.exit(submit(jobs, args))

    if args.cpu_workers:
        threads = args.threads_per_worker or max(1, (os.cpu_count() or 1) // args.cpu_workers)
        workers = cpu_workers(args.cpu_workers, threads)
    else:
        workers = gpu_workers(args.gpus or visible_gpu_ids())
    if not workers:
        sys.exit("no GPU visible: pass --cpu-workers N to run on CPU processes, or --slurm")
    print(f"{len(jobs)} runs on {len(workers)} workers; each run's output: <run folder>/{SWEEP_LOG_NAME}")
    failed = 0
    for job, outcome, error in tqdm(run_on_workers(jobs, workers), total=len(jobs), desc="runs", dynamic_ncols=True):
        if error is None:
            tqdm.write(f"{job.run_folder}: {outcome.describe()}")
        else:
            failed += 1
            tqdm.write(f"FAILED {job.run_folder}: {error} (see {job.run_folder / SWEEP_LOG_NAME})")
    sys.exit(1 if failed else 0)


def submit(jobs, args) -> int:
    """Submit the runs that are not done; wait for them unless --no-wait; the exit status."""
    if args.time is None:
        sys.exit("--slurm needs --time <minutes per run>")
    todo = [job for job in jobs if not evaluation_is_current(job)]
    parameters = {"timeout_min": args.time, "gpus_per_node": args.gpus_per_run, "cpus_per_task": args.cpus_per_run,
                  "name": "fsmis_sweep"}
    if args.submitit_cluster == "slurm":
        parameters.update({f"slurm_{key}": value for key, value in
                           {"partition": args.partition, "array_parallelism": args.max_parallel}.items() if value})
    if args.mem_gb:
        parameters["mem_gb"] = args.mem_gb
    environment = {"OMP_NUM_THREADS": str(args.cpus_per_run)}
    submitted = submit_with_submitit(todo, args.submitit_folder, args.submitit_cluster, parameters, environment)
    print(f"{len(jobs) - len(todo)} runs done already, {len(todo)} submitted (submitit files: {args.submitit_folder})")
    for job, task in zip(todo, submitted):
        print(f"job {task.job_id}: {job.run_folder}")
    if args.no_wait:
        return 0
    failed = 0
    for job, task in tqdm(list(zip(todo, submitted)), desc="runs", dynamic_ncols=True):
        try:
            tqdm.write(f"{job.run_folder}: {task.result().describe()}")
        except Exception as error:  # a failed task: report it and wait for the others
            failed += 1
            tqdm.write(f"FAILED {job.run_folder} (job {task.job_id}): {error} (see {job.run_folder / SWEEP_LOG_NAME})")
    return 1 if failed else 0


if __name__ == "__main__":
    main()
