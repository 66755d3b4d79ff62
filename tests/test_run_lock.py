"""One writer per run folder: `utils.run_lock.RunLock` between real processes."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train  # noqa: F401  (registers the "train" command)
from config import ex
from conftest import tiny_config
from experiment.extension import ExtensionError, extend_run
from experiment.layout import RunLayout
from utils.checkpoint import save_checkpoint
from utils.run_lock import LOCK_NAME, RunLock, RunLockError, lock_holder

REPO_ROOT = Path(__file__).resolve().parents[1]
HOLD_UNTIL_STDIN_CLOSES = """
import sys
from utils.run_lock import RunLock
with RunLock(sys.argv[1], sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.read()
"""
TRY_ONCE = """
import sys, time
from utils.run_lock import RunLock, RunLockError
try:
    with RunLock(sys.argv[1], "contender"):
        print("acquired", flush=True)
        time.sleep(1.0)
except RunLockError:
    print("refused", flush=True)
"""


def start_holder(folder: Path, purpose: str) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_UNTIL_STDIN_CLOSES, str(folder), purpose], cwd=REPO_ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_holder_is_refused_naming_the_first_and_the_lock_is_released_on_exit(tmp_path):
    run = tmp_path / "run"
    holder = start_holder(run, "train.py")
    try:
        record = json.loads((run / LOCK_NAME).read_text())
        assert record["pid"] == holder.pid and record["host"] == socket.gethostname() and record["purpose"] == "train.py"
        with pytest.raises(RunLockError, match=rf"in use by pid {holder.pid} on {socket.gethostname()} \(train\.py"):
            with RunLock(run, "test.py"):
                pass
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    assert not (run / LOCK_NAME).exists()
    with RunLock(run, "test.py"):
        assert lock_holder(run)["pid"] == os.getpid()
    assert lock_holder(run) is None


def test_of_processes_started_together_exactly_one_holds_the_lock(tmp_path):
    contenders = [subprocess.Popen([sys.executable, "-c", TRY_ONCE, str(tmp_path / "run")], cwd=REPO_ROOT,
                                   stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outcomes = sorted(contender.communicate(timeout=120)[0].strip() for contender in contenders)
    assert outcomes == ["acquired", "refused", "refused"]


def test_the_lock_of_a_killed_holder_is_taken_over_with_a_warning(tmp_path, caplog):
    run = tmp_path / "run"
    holder = start_holder(run, "train.py")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert lock_holder(run)["pid"] == holder.pid  # left behind
    with caplog.at_level(logging.WARNING, logger="utils.run_lock"):
        with RunLock(run, "test.py"):
            assert lock_holder(run)["pid"] == os.getpid()
    assert f"taking over the lock left by pid {holder.pid}" in caplog.text
    assert not list(run.iterdir())  # nothing left: neither the lock nor the stale one moved aside


def test_a_lock_held_from_another_host_is_never_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(json.dumps({"pid": 999999999, "host": "gpu-node-7", "purpose": "train.py",
                                             "started": "2024-01-01T00:00:00"}))
    with pytest.raises(RunLockError, match=r"pid 999999999 on gpu-node-7 \(train\.py"):
        RunLock(run, "extend_runs.py").acquire()
    assert lock_holder(run)["host"] == "gpu-node-7"


def fake_run(folder: Path, step: int, n_steps: int) -> RunLayout:
    """A run folder whose last checkpoint (a tiny model) is at `step` of `n_steps`."""
    run = RunLayout(folder)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(run.last_checkpoint, model=model, optimizer=optimizer,
                    scheduler=torch.optim.lr_scheduler.StepLR(optimizer, step_size=10), step=step,
                    config={"n_steps": n_steps, "model": {"name": "psmnet"}, "model_label": None})
    return run


def test_extending_a_run_that_another_process_writes_is_refused(tmp_path):
    source = fake_run(tmp_path / "DEMO_setting1_psmnet_fold0", step=4, n_steps=4)
    holder = start_holder(source.folder, "train.py")
    try:
        with pytest.raises(RunLockError, match=rf"in use by pid {holder.pid} .*\(train\.py"):
            extend_run(source, "longer")
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert not (tmp_path / "DEMO_setting1_psmnet_longer_fold0").exists()
    extension = extend_run(source, "longer")
    assert extension.copied and lock_holder(source.folder) is None and lock_holder(extension.target.folder) is None


def test_an_unfinished_run_is_extended_only_when_allowed(tmp_path):
    source = fake_run(tmp_path / "DEMO_setting1_psmnet_fold0", step=2, n_steps=4)
    with pytest.raises(ExtensionError, match=r"last\.pth: the run stopped at step 2 of its n_steps=4"):
        extend_run(source, "longer")
    assert not (tmp_path / "DEMO_setting1_psmnet_longer_fold0").exists()
    script = [sys.executable, str(REPO_ROOT / "scripts" / "extend_runs.py"), str(tmp_path / "DEMO_setting1_psmnet"),
              "--suffix", "longer"]
    refused = subprocess.run(script, capture_output=True, text=True)
    assert refused.returncode != 0 and "--allow-unfinished" in refused.stderr
    allowed = subprocess.run(script + ["--allow-unfinished"], capture_output=True, text=True, check=True)
    assert "(step 2)" in allowed.stdout and "(copied)" in allowed.stdout


def test_train_py_refuses_a_run_folder_another_process_writes_and_leaves_it_untouched(demo_root, tmp_path):
    """train.py takes the run folder's lock before anything is written: a second training of the same
    run (e.g. with another lr) is refused naming the holder, and writes no checkpoint."""
    run = tmp_path / "runs" / "DEMO_setting1_psmnet_fold0"
    holder = start_holder(run, "train.py")
    try:
        with pytest.raises(RunLockError, match=rf"in use by pid {holder.pid}"):
            ex.run("train", config_updates=tiny_config(demo_root, tmp_path / "runs", lr=0.02),
                   named_configs=["demo", "cpu"], options={"--loglevel": "ERROR"})
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    assert not (run / "checkpoints").exists()
