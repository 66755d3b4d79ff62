"""The losses of one training step, shared by train.py and the benchmarks (bench/step_timing.py),
and whether the step trains at all.

Weighted cross-entropy of the query, and PANet's alignment loss and a soft Dice loss when their
weights in the config are positive (docs/METHOD.md, "Losses"; docs/PROTOCOL.md, "Training"). A
model without an alignment branch (UniverSeg) has no alignment term: its weight is 0 by
construction (models/__init__.py), and a positive one is refused before any step.

An episode the model's original cannot score (SSL-ALPNet's background without a local prototype,
models/base.py `needs_background_prototype`) is skipped by its training.py: no optimiser and no
scheduler step. `empty_background_prototypes` chooses: SKIP (the default, the original's) or
SCORE_ZERO (train on it with a background score of 0). A skipped step still uses up its step and
its episodes, as the original's loop counts the episode and draws the next one (docs/METHOD.md).
"""
from __future__ import annotations

import torch

from models import check_alignment_weight
from models.base import FewShotOutput
from models.losses import alignment_loss, soft_dice_loss, weighted_cross_entropy
from utils.distributed import Ranks, any_over_ranks
from utils.runtime import autocast

SKIP = "skip"  # no update for a step with an episode the model's original cannot score
SCORE_ZERO = "score_zero"  # train on it: its class without prototypes scores 0
EMPTY_BACKGROUND_POLICIES = (SKIP, SCORE_ZERO)
DEFAULT_EMPTY_BACKGROUND_POLICY = SKIP  # the original's behaviour


def episode_losses(model: torch.nn.Module, batch: dict[str, torch.Tensor], config: dict, class_weights: torch.Tensor,
                   device: torch.device, precision: str):
    """(model output, {loss name: weighted loss}) of one stacked episode batch.

    batch: support_images (B, S, 3, H, W), support_masks (B, S, H, W), query_images (B, 3, H, W),
    query_labels (B, H, W) with `ignore_index` where no loss applies. The losses are the weighted
    cross-entropy of the query (always), PANet's alignment loss and the soft Dice loss, each only
    when its weight in `config` is positive (a positive alignment weight for a model without an
    alignment branch raises a ValueError).
    """
    check_alignment_weight(config["model"]["name"], config["alignment_loss_weight"])
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


def skips_step(output: FewShotOutput, policy: str, ranks: Ranks = Ranks()) -> bool:
    """Whether a step with this output takes no optimiser or scheduler step: under SKIP, when an
    episode of the step's batch (on any rank) is not `output.scorable`; never under SCORE_ZERO.

    The originals train one episode per step; with B > 1 episodes the whole step is skipped, so that
    every update is made of episodes the original can score, and all ranks decide alike.
    """
    if policy not in EMPTY_BACKGROUND_POLICIES:
        raise ValueError(f"empty_background_prototypes must be one of {EMPTY_BACKGROUND_POLICIES}, got {policy!r}")
    if policy == SCORE_ZERO or output.scorable is None:
        return False
    return any_over_ranks(~output.scorable.all(), ranks)
