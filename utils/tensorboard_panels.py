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


def class_colours(n_classes: int) -> torch.Tensor:
    """(K, 3) RGB in [0, 1]: black background, then evenly spaced hues."""
    hues = torch.arange(1, n_classes, dtype=torch.float32) / max(n_classes - 1, 1)
    channels = torch.stack([(hues * 6 - shift).remainder(6).sub(3).abs().sub(1).clamp(0, 1) for shift in (0, 4, 2)],
                           dim=1)
    return torch.cat([torch.zeros(1, 3), channels])


def segmentation_panel(image: torch.Tensor, prediction: torch.Tensor, truth: torch.Tensor, n_classes: int
                       ) -> torch.Tensor:
    """image (H, W), prediction and truth (H, W) class ids -> (3, H, 3W): image, prediction, truth,
    each class tinted in its colour (labels outside 0..K-1, e.g. an unlabelled slice's, show none)."""
    grey = _grey_to_unit_rgb(image)
    colours = class_colours(n_classes)

    def tinted(labels: torch.Tensor) -> torch.Tensor:
        labels = labels.detach().long().cpu()
        known = (labels >= 0) & (labels < n_classes) & (labels > 0)
        colour = colours[labels.clamp(0, n_classes - 1)].permute(2, 0, 1)
        alpha = known.float() * MASK_OPACITY
        return grey * (1 - alpha) + colour * alpha

    return torch.cat([grey, tinted(prediction), tinted(truth)], dim=-1)
