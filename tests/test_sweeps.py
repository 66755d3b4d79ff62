"""scripts/run_sweep.py and experiment/sweep.py: tables of tiny demo runs on CPU workers and submitit."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import experiment.sweep as sweep
from config import composed_config
from conftest import command_line_arguments, tiny_config
from experiment.sweep import FoldJob, JobOutcome, cpu_workers, run_on_workers, table_jobs
from utils.checkpoint import load_checkpoint
from utils.io import file_sha256, read_json, write_json
from utils.run_lock import LOCK_NAME, RunLockError

REPO_ROOT = Path(__file__).resolve().parents[1]
ROWS = ("psmnet", "panet")
SWEEP_TIMEOUT_S = 900


def run_sweep(options: list[str], overrides: dict) -> str:
    command = [sys.executable, "scripts/run_sweep.py", *options, "--folds", "0", "--", "with", "demo", "cpu",
               *command_line_arguments(overrides)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, encoding="utf-8", timeout=SWEEP_TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def test_two_cpu_workers_run_a_table_skip_it_when_done_and_resume_it_when_extended(demo_root, tmp_path):
    options = ["--cpu-workers", "2", "--threads-per-worker", "1", *(f"--row={row}" for row in ROWS)]
    overrides = tiny_config(demo_root, tmp_path, n_steps=1, validate_every=0)
    first = run_sweep(options, overrides)
    folders = {row: tmp_path / f"DEMO_setting1_{row}_fold0" for row in ROWS}
    for row, folder in folders.items():
        assert f"{folder}: train" in first
        assert read_json(folder / "evaluation_fold0" / "summary.json")["step"] == 1
        assert "$ " in (folder / "sweep.log").read_text(encoding="utf-8") and "test.py" in (folder / "sweep.log").read_text(encoding="utf-8")

    logs_before = {row: (folder / "sweep.log").read_text(encoding="utf-8") for row, folder in folders.items()}
    second = run_sweep(options, overrides)
    for row, folder in folders.items():
        assert f"{folder}: evaluation up to date" in second
        assert (folder / "sweep.log").read_text(encoding="utf-8") == logs_before[row]  # nothing was started

    third = run_sweep(options, {**overrides, "n_steps": 2})  # more steps: the runs resume from step 1
    for row, folder in folders.items():
        assert f"{folder}: train" in third
        assert "resuming" in (folder / "sweep.log").read_text(encoding="utf-8").removeprefix(logs_before[row])
        assert load_checkpoint(folder / "checkpoints" / "last.pth")["step"] == 2
        assert read_json(folder / "evaluation_fold0" / "summary.json")["step"] == 2


def test_submitit_local_executor_runs_a_table_then_submits_nothing_when_done(demo_root, tmp_path):
    pytest.importorskip("submitit")
    options = ["--slurm", "--submitit-cluster", "local", "--submitit-folder", str(tmp_path / "submitit"),
               "--time", "10", "--gpus-per-run", "0", "--cpus-per-run", "1", "--row", "alpnet"]
    overrides = tiny_config(demo_root, tmp_path / "runs", n_steps=1, validate_every=0)
    first = run_sweep(options, overrides)
    folder = tmp_path / "runs" / "DEMO_setting1_alpnet_fold0"
    assert "0 runs done already, 1 submitted" in first and f"{folder}: train" in first
    assert read_json(folder / "evaluation_fold0" / "summary.json")["step"] == 1
    second = run_sweep(options, overrides)
    assert "1 runs done already, 0 submitted" in second


def test_table_runs_are_fold_major_and_seeds_get_their_own_runs_root():
    composed = []

    def compose(arguments):
        composed.append(arguments)
        updates = dict(argument.split("=", 1) for argument in arguments if "=" in argument)
        return {"runs_root": "runs", "n_steps": 7, "run_name": f"{arguments[1]}_fold{updates['eval_fold']}"}

    jobs = table_jobs([["psmnet"], ["alpnet"]], folds=[3, 4], compose=compose, seeds=[1, 2], common=["with", "demo"])
    assert [job.run_folder.as_posix() for job in jobs] == [
        "runs/seed1/psmnet_fold3", "runs/seed2/psmnet_fold3", "runs/seed1/alpnet_fold3", "runs/seed2/alpnet_fold3",
        "runs/seed1/psmnet_fold4", "runs/seed2/psmnet_fold4", "runs/seed1/alpnet_fold4", "runs/seed2/alpnet_fold4"]
    assert jobs[1].arguments == ("demo", "psmnet", "eval_fold=3", "seed=2", "runs_root=runs/seed2")
    assert composed[0] == ["demo", "psmnet", "eval_fold=3"]
    assert jobs[1].config == {"runs_root": "runs/seed2", "n_steps": 7, "run_name": "psmnet_fold3", "seed": 2}


def test_each_worker_runs_one_job_at_a_time_and_every_worker_is_used(monkeypatch, tmp_path):
    running: dict[str, int] = {}
    most_at_once: dict[str, int] = {}
    lock = threading.Lock()

    def fake_run(job, environment, log):
        worker = environment["WORKER"]
        with lock:
            running[worker] = running.get(worker, 0) + 1
            most_at_once[worker] = max(most_at_once.get(worker, 0), running[worker])
        time.sleep(0.05)
        with lock:
            running[worker] -= 1
        return JobOutcome(job, 1.0, 2.0)

    monkeypatch.setattr(sweep, "run_fold_job", fake_run)
    workers = [{**environment, "WORKER": str(index)} for index, environment in enumerate(cpu_workers(2, 1))]
    jobs = [FoldJob(("demo",), 0, tmp_path / f"run{index}", {"n_steps": 1}) for index in range(6)]
    results = list(run_on_workers(jobs, workers))
    assert sorted(job.run_folder.name for job, _, _ in results) == sorted(job.run_folder.name for job in jobs)
    assert all(error is None and outcome.describe() == "train 1 s, test 2 s" for _, outcome, error in results)
    assert most_at_once == {"0": 1, "1": 1}
    assert workers[0]["OMP_NUM_THREADS"] == "1" and workers[0]["CUDA_VISIBLE_DEVICES"] == ""


def test_an_evaluation_is_current_only_if_it_scored_the_present_checkpoint_of_the_same_training(tmp_path):
    # a job carries the composed config of its arguments (table_jobs), every key of it
    config = composed_config(["demo"], {"lr": 0.01, "n_steps": 4, "seed": 1, "eval_fold": 0, "log_every": 5,
                                        "runs_root": "runs", "n_support_slices": 1})
    job = FoldJob(("demo",), 0, tmp_path, config)
    checkpoint = tmp_path / "checkpoints" / "last.pth"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"weights")
    summary = tmp_path / "evaluation_fold0" / "summary.json"
    assert not sweep.evaluation_is_current(job)  # never evaluated

    def evaluated(step=4, **training):
        write_json({"step": step, "checkpoint_sha256": file_sha256(checkpoint),
                    "training_config": {**config, **training}}, summary)

    evaluated(log_every=50, runs_root="elsewhere")  # bookkeeping keys may differ
    assert sweep.evaluation_is_current(job)
    # learning_rates only chooses lr, which is compared: runs of versions without it stay current
    current_job = FoldJob(("demo",), 0, tmp_path, {**config, "learning_rates": {"sgd": 0.01, "adamw": 1e-4}})
    assert sweep.evaluation_is_current(current_job)
    with_larger_support = FoldJob(("demo",), 0, tmp_path, {**config, "n_support_slices": 4})
    assert not sweep.evaluation_is_current(with_larger_support)  # its own folder, evaluation_fold0_support4
    evaluated(lr=0.5)  # the row's config changed since: train.py must say so
    assert not sweep.evaluation_is_current(job)
    evaluated(step=2, n_steps=2)  # n_steps raised since: the run resumes
    assert not sweep.evaluation_is_current(job)
    evaluated()
    os.utime(checkpoint, (summary.stat().st_mtime + 1,) * 2)  # touched (cp, rsync): its content is what was scored
    assert sweep.evaluation_is_current(job)
    stamp = summary.stat().st_mtime_ns - 10**9
    checkpoint.write_bytes(b"weights trained further")  # trained on after the evaluation...
    os.utime(checkpoint, ns=(stamp, stamp))  # ...and copied back with an older time (cp -p)
    assert not sweep.evaluation_is_current(job)


def test_a_run_another_process_writes_is_not_started(tmp_path, monkeypatch):
    run_folder = tmp_path / "DEMO_setting1_psmnet_fold0"
    run_folder.mkdir()
    write_json({"pid": 4242, "host": "gpu-node-7", "purpose": "train.py", "started": "2024-01-01T00:00:00"},
               run_folder / LOCK_NAME)
    monkeypatch.setattr(sweep, "run_script", lambda *args, **kwargs: pytest.fail("a locked run was started"))
    job = FoldJob(("demo",), 0, run_folder, {"n_steps": 1, "n_support_slices": 1})
    with pytest.raises(RunLockError, match=r"DEMO_setting1_psmnet_fold0 is in use by pid 4242 on gpu-node-7 \(train\.py"):
        sweep.run_fold_job(job, log=run_folder / sweep.SWEEP_LOG_NAME)
    assert not (run_folder / sweep.SWEEP_LOG_NAME).exists()
