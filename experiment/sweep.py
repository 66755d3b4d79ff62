"""The runs of a table (rows x folds x seeds) and where they run: in turn, on local workers, on Slurm.

A run trains one fold with train.py and evaluates it with test.py, each in a fresh process, in the
run folder that train.py would use (experiment/layout.py). A run whose evaluation scored the run's
present last checkpoint (the SHA-256 that summary.json records is that of last.pth's content now:
timestamps decide nothing, `cp -p` or `rsync -a` keep old ones) at the run's n_steps, trained with
the run's config (bookkeeping aside), is done and skipped; any other run goes through train.py,
which resumes from the last checkpoint (returns at once when training is finished, refuses a
changed training config with an error naming the keys), then through test.py. A run folder that
another process holds the lock of (utils/run_lock.py) is not started: that run fails, with the
holder named, and the others go on.

Workers are environments a run is started in: one per GPU (`CUDA_VISIBLE_DEVICES=<id>`, one run
per GPU at a time), or N CPU processes (`OMP_NUM_THREADS` each, no GPU). Slurm jobs go through
submitit, an optional dependency imported only by `submit_with_submitit`.

Nothing here reads Sacred: the scripts compose each run's config (config.composed_config) and
pass a function that does it.
"""
from __future__ import annotations

import os
import queue
import shlex
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TextIO

import torch

from evaluation.reports import SUMMARY_NAME
from experiment.layout import RunLayout
from experiment.provenance import BOOKKEEPING_KEYS, TRAINING_CONFIG_KEY, evaluation_options, protocol_departures
from utils.io import file_sha256, read_json
from utils.run_lock import RunLockError, describe_holder, holder_is_stale, lock_holder

REPO_ROOT = Path(__file__).resolve().parents[1]
SWEEP_LOG_NAME = "sweep.log"  # in the run folder: the output of train.py and test.py of a run on a worker
SEED_FOLDER = "seed{seed}"  # runs_root/<this>/<run name> when a table lists seeds

Composer = Callable[[Sequence[str]], dict]  # train.py arguments -> the config train.py runs with


@dataclass(frozen=True)
class FoldJob:
    """One run of a table: train.py then test.py with these arguments (eval_fold included), and the
    config they compose."""

    arguments: tuple[str, ...]
    fold: int
    run_folder: Path
    config: dict


@dataclass(frozen=True)
class JobOutcome:
    """What a run did: trained and evaluated (seconds of each) or nothing (evaluation up to date)."""

    job: FoldJob
    train_seconds: float | None = None
    test_seconds: float | None = None

    @property
    def skipped(self) -> bool:
        return self.train_seconds is None

    def describe(self) -> str:
        if self.skipped:
            return "evaluation up to date"
        return f"train {self.train_seconds:.0f} s, test {self.test_seconds:.0f} s"


def table_jobs(rows: Sequence[Sequence[str]], folds: Sequence[int], compose: Composer,
               seeds: Sequence[int] = (), common: Sequence[str] = ()) -> list[FoldJob]:
    """The runs of a table, fold-major (a table stopped early has every row on the same folds).

    rows: train.py arguments per row (named configs and key=value), `common` added to each;
    seeds: when given, each run once per seed, with `seed=<s>` and its own runs_root/seed<s>.
    """
    jobs = []
    for fold in folds:
        for row in rows:
            arguments = [argument for argument in (*common, *row) if argument != "with"] + [f"eval_fold={fold}"]
            config = compose(arguments)
            if not seeds:
                jobs.append(FoldJob(tuple(arguments), fold, RunLayout.of(config).folder, config))
                continue
            for seed in seeds:
                runs_root = str(Path(config["runs_root"]) / SEED_FOLDER.format(seed=seed))
                seeded = {**config, "seed": seed, "runs_root": runs_root}
                jobs.append(FoldJob(tuple(arguments) + (f"seed={seed}", f"runs_root={runs_root}"), fold,
                                    RunLayout.of(seeded).folder, seeded))
    return jobs


def evaluation_is_current(job: FoldJob) -> bool:
    """The run's evaluation scored the content of its present last checkpoint (the checkpoint's
    SHA-256 recorded in summary.json), trained for the job's n_steps with the job's training config
    (keys other than bookkeeping). File times play no part."""
    layout = RunLayout(job.run_folder)
    departures = protocol_departures(evaluation_options(job.config, None), job.config, None)  # e.g. z_margin=3
    summary_path = layout.evaluation(job.fold, n_support_slices=job.config["n_support_slices"],
                                     departures=departures) / SUMMARY_NAME
    if not (summary_path.is_file() and layout.last_checkpoint.is_file()):
        return False
    summary = read_json(summary_path)
    if summary.get("checkpoint_sha256") != file_sha256(layout.last_checkpoint):  # trained on, or replaced, since
        return False
    trained = summary.get(TRAINING_CONFIG_KEY, {})
    changed = [key for key in trained.keys() | job.config.keys()
               if key not in BOOKKEEPING_KEYS and trained.get(key) != job.config.get(key)]
    return summary.get("step") == job.config["n_steps"] and not changed


