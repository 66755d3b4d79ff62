"""PANet (Wang et al., ICCV 2019, sections 3.2-3.3): one masked-average prototype per class.

Each class's prototype is the mean over shots of the per-shot masked average of the support
features; the query is scored by cosine similarity x 20. Shots whose class mask is empty do not
count in the mean.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from models.base import ClassPrototypes, FewShotSegmenter
from models.prototypes import DEFAULT_SCORE_SCALE, EPS, masked_average_pool


@dataclass(frozen=True)
class PANetOptions:
    score_scale: float = DEFAULT_SCORE_SCALE  # multiplier of cosine similarity in the logits


class PANet(FewShotSegmenter):
    """Masked average pooling per class, averaged over shots."""

    def __init__(self, encoder: nn.Module, options: PANetOptions = PANetOptions()) -> None:
        super().__init__(encoder, score_scale=options.score_scale)
        self.options = options

    def class_prototypes(self, features: torch.Tensor, masks: torch.Tensor) -> ClassPrototypes:
        """features (B, S, C, h, w), masks (B, S, h, w) -> one prototype (B, 1, C) per class."""
        class_masks = torch.stack([1.0 - masks, masks], dim=2)
        prototypes, valid = masked_average_pool(features, class_masks)
        weights = valid.to(prototypes.dtype).unsqueeze(-1)
        mean = (prototypes * weights).sum(dim=1) / (weights.sum(dim=1) + EPS)
        any_valid = valid.any(dim=1)
        return ClassPrototypes(
            background=mean[:, 0:1], background_valid=any_valid[:, 0:1],
            foreground=mean[:, 1:2], foreground_valid=any_valid[:, 1:2],
        )
