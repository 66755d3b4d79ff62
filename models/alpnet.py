"""SSL-ALPNet (Ouyang et al., ECCV 2020, section 3.3): adaptive local prototype pooling.

Both classes get window-averaged local prototypes (windows whose mask coverage reaches the
threshold); the foreground also keeps its global prototype ("gridconv+"), the background uses
its global prototype only when no window qualifies ("gridconv"). Scores of a class's prototypes
are combined by the softmax-weighted sum.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from models.base import ClassPrototypes, FewShotSegmenter
from models.prototypes import (
    COMBINATIONS, DEFAULT_LOCAL_COVERAGE, DEFAULT_LOCAL_WINDOW, DEFAULT_SCORE_SCALE, local_average_pool,
)


@dataclass(frozen=True)
class ALPNetOptions:
    score_scale: float = DEFAULT_SCORE_SCALE  # multiplier of cosine similarity in the logits
    prototype_combination: str = "softmax"  # per-class combination of prototype scores: softmax | max
    local_window: int = DEFAULT_LOCAL_WINDOW  # local pooling window, in feature pixels
    local_coverage: float = DEFAULT_LOCAL_COVERAGE  # minimum mask coverage of a kept window

    def __post_init__(self) -> None:
        if self.prototype_combination not in COMBINATIONS:
            raise ValueError(f"prototype_combination must be one of {COMBINATIONS}, got {self.prototype_combination!r}")


class ALPNet(FewShotSegmenter):
    """Local + global prototypes per class, softmax-weighted scoring."""

    def __init__(self, encoder: nn.Module, options: ALPNetOptions = ALPNetOptions()) -> None:
        super().__init__(encoder, options.score_scale, options.prototype_combination)
        self.options = options

    def class_prototypes(self, features: torch.Tensor, masks: torch.Tensor) -> ClassPrototypes:
        """features (B, S, C, h, w), masks (B, S, h, w) -> prototypes (B, P, C) per class."""
        window, coverage = self.options.local_window, self.options.local_coverage
        background, background_valid = local_average_pool(features, 1.0 - masks, window, coverage, include_global=False)
        foreground, foreground_valid = local_average_pool(features, masks, window, coverage, include_global=True)
        return ClassPrototypes(background, background_valid, foreground, foreground_valid)
