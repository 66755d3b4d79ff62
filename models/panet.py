"""PANet (Wang et al., ICCV 2019, sections 3.2-3.3): one masked-average prototype per class.

As PANet's `getFeatures`, the support features are upsampled (bilinear) to the masks' resolution
and pooled there, so a support mask at image resolution is used as it is; the alignment branch
pools the query's hard prediction at feature resolution (no upsampling needed). Each class's
prototype is the sum over shots of the per-shot prototypes divided by the number of shots (an
empty shot adds a zero prototype, as in PANet's `getPrototype`); the query is scored by cosine
similarity x 20. PANet skips the alignment loss of an episode whose query has no predicted
foreground.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from models.base import ClassPrototypes, FewShotSegmenter
from models.prototypes import DEFAULT_SCORE_SCALE, full_precision, masked_average_pool


@dataclass(frozen=True)
class PANetOptions:
    score_scale: float = DEFAULT_SCORE_SCALE  # multiplier of cosine similarity in the logits


class PANet(FewShotSegmenter):
    """Masked average pooling per class at mask resolution, averaged over shots."""

    skips_alignment_without_foreground = True

    def __init__(self, encoder: nn.Module, options: PANetOptions = PANetOptions()) -> None:
        super().__init__(encoder, score_scale=options.score_scale)
        self.options = options

    def class_prototypes(self, features: torch.Tensor, masks: torch.Tensor) -> ClassPrototypes:
        """features (B, S, C, h, w), masks (B, S, H', W') -> one prototype (B, 1, C) per class."""
        batch = features.shape[0]
        mask_size = tuple(masks.shape[-2:])
        with full_precision(features):
            features = features.float()
            if tuple(features.shape[-2:]) != mask_size:
                flat = F.interpolate(rearrange(features, "b s c h w -> (b s) c h w"), size=mask_size,
                                     mode="bilinear", align_corners=False)
                features = rearrange(flat, "(b s) c h w -> b s c h w", b=batch)
            per_shot, _ = masked_average_pool(features, torch.stack([1.0 - masks, masks], dim=2))  # (B, S, 2, C)
        mean = per_shot.mean(dim=1)  # (B, 2, C)
        always = torch.ones(batch, 1, dtype=torch.bool, device=mean.device)
        return ClassPrototypes(background=mean[:, 0:1], background_valid=always,
                               foreground=mean[:, 1:2], foreground_valid=always)
