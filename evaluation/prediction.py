"""Segmenting the query slices of a test episode (docs/PROTOCOL.md, "Test-time episodes").

Each test episode (one organ, one query scan) has one support set per part of the organ's z-range;
the query slices of a part are segmented in batches against that part's support, which the model
encodes once per batch (a support batch of 1 is broadcast). Logits are upsampled to the labels'
native resolution, so scores are computed in the preprocessed 256 x 256 space whatever size the
model ran at.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from evaluation.episodes import TestEpisode
from utils.runtime import autocast

FOREGROUND = 1


class NonFiniteLogits(ValueError):
    """A model produced NaN or infinite logits: its scores would be silently wrong."""


@torch.no_grad()
def predict_episode(
    model: torch.nn.Module, episode: TestEpisode, device: torch.device, precision: str, batch_size: int
) -> torch.Tensor:
    """Binary prediction of one test episode: (Z, H0, W0) bool on the CPU, Z = evaluated slices."""
    native_size = tuple(episode.query_labels.shape[-2:])
    prediction = torch.zeros(episode.query_labels.shape, dtype=torch.bool)
    for part in range(episode.support_images.shape[0]):
        support_images = episode.support_images[part : part + 1].to(device)  # (1, S, 3, H, W)
        support_masks = episode.support_masks[part : part + 1].to(device)  # (1, S, H, W)
        slice_positions = torch.nonzero(episode.part_index == part).flatten()
        for batch_positions in slice_positions.split(batch_size):
            query_images = episode.query_images[batch_positions].to(device)  # (b, 3, H, W)
            with autocast(device, precision):
                logits = model(support_images, support_masks, query_images).logits  # (b, 2, H, W)
            if not torch.isfinite(logits).all():
                raise NonFiniteLogits(f"{episode.organ}, query scan {episode.query_scan_id}: the model's logits are "
                                      "not finite (NaN or infinite); its weights or features have diverged")
            logits = F.interpolate(logits.float(), size=native_size, mode="bilinear", align_corners=False)
            prediction[batch_positions] = (logits.argmax(dim=1) == FOREGROUND).cpu()
    return prediction