def script_command(script: str, arguments: Sequence[str]) -> list[str]:
    return [sys.executable, str(REPO_ROOT / script), "with", *arguments]


def run_script(script: str, arguments: Sequence[str], environment: dict[str, str] | None = None,
               output: TextIO | None = None) -> float:
    """Run train.py or test.py to the end (CalledProcessError if it fails); its seconds.
    output: where the command line and the script's output go (None: this process's streams)."""
    command = script_command(script, arguments)
    print(f"$ {shlex.join(command)}", file=output or sys.stdout, flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO_ROOT, check=True, env={**os.environ, **(environment or {})},
                   stdout=output, stderr=subprocess.STDOUT if output else None)
    return time.perf_counter() - started


def run_fold_job(job: FoldJob, environment: dict[str, str] | None = None, log: Path | None = None) -> JobOutcome:
    """Train (resuming) and evaluate one run unless its evaluation is current.
    log: a file the scripts' output is appended to (None: this process's streams).
    Raises `RunLockError` naming the holder when another process is writing the run folder."""
    holder = lock_holder(job.run_folder)
    if holder is not None and not holder_is_stale(holder):
        raise RunLockError(f"{job.run_folder} is in use by {describe_holder(holder)}; the run was not started")
    if evaluation_is_current(job):
        return JobOutcome(job)
    if log is None:
        return _train_and_test(job, environment, None)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as output:
        return _train_and_test(job, environment, output)


def _train_and_test(job: FoldJob, environment: dict[str, str] | None, output: TextIO | None) -> JobOutcome:
    train_seconds = run_script("train.py", job.arguments, environment, output)
    test_seconds = run_script("test.py", job.arguments, environment, output)
    return JobOutcome(job, train_seconds, test_seconds)


# --- local workers ------------------------------------------------------------------------------


def gpu_workers(gpu_ids: Iterable[int | str]) -> list[dict[str, str]]:
    """One worker per GPU: runs started there see only that GPU (as cuda:0)."""
    return [{"CUDA_VISIBLE_DEVICES": str(gpu_id)} for gpu_id in gpu_ids]


def cpu_workers(count: int, threads_per_worker: int) -> list[dict[str, str]]:
    """`count` CPU workers with `threads_per_worker` torch threads each and no GPU."""
    if count < 1 or threads_per_worker < 1:
        raise ValueError(f"need at least one CPU worker with one thread, got {count} x {threads_per_worker}")
    return [{"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(threads_per_worker)} for _ in range(count)]


def visible_gpu_ids() -> list[str]:
    """The ids of the GPUs this process may use, as CUDA_VISIBLE_DEVICES names them for children."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [gpu_id.strip() for gpu_id in visible.split(",") if gpu_id.strip()][: torch.cuda.device_count()]
    return [str(index) for index in range(torch.cuda.device_count())]


def run_on_workers(jobs: Sequence[FoldJob], workers: Sequence[dict[str, str]]
                   ) -> Iterator[tuple[FoldJob, JobOutcome | None, BaseException | None]]:
    """Run the jobs in order, one per worker at a time; yield (job, outcome, error) as each ends.

    Each run's output goes to its run folder's sweep.log. A failed run (error set, outcome None)
    does not stop the others.
    """
    free_workers: queue.Queue[dict[str, str]] = queue.Queue()
    for worker in workers:
        free_workers.put(worker)

    def on_a_free_worker(job: FoldJob) -> JobOutcome:
        worker = free_workers.get()
        try:
            return run_fold_job(job, worker, job.run_folder / SWEEP_LOG_NAME)
        finally:
            free_workers.put(worker)

    with ThreadPoolExecutor(max_workers=len(workers)) as pool:
        futures: dict[Future, FoldJob] = {pool.submit(on_a_free_worker, job): job for job in jobs}
        for future in as_completed(futures):
            error = future.exception()
            yield futures[future], (None if error else future.result()), error


# --- Slurm (or submitit's local executor) ----------------------------------------------------------


def submit_with_submitit(jobs: Sequence[FoldJob], folder: Path, cluster: str, parameters: dict,
                         environment: dict[str, str] | None = None) -> list:
    """Submit each run as one task of a submitit job array; the submitit jobs, in the order of `jobs`.

    cluster: "slurm", or "local" (submitit's local executor, for tests); parameters: submitit's
    (timeout_min, gpus_per_node, cpus_per_task, mem_gb, slurm_partition, ...). The tasks import
    this module, so the repository goes on PYTHONPATH of the submitting environment, which
    sbatch and the local executor pass on.
    """
    import submitit  # optional dependency: only submission needs it (requirements.txt)

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(**parameters)
    with executor.batch():
        submitted = [executor.submit(run_fold_job, job, environment, job.run_folder / SWEEP_LOG_NAME) for job in jobs]
    return submitted

