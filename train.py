"""Episodic training of a few-shot segmenter (docs/PROTOCOL.md, "Training"; docs/METHOD.md).

    python train.py with demo cpu                       # minutes on a laptop CPU
    python train.py with chaost2 setting2 label_group=1 psmnet eval_fold=3
    torchrun --standalone --nproc_per_node=4 train.py with chaost2 psmnet batch_size=4   # data-parallel

The loop reads top to bottom: build (model, data, optimiser), resume, then per step: forward,
loss, update, log, validate, checkpoint. The fold's data, episodes and model come from
experiment/assembly.py, the run folder (checkpoints, tensorboard, Sacred record) from
experiment/layout.py, the losses from experiment/training_step.py. Under torchrun, each process
trains on its share of each step's episodes and rank 0 alone logs, validates and writes
checkpoints (utils/distributed.py).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from config import ex
from evaluation.scoring import evaluate_episodes
from experiment.assembly import (build_model_from_config, ensure_superpixels, fold_data, training_dataset,
                                 upgrade_saved_config, uses_superpixels, validation_episodes)
from experiment.config_checks import check_training_config
from experiment.curves import LEARNING_RATE_TAG, TOTAL_LOSS_TAG, loss_tag, validation_dice_tag
from experiment.layout import RunLayout
from experiment.optimisation import build_optimizer, build_scheduler
from experiment.provenance import BOOKKEEPING_KEYS
from experiment.training_step import episode_losses
from utils.checkpoint import load_checkpoint, load_model_weights, restore_rng_states, save_checkpoint
from utils.distributed import (Ranks, data_parallel, join_process_group, launched_ranks, main_rank_first,
                               mean_over_ranks)
from utils.io import remove_stale_temporary_files
from utils.runtime import check_precision, select_device
from utils.seeding import make_generator, seed_everything, worker_init_fn
from utils.tensorboard_panels import episode_panel, test_episode_panel

logger = logging.getLogger(__name__)

# Config keys that may differ between an interrupted run and its resumption: bookkeeping (runs_root
# and run_name too: a run folder copied or moved elsewhere, e.g. to extend a finished run, resumes)
# and the number of steps.
RESUMABLE_KEYS = BOOKKEEPING_KEYS | {"n_steps"}
VALIDATION_METRICS = ("dice",)  # validation logs Dice only: surface distances would slow training down


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@ex.main
def train(_config, _run, model_options):  # model_options captured so `model_options.x=...` may add keys
    config = dict(_config)
    check_training_config(config)  # a value out of range stops here, not at the first validation or checkpoint
    run = RunLayout.of(config)
    seed_everything(config["seed"])  # the same on every rank: the same initial weights
    ranks = launched_ranks()
    device = join_process_group(ranks, select_device(config["device"]))
    precision = check_precision(config["precision"])

    # --- model first: missing pretrained weights stop the run before minutes of data preparation ---
    model = build_model_from_config(config).to(device)

    # --- data: the fold's training episodes and validation episodes -----------------------------
    data = fold_data(config)
    if uses_superpixels(config):
        with main_rank_first(ranks), tqdm(total=len(data.spec.scan_ids), desc=f"superpixels of {data.spec.name}",
                                          dynamic_ncols=True, disable=not ranks.is_main) as bar:
            ensure_superpixels(config, data, on_scan_done=lambda scan_id: bar.update())
    episodes = training_dataset(config, data)
    validation = validation_episodes(config, data)

    # --- optimiser, schedule ------------------------------------------------------------------------
    optimizer = build_optimizer(config, model.parameters())
    scheduler = build_scheduler(config, optimizer)
    class_weights = torch.tensor(config["class_weights"], dtype=torch.float32, device=device)

    # --- resume (a save killed midway left a temporary file: it goes) -----------------------------
    if ranks.is_main:
        remove_stale_temporary_files(run.last_checkpoint.parent)
    start_step = 0
    if config["resume"] and run.last_checkpoint.is_file():
        state = load_checkpoint(run.last_checkpoint, map_location=device)
        check_resumable(upgrade_saved_config(state["config"]), config, run.last_checkpoint)
        load_model_weights(model, state["model"], run.last_checkpoint)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng_states(state["rng"])
        start_step = state["step"]
        logger.info("resuming %s from step %d", run.last_checkpoint, start_step)
    elif ranks.is_main:
        save_checkpoint(run.initial_checkpoint, model=model, optimizer=optimizer, scheduler=scheduler, step=0,
                        config=config)
    if start_step >= config["n_steps"]:
        logger.info("%s already finished %d steps", run.folder, start_step)
        return {"step": start_step}

    # events after the checkpoint's step came from the interrupted run and are dropped; those at
    # its step (validation Dice, losses) belong to the weights being resumed and stay
    writer = SummaryWriter(log_dir=str(run.tensorboard), purge_step=start_step + 1) if ranks.is_main else None
    batches = episode_batches(episodes, config["batch_size"], start_step, config["num_workers"], config["seed"], ranks)
    network = data_parallel(model, ranks, device)  # DistributedDataParallel under torchrun, else the model
    network.train()
    progress = tqdm(range(start_step, config["n_steps"]), initial=start_step, total=config["n_steps"],
                    desc=f"train {run.folder.name}", dynamic_ncols=True, disable=not ranks.is_main)
    for step in progress:
        # --- forward and loss (of this rank's share of the step's episodes) ---------------------------
        batch = {key: value.to(device, non_blocking=True) for key, value in next(batches).items()}
        output, losses = episode_losses(network, batch, config, class_weights, device, precision)
        loss = sum(losses.values())
        step_losses = mean_over_ranks(losses, ranks)  # the step's losses, the same on every rank
        step_loss = sum(step_losses.values())
        if not math.isfinite(step_loss):
            raise TrainingDiverged(f"step {step + 1}: loss is {step_loss} ({step_losses}); "
                                   f"lower lr or check the data; last checkpoint: {run.last_checkpoint}")

        # --- update ----------------------------------------------------------------------------------
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        done = step + 1

        if not ranks.is_main:  # rank 0 alone logs, validates and saves
            continue

        # --- log ---------------------------------------------------------------------------------------
        if done % config["log_every"] == 0 or done == config["n_steps"]:
            for name, value in step_losses.items():
                writer.add_scalar(loss_tag(name), value, done)
            writer.add_scalar(TOTAL_LOSS_TAG, step_loss, done)
            writer.add_scalar(LEARNING_RATE_TAG, scheduler.get_last_lr()[0], done)
            progress.set_postfix(loss=f"{step_loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")

        # --- validate ----------------------------------------------------------------------------
        if config["validate_every"] and (done % config["validate_every"] == 0 or done == config["n_steps"]):
            evaluation = evaluate_episodes(model, validation, device, precision, config["eval_batch_size"],
                                           VALIDATION_METRICS)
            for organ, dice in evaluation.organ_means("dice").items():
                writer.add_scalar(validation_dice_tag(organ), dice, done)
            first = validation[0]
            writer.add_image("validation/support_query_prediction_truth",
                             test_episode_panel(first, evaluation.predictions[(first.label, first.query_scan_id)]), done)
            writer.add_image("train/support_query_prediction_truth",
                             episode_panel_from_batch(batch, output.logits), done)

        # --- checkpoint ------------------------------------------------------------------------------
        if done % config["checkpoint_every"] == 0 or done == config["n_steps"]:
            save_checkpoint(run.last_checkpoint, model=model, optimizer=optimizer, scheduler=scheduler, step=done,
                            config=config)
    if ranks.is_main:
        writer.close()
    _run.info["checkpoint"] = str(run.last_checkpoint)
    return {"step": config["n_steps"], "final_loss": step_loss}


def episode_batches(dataset, batch_size: int, start_step: int, num_workers: int, seed: int, ranks: Ranks = Ranks()):
    """Endless stacked episode batches of this rank, starting at `start_step` as an uninterrupted run would.

    Episodes depend only on (seed, epoch, index), so a resumed run sets the epoch and skips to the
    index where the interrupted run stopped instead of replaying the loader, and rank r of K builds
    only its share of each step's `batch_size` episodes: every K-th, from the r-th.
    """
    steps_per_epoch = len(dataset) // batch_size
    epoch, step_in_epoch = divmod(start_step, steps_per_epoch)
    while True:
        dataset.set_epoch(epoch)
        indices = range(step_in_epoch * batch_size + ranks.rank, steps_per_epoch * batch_size, ranks.world_size)
        loader = DataLoader(dataset, batch_size=ranks.share_of(batch_size), sampler=indices, num_workers=num_workers,
                            worker_init_fn=worker_init_fn, generator=make_generator(seed + epoch), drop_last=True)
        yield from loader
        epoch, step_in_epoch = epoch + 1, 0


def episode_panel_from_batch(batch: dict[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
    """Image panel of the first training episode of a batch (first support shot)."""
    return episode_panel(
        support_image=batch["support_images"][0, 0],
        support_mask=batch["support_masks"][0, 0],
        query_image=batch["query_images"][0],
        prediction=logits[0].argmax(0),
        truth=batch["query_labels"][0],
    )


def check_resumable(saved: dict, current: dict, path: Path) -> None:
    """Refuse to resume a run whose training config differs: it would silently mix two experiments."""
    changed = sorted(key for key in saved.keys() | current.keys()
                     if key not in RESUMABLE_KEYS and saved.get(key) != current.get(key))
    if changed:
        details = ", ".join(f"{key}: {saved.get(key)!r} -> {current.get(key)!r}" for key in changed)
        raise ValueError(f"{path}: cannot resume, the run was trained with another config ({details}); "
                         f"pass resume=False to start over or run_name=<new name>")


if __name__ == "__main__":
    ex.run_commandline()
