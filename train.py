"""Training of a few-shot segmenter (episodes) or a semi-supervised method (labelled + unlabelled slices).

    python train.py with demo cpu                       # minutes on a laptop CPU
    python train.py with chaost2 setting2 label_group=1 psmnet eval_fold=3
    python train.py with acdc mean_teacher labelled_patients=7          # SSL4MIS's ACDC protocol
    torchrun --standalone --nproc_per_node=4 train.py with chaost2 psmnet batch_size=4   # data-parallel

The loop reads top to bottom: build (track, optimiser), resume, then per step: forward and losses,
update, log, validate, checkpoint. A step the track skips (an episode the model's original cannot
score, which it skips: SSL-ALPNet's background without a local prototype) has no update but counts
as a step, as in the original's loop. What differs between the two regimes is the track
(experiment/tracks.py: the model, its batches, the losses of a step, validation); the run folder
(checkpoints, tensorboard, Sacred record) comes from experiment/layout.py. Under torchrun
(few-shot only), each process trains on its share of each step's episodes and rank 0 alone logs,
validates and writes checkpoints (utils/distributed.py).
"""
from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from config import ex
from experiment.assembly import upgrade_saved_config
from experiment.config_checks import check_training_config
from experiment.curves import (BEST_VALIDATION_TAG, LEARNING_RATE_TAG, SKIPPED_STEPS_TAG, TOTAL_LOSS_TAG, loss_tag,
                               scalar_tag, validation_dice_tag)
from experiment.data_identity import DATA_FINGERPRINT_KEY
from experiment.layout import RunLayout
from experiment.optimisation import Optimisation
from experiment.provenance import BOOKKEEPING_KEYS
from experiment.tracks import build_track, episode_batches  # noqa: F401  (episode_batches: the few-shot loader)
from experiment.training_step import episode_losses  # noqa: F401  (kept importable beside the loop)
from utils.checkpoint import load_checkpoint, load_model_weights, restore_rng_states, save_checkpoint
from utils.distributed import join_process_group, launched_ranks, mean_over_ranks
from utils.io import remove_stale_temporary_files
from utils.run_lock import RunLock
from utils.runtime import check_precision, select_device
from utils.seeding import seed_everything

logger = logging.getLogger(__name__)

# Config keys that may differ between an interrupted run and its resumption: bookkeeping (runs_root
# and run_name too: a run folder copied or moved elsewhere, e.g. to extend a finished run, resumes)
# and the number of steps.
RESUMABLE_KEYS = BOOKKEEPING_KEYS | {"n_steps"}
BEST_STATE_KEY = "best_validation"  # checkpoint entry: {"dice": mean validation Dice, "step": its step}
SKIPPED_STEPS_KEY = "skipped_steps"  # checkpoint entry: steps skipped so far (no update)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@ex.main
def train(_config, _run, model_options):  # model_options captured so `model_options.x=...` may add keys
    config = dict(_config)
    check_training_config(config)  # a value out of range stops here, not at the first validation or checkpoint
    run = RunLayout.of(config)
    ranks = launched_ranks()
    # one writer per run folder: a second train.py (or an extension, a sweep worker) on it is refused
    with RunLock(run.folder, "train.py") if ranks.is_main else contextlib.nullcontext():
        return train_run(config, run, ranks, _run)


