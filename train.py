"""Episodic training of a few-shot segmenter (PROTOCOL.md "Training").

    python train.py with demo cpu                       # minutes on a laptop CPU
    python train.py with chaost2 setting2 label_group=1 psmnet eval_fold=3

The loop reads top to bottom: build (data, model, optimiser), resume, then per step: forward,
loss, backward, log, validate, checkpoint. Everything a run produces lives in
runs/<run_name>/: the Sacred record (config, log, result), tensorboard events and checkpoints.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from config import ex, run_directory
from dataloaders.augmentation import AugmentationParams
from dataloaders.experiment_data import dataset_directories, test_episodes, tested_labels, training_episodes
from dataloaders.folds import FoldSplit, fold_split
from dataloaders.derived_files import ensure_derived_files
from dataloaders.specs import get_spec
from dataloaders.volumes import load_scans
from models import build_model
from models.losses import alignment_loss, soft_dice_loss, weighted_cross_entropy
from utils.checkpoint import INITIAL_CHECKPOINT, LAST_CHECKPOINT, load_checkpoint, load_model_weights, restore_rng_states, save_checkpoint
from utils.evaluation import evaluate_episodes, organ_means
from utils.runtime import autocast, check_precision, select_device
from utils.seeding import make_generator, seed_everything, worker_init_fn
from utils.tensorboard_panels import episode_panel, test_episode_panel

logger = logging.getLogger(__name__)

EPISODES_PER_EPOCH = 1000  # episodes are reseeded per epoch; resuming restarts mid-epoch exactly
# Config keys that may differ between an interrupted run and its resumption (runs_root and
# run_name too: a run folder copied or moved elsewhere, e.g. to extend a finished run, resumes).
RESUMABLE_KEYS = {"resume", "n_steps", "num_workers", "log_every", "checkpoint_every", "validate_every", "device",
                  "eval_batch_size", "checkpoint", "save_predictions", "save_overlays", "data_root", "derived_root",
                  "runs_root", "run_name"}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@ex.main
def train(_config, _run, model_options):  # model_options captured so `model_options.x=...` may add keys
    config = dict(_config)
    run_dir = run_directory(config)
    checkpoint_path = run_dir / LAST_CHECKPOINT
    seed_everything(config["seed"])
    device = select_device(config["device"])
    precision = check_precision(config["precision"])

    # --- model first: missing pretrained weights stop the run before minutes of data preparation ---
    model = build_model(**config["model"], **model_options).to(device)

    # --- data: the fold's training scans, episodes, and validation episodes ---------------------
    spec = get_spec(config["dataset"])
    dataset_dir, derived_dir = dataset_directories(config["data_root"], config["derived_root"], spec)
    split = fold_split(spec, config["eval_fold"], config["n_shots"], config["support_choice"])
    use_superpixels = config["training_mode"] == "superpixel"
    if use_superpixels:
        with tqdm(total=len(spec.scan_ids), desc=f"superpixels of {spec.name}", dynamic_ncols=True) as bar:
            ensure_derived_files(dataset_dir, spec, derived_dir, method=config["superpixel_method"],
                                 workers=os.cpu_count() or 1, on_scan_done=lambda scan_id: bar.update())
    train_scans = load_scans(dataset_dir, spec, split.train_ids, derived_dir=derived_dir,
                             with_superpixels=use_superpixels, image_size=config["image_size"])
    episodes = training_episodes(
        mode=config["training_mode"], scans=list(train_scans.values()), spec=spec, setting=config["setting"],
        label_group=config["label_group"], exclusion_rule=config["exclusion_rule"], n_shots=config["n_shots"],
        episodes_per_epoch=EPISODES_PER_EPOCH * config["batch_size"], min_foreground_area=config["min_foreground_area"],
        augmentation=AugmentationParams() if config["augment"] else None, seed=config["seed"],
    )
    # Validation queries are training scans (their labels are only logged, never trained on);
    # the fold's query scans stay unseen until test.py.
    validation_split = FoldSplit(query_ids=split.train_ids[: config["n_validation_scans"]],
                                 support_ids=split.support_ids, train_ids=())
    validation_scans = load_scans(dataset_dir, spec, validation_split.query_ids + validation_split.support_ids,
                                  derived_dir=derived_dir, image_size=config["image_size"])
    labels = tested_labels(spec, config["setting"], config["label_group"])
    validation_episodes = test_episodes(validation_scans, validation_split, spec, labels, config["n_parts"])

    # --- optimiser, schedule ------------------------------------------------------------------------
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"],
                                weight_decay=config["weight_decay"])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config["lr_decay_every"], gamma=config["lr_decay"])
    class_weights = torch.tensor(config["class_weights"], dtype=torch.float32, device=device)

    # --- resume ----------------------------------------------------------------------------------
    start_step = 0
    if config["resume"] and checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path, map_location=device)
        check_resumable(state["config"], config, checkpoint_path)
        load_model_weights(model, state["model"], checkpoint_path)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng_states(state["rng"])
        start_step = state["step"]
        logger.info("resuming %s from step %d", checkpoint_path, start_step)
    else:
        save_checkpoint(run_dir / INITIAL_CHECKPOINT, model=model, optimizer=optimizer, scheduler=scheduler, step=0,
                        config=config)
    if start_step >= config["n_steps"]:
        logger.info("%s already finished %d steps", run_dir, start_step)
        return {"step": start_step}

    # events after the checkpoint's step came from the interrupted run and are dropped; those at
    # its step (validation Dice, losses) belong to the weights being resumed and stay
    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_step + 1)
    batches = episode_batches(episodes, config["batch_size"], start_step, config["num_workers"], config["seed"])
    model.train()
    progress = tqdm(range(start_step, config["n_steps"]), initial=start_step, total=config["n_steps"],
                    desc=f"train {run_dir.name}", dynamic_ncols=True)
    for step in progress:
        # --- forward and loss ----------------------------------------------------------------------
        batch = {key: value.to(device, non_blocking=True) for key, value in next(batches).items()}
        output, losses = episode_losses(model, batch, config, class_weights, device, precision)
        loss = sum(losses.values())
        if not math.isfinite(loss.item()):
            raise TrainingDiverged(f"step {step + 1}: loss is {loss.item()} ({ {k: v.item() for k, v in losses.items()} }); "
                                   f"lower lr or check the data; last checkpoint: {checkpoint_path}")

        # --- update ----------------------------------------------------------------------------------
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        done = step + 1

        # --- log ---------------------------------------------------------------------------------------
        if done % config["log_every"] == 0 or done == config["n_steps"]:
            for name, value in losses.items():
                writer.add_scalar(f"loss/{name}", value.item(), done)
            writer.add_scalar("loss/total", loss.item(), done)
            writer.add_scalar("lr", scheduler.get_last_lr()[0], done)
            progress.set_postfix(loss=f"{loss.item():.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")

        # --- validate ----------------------------------------------------------------------------
        if config["validate_every"] and (done % config["validate_every"] == 0 or done == config["n_steps"]):
            scores, predictions = evaluate_episodes(model, validation_episodes, device, precision,
                                                    config["eval_batch_size"])
            for organ, dice in organ_means(scores).items():
                writer.add_scalar(f"validation_dice/{organ}", dice, done)
            first = validation_episodes[0]
            writer.add_image("validation/support_query_prediction_truth",
                             test_episode_panel(first, predictions[(first.label, first.query_scan_id)]), done)
            writer.add_image("train/support_query_prediction_truth",
                             episode_panel_from_batch(batch, output.logits), done)

        # --- checkpoint ------------------------------------------------------------------------------
        if done % config["checkpoint_every"] == 0 or done == config["n_steps"]:
            save_checkpoint(checkpoint_path, model=model, optimizer=optimizer, scheduler=scheduler, step=done,
                            config=config)
    writer.close()
    _run.info["checkpoint"] = str(checkpoint_path)
    return {"step": config["n_steps"], "final_loss": loss.item()}


def episode_losses(model: torch.nn.Module, batch: dict[str, torch.Tensor], config: dict, class_weights: torch.Tensor,
                   device: torch.device, precision: str):
    """(model output, {loss name: weighted loss}) of one stacked episode batch.

    batch: support_images (B, S, 3, H, W), support_masks (B, S, H, W), query_images (B, 3, H, W),
    query_labels (B, H, W) with `ignore_index` where no loss applies. The losses are the weighted
    cross-entropy of the query (always), PANet's alignment loss and the soft Dice loss, each only
    when its weight in `config` is positive.
    """
    with_alignment = config["alignment_loss_weight"] > 0
    with autocast(device, precision):
        output = model(batch["support_images"], batch["support_masks"], batch["query_images"],
                       return_alignment=with_alignment)
    losses = {"query_ce": weighted_cross_entropy(output.logits.float(), batch["query_labels"], class_weights,
                                                 config["ignore_index"])}
    if with_alignment:
        losses["alignment"] = config["alignment_loss_weight"] * alignment_loss(
            output.alignment_logits, batch["support_masks"], output.alignment_counted, config["ignore_index"])
    if config["dice_loss_weight"] > 0:
        losses["dice"] = config["dice_loss_weight"] * soft_dice_loss(
            output.logits.float(), batch["query_labels"], config["ignore_index"])
    return output, losses


def episode_batches(dataset, batch_size: int, start_step: int, num_workers: int, seed: int):
    """Endless stacked episode batches, starting at `start_step` exactly as an uninterrupted run would.

    Episodes depend only on (seed, epoch, index), so a resumed run sets the epoch and skips to the
    index where the interrupted run stopped instead of replaying the loader.
    """
    steps_per_epoch = len(dataset) // batch_size
    epoch, step_in_epoch = divmod(start_step, steps_per_epoch)
    while True:
        dataset.set_epoch(epoch)
        indices = range(step_in_epoch * batch_size, steps_per_epoch * batch_size)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=num_workers,
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
