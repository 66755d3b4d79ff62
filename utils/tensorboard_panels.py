"""Image panels for tensorboard: support | query | prediction | ground truth, side by side."""
from __future__ import annotations

import torch
import torch.nn.functional as F

MASK_COLOUR = torch.tensor([1.0, 0.2, 0.2])  # red overlay for foreground masks
MASK_OPACITY = 0.5


def _grey_to_unit_rgb(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) or (H, W) intensities -> (3, H, W) in [0, 1] (min-max per image)."""
    image = image.detach().float().cpu()
    image = image[0] if image.dim() == 3 else image
    low, high = image.min(), image.max()
    unit = (image - low) / (high - low).clamp_min(torch.finfo(torch.float32).eps)
    return unit.expand(3, -1, -1)


def _overlay(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Tint the foreground of `mask` (H', W') on an RGB image (3, H, W); the mask is resized to fit."""
    mask = mask.detach().float().cpu()
    if mask.shape != image.shape[-2:]:
        mask = F.interpolate(mask[None, None], size=image.shape[-2:], mode="nearest")[0, 0]
    alpha = (mask == 1).float() * MASK_OPACITY
    return image * (1 - alpha) + MASK_COLOUR[:, None, None] * alpha


def episode_panel(
    support_image: torch.Tensor,
    support_mask: torch.Tensor,
    query_image: torch.Tensor,
    prediction: torch.Tensor,
    truth: torch.Tensor,
) -> torch.Tensor:
    """(3, H, W) images and (H, W) masks -> (3, H, 4W): support+mask, query, prediction, truth."""
    query = _grey_to_unit_rgb(query_image)
    support = _overlay(_grey_to_unit_rgb(support_image), support_mask)
    if support.shape != query.shape:
        support = F.interpolate(support[None], size=query.shape[-2:], mode="bilinear", align_corners=False)[0]
    return torch.cat([support, query, _overlay(query, prediction), _overlay(query, truth)], dim=-1)


def test_episode_panel(episode, prediction: torch.Tensor) -> torch.Tensor:
    """Panel of the middle evaluated slice of a test episode; prediction (Z, H0, W0)."""
    middle = episode.query_images.shape[0] // 2
    part = int(episode.part_index[middle])
    return episode_panel(
        episode.support_images[part, 0],
        episode.support_masks[part, 0],
        episode.query_images[middle],
        prediction[middle],
        episode.query_labels[middle],
    )