def train_run(config: dict, run: RunLayout, ranks, _run) -> dict:
    """The loop of `train`, with the run folder locked."""
    seed_everything(config["seed"])  # the same on every rank: the same initial weights
    device = join_process_group(ranks, select_device(config["device"]))
    precision = check_precision(config["precision"])

    # --- the track: model (first: missing weights stop the run before data preparation), batches, validation ---
    track = build_track(config, device, precision, ranks)
    model = track.model
    data_fingerprint = track.data_fingerprint()  # stored in every checkpoint: a resume on other data is refused

    # --- optimiser, schedule: one per parameter group ------------------------------------------------
    optimisation = Optimisation(config, track.parameter_groups())

    # --- resume (a save killed midway left a temporary file: it goes) -----------------------------
    if ranks.is_main:
        remove_stale_temporary_files(run.last_checkpoint.parent)
    start_step, best, skipped_steps = 0, {"dice": -math.inf, "step": 0}, 0
    if config["resume"] and run.last_checkpoint.is_file():
        state = load_checkpoint(run.last_checkpoint, map_location=device)
        check_resumable(upgrade_saved_config(state["config"]), config, run.last_checkpoint)
        check_same_data(state.get("extra", {}).get(DATA_FINGERPRINT_KEY), data_fingerprint, run.last_checkpoint)
        load_model_weights(model, state["model"], run.last_checkpoint)
        optimisation.load_state_dicts(state["optimizer"], state["scheduler"])
        restore_rng_states(state["rng"])
        start_step, best = state["step"], state.get("extra", {}).get(BEST_STATE_KEY, best)
        skipped_steps = state.get("extra", {}).get(SKIPPED_STEPS_KEY, 0)
        logger.info("resuming %s from step %d", run.last_checkpoint, start_step)
    elif ranks.is_main:
        save_checkpoint(run.initial_checkpoint, model=model, **optimisation.checkpoint_states(), step=0, config=config,
                        extra={DATA_FINGERPRINT_KEY: data_fingerprint})
    if start_step >= config["n_steps"]:
        logger.info("%s already finished %d steps", run.folder, start_step)
        return {"step": start_step}

    # events after the checkpoint's step came from the interrupted run and are dropped; those at
    # its step (validation Dice, losses) belong to the weights being resumed and stay
    writer = SummaryWriter(log_dir=str(run.tensorboard), purge_step=start_step + 1) if ranks.is_main else None
    batches = track.batches(start_step)
    progress = tqdm(range(start_step, config["n_steps"]), initial=start_step, total=config["n_steps"],
                    desc=f"train {run.folder.name}", dynamic_ncols=True, disable=not ranks.is_main)
    step_loss = math.nan
    for step in progress:
        # --- forward and loss (of this rank's share of the step's batch) -------------------------------
        outcome = track.training_step(next(batches), step)
        if outcome.skipped:  # the model's original cannot score an episode of it (experiment/training_step.py)
            skipped_steps += 1
        else:
            loss = sum(outcome.losses.values())
            step_losses = mean_over_ranks(outcome.losses, ranks)  # the step's losses, the same on every rank
            step_loss = sum(step_losses.values())
            if not math.isfinite(step_loss):
                raise TrainingDiverged(f"step {step + 1}: loss is {step_loss} ({step_losses}); "
                                       f"lower lr or check the data; last checkpoint: {run.last_checkpoint}")

            # --- update (a skipped step has none: no optimiser and no scheduler step) --------------------
            optimisation.zero_grad()
            loss.backward()
            optimisation.step()
            track.after_update(step)  # e.g. an EMA teacher follows the student
        done = step + 1

        if not ranks.is_main:  # rank 0 alone logs, validates and saves
            continue

        # --- log ---------------------------------------------------------------------------------------
        if done % config["log_every"] == 0 or done == config["n_steps"]:
            if not outcome.skipped:  # a skipped step has no losses
                for name, value in step_losses.items():
                    writer.add_scalar(loss_tag(name), value, done)
                writer.add_scalar(TOTAL_LOSS_TAG, step_loss, done)
                for name, value in outcome.scalars.items():
                    writer.add_scalar(scalar_tag(name), value, done)
            writer.add_scalar(SKIPPED_STEPS_TAG, skipped_steps, done)
            learning_rates = optimisation.learning_rates()
            for group, value in learning_rates.items():
                writer.add_scalar(LEARNING_RATE_TAG if len(learning_rates) == 1 else f"{LEARNING_RATE_TAG}/{group}",
                                  value, done)
            progress.set_postfix(loss=f"{step_loss:.4f}", lr=f"{next(iter(learning_rates.values())):.2e}",
                                 skipped=skipped_steps)

        # --- validate (and keep the best weights, where the track selects by validation) -------------
        if config["validate_every"] and (done % config["validate_every"] == 0 or done == config["n_steps"]):
            validation = track.validate()
            for name, dice in validation.dice.items():
                writer.add_scalar(validation_dice_tag(name), dice, done)
            for name, panel in validation.panels.items():
                writer.add_image(name, panel, done)
            writer.add_image(track.training_panel_tag, outcome.panel(), done)
            mean_dice = sum(validation.dice.values()) / len(validation.dice)
            if track.selects_best and mean_dice > best["dice"]:
                best = {"dice": mean_dice, "step": done}
                save_checkpoint(run.best_checkpoint, model=model, **optimisation.checkpoint_states(), step=done,
                                config=config, extra={BEST_STATE_KEY: best, DATA_FINGERPRINT_KEY: data_fingerprint})
            if track.selects_best:
                writer.add_scalar(BEST_VALIDATION_TAG, best["dice"], done)

        # --- checkpoint ------------------------------------------------------------------------------
        if done % config["checkpoint_every"] == 0 or done == config["n_steps"]:
            save_checkpoint(run.last_checkpoint, model=model, **optimisation.checkpoint_states(), step=done, config=config,
                            extra={BEST_STATE_KEY: best, DATA_FINGERPRINT_KEY: data_fingerprint,
                                   SKIPPED_STEPS_KEY: skipped_steps})
    if ranks.is_main:
        writer.close()
    _run.info["checkpoint"] = str(run.last_checkpoint)
    return {"step": config["n_steps"], "final_loss": step_loss, "skipped_steps": skipped_steps,
            **({"best_validation": best} if track.selects_best else {})}


def check_resumable(saved: dict, current: dict, path: Path) -> None:
    """Refuse to resume a run whose training config differs: it would silently mix two experiments."""
    # a schedule that reads n_steps (poly decay, a scaled method clock) would change midway with it
    reads_n_steps = current.get("lr_schedule") == "poly" or current.get("schedule_clock") == "scaled"
    resumable = RESUMABLE_KEYS - {"n_steps"} if reads_n_steps else RESUMABLE_KEYS
    changed = sorted(key for key in saved.keys() | current.keys()
                     if key not in resumable and saved.get(key) != current.get(key))
    if changed:
        details = ", ".join(f"{key}: {saved.get(key)!r} -> {current.get(key)!r}" for key in changed)
        raise ValueError(f"{path}: cannot resume, the run was trained with another config ({details}); "
                         f"pass resume=False to start over or run_name=<new name>")


def check_same_data(saved: dict | None, current: dict, path: Path) -> None:
    """Refuse to resume a run on data whose content differs from what it was trained on (another
    data_root, relabelled scans); a checkpoint saved before fingerprints were stored resumes as before."""
    if saved is None or saved["sha256"] == current["sha256"]:
        return
    raise ValueError(f"{path}: cannot resume, the run was trained on other data ({saved['dataset_dir']}, "
                     f"{saved['n_files']} files, content SHA-256 {saved['sha256'][:12]}) than data_root gives now "
                     f"({current['dataset_dir']}, {current['n_files']} files, content SHA-256 "
                     f"{current['sha256'][:12]}); pass resume=False to start over, or set data_root to the data it "
                     f"was trained on")


if __name__ == "__main__":
    ex.run_commandline()
