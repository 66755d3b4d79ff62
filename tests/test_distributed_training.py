"""train.py under torchrun: two gloo processes on CPU train as one process on the same global batch.

BatchNorm normalises with the statistics of each rank's own episodes (utils/distributed.py), so
the one-process reference runs the two ranks' shares of each step one after another and averages
their gradients: what data parallelism should equal. Running statistics are rank 0's alone in the
checkpoint, so the comparison is of the trained parameters.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

import train  # noqa: F401  (registers the "train" command)
from experiment import tracks
from config import ex
from conftest import command_line_arguments, tiny_config
from experiment.assembly import build_model_from_config, fold_data, training_dataset
from experiment.optimisation import build_optimizer, build_scheduler
from experiment.training_step import episode_losses
from utils.checkpoint import load_checkpoint
from utils.distributed import Ranks
from utils.io import read_json

REPO_ROOT = Path(__file__).resolve().parents[1]
N_PROCESSES = 2
GLOBAL_BATCH = 4  # two episodes per process and step
STEPS_BEFORE_INTERRUPTION, N_STEPS = 2, 3
TORCHRUN_TIMEOUT_S = 600
WEIGHT_TOLERANCE = 1e-5  # float32 sums of gradients in another order
# Torch threads of each rank, and of the one-process reference: a reference at the machine's 2
# threads ended 1.5e-3 away from the ranks' weights after three steps on a 2-core AMD EPYC (AVX2)
# machine (kernels that split work over threads compute in another order), within 1e-5 at one thread.
THREADS_PER_PROCESS = 1


def torchrun_train(overrides: dict) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={N_PROCESSES}",
               "train.py", "with", "demo", "cpu", *command_line_arguments(overrides)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, encoding="utf-8", timeout=TORCHRUN_TIMEOUT_S,
                            env={**os.environ, "OMP_NUM_THREADS": str(THREADS_PER_PROCESS)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


def reference_parameters(config: dict, initial: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One process with the ranks' thread count: per step, each rank's share of the global batch in
    turn, gradients averaged."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS_PER_PROCESS)
    try:
        return _reference_training(config, initial)
    finally:
        torch.set_num_threads(threads)


def _reference_training(config: dict, initial: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model = build_model_from_config(config)
    model.load_state_dict(initial)
    model.train()
    optimizer = build_optimizer(config, model.parameters())
    scheduler = build_scheduler(config, optimizer)
    class_weights = torch.tensor(config["class_weights"])
    episodes = training_dataset(config, fold_data(config))
    shares = [tracks.episode_batches(episodes, GLOBAL_BATCH, 0, 0, config["seed"], Ranks(rank, N_PROCESSES))
              for rank in range(N_PROCESSES)]
    for _ in range(config["n_steps"]):
        optimizer.zero_grad()
        for share in shares:
            _, losses = episode_losses(model, next(share), config, class_weights, torch.device("cpu"), "fp32")
            (sum(losses.values()) / N_PROCESSES).backward()
        optimizer.step()
        scheduler.step()
    return dict(model.named_parameters())


def test_two_gloo_processes_resumed_midway_train_as_one_process_on_the_same_global_batch(demo_root, tmp_path):
    overrides = tiny_config(demo_root, tmp_path, batch_size=GLOBAL_BATCH, validate_every=0, log_every=1,
                            checkpoint_every=1)
    torchrun_train({**overrides, "n_steps": STEPS_BEFORE_INTERRUPTION})
    torchrun_train({**overrides, "n_steps": N_STEPS})  # resumes from the checkpoint of step 2

    run_dir = tmp_path / "DEMO_setting1_psmnet_fold0"
    trained = load_checkpoint(run_dir / "checkpoints" / "last.pth")
    assert trained["step"] == N_STEPS
    assert not any(name.startswith("module.") for name in trained["model"])  # saved without the DDP wrapper
    assert sorted(path.name for path in (run_dir / "sacred").iterdir() if path.name.isdigit()) == ["1", "2"]  # rank 0's
    assert read_json(run_dir / "sacred" / "2" / "run.json")["result"]["step"] == N_STEPS

    config = ex.run("resolved_config", config_updates={**overrides, "n_steps": N_STEPS}, named_configs=["demo", "cpu"],
                    options={"--loglevel": "ERROR"}).result
    initial = load_checkpoint(run_dir / "checkpoints" / "initial.pth")["model"]
    expected = reference_parameters(config, initial)
    moved = max((parameter - initial[name]).abs().max().item() for name, parameter in expected.items())
    assert moved > 100 * WEIGHT_TOLERANCE  # three steps moved the weights far beyond the tolerance
    for name, parameter in expected.items():
        torch.testing.assert_close(trained["model"][name], parameter.detach(), atol=WEIGHT_TOLERANCE, rtol=0,
                                   msg=lambda text, name=name: f"{name}: {text}")


def test_a_rank_builds_every_kth_episode_of_each_step_from_where_a_resumed_run_stopped():
    class Episodes(list):  # a stand-in for an episode dataset: episode i of epoch e is the number 100 e + i
        def set_epoch(self, epoch):
            self.epoch = epoch

        def __getitem__(self, index):
            return torch.tensor(100 * self.epoch + index)

    episodes = Episodes(range(12))
    shares = [tracks.episode_batches(episodes, 4, 1, 0, 0, Ranks(rank, 2)) for rank in range(2)]
    steps = [[next(share).tolist() for share in shares] for _ in range(3)]
    # 3 steps of 4 per epoch; starting at step 1: episodes 4..7, 8..11, then epoch 1's 0..3
    assert steps == [[[4, 6], [5, 7]], [[8, 10], [9, 11]], [[100, 102], [101, 103]]]
