"""SSL-ALPNet (Ouyang et al., ECCV 2020, section 3.3): adaptive local prototype pooling.

As SSL-ALPNet's models/alpmodule.py and grid_proto_fewshot.py compute it, on soft masks resized
to the feature grid:
- background ("gridconv"): local prototypes only, the window averages of the features whose mean
  mask value exceeds the coverage threshold; no window, no prototype: the original cannot score
  the episode (its training skips it), here the class scores 0 and the output says the episode is
  not `scorable` (models/base.py);
- foreground ("gridconv+" or "mask"): when some `foreground_mode_window` window (4 x 4, in
  training and at test alike) is covered at least to the threshold, the local prototypes plus the
  global prototype of every shot; otherwise only the global prototype averaged over shots;
- the local windows are `local_window` (4 x 4) in training and `test_local_window` (2 x 2,
  SSL-ALPNet's val_wsize) in evaluation mode (`model.eval()`);
- scores of a class's prototypes are combined by the softmax-weighted sum.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from models.base import ClassPrototypes, FewShotSegmenter
from models.prototypes import (
    COMBINATIONS, DEFAULT_LOCAL_COVERAGE, DEFAULT_LOCAL_WINDOW, DEFAULT_SCORE_SCALE, DEFAULT_TEST_LOCAL_WINDOW,
    local_prototypes, masked_average_pool, resize_masks, window_coverage,
)


@dataclass(frozen=True)
class ALPNetOptions:
    score_scale: float = DEFAULT_SCORE_SCALE  # multiplier of cosine similarity in the logits
    prototype_combination: str = "softmax"  # per-class combination of prototype scores: softmax | max
    local_window: int = DEFAULT_LOCAL_WINDOW  # local pooling window in training, feature pixels
    test_local_window: int = DEFAULT_TEST_LOCAL_WINDOW  # local pooling window in evaluation (val_wsize)
    local_coverage: float = DEFAULT_LOCAL_COVERAGE  # a window is a local prototype above this mean mask value
    foreground_mode_window: int = DEFAULT_LOCAL_WINDOW  # window deciding local+global vs global-only foreground

    def __post_init__(self) -> None:
        if self.prototype_combination not in COMBINATIONS:
            raise ValueError(f"prototype_combination must be one of {COMBINATIONS}, got {self.prototype_combination!r}")
        for name in ("local_window", "test_local_window", "foreground_mode_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive number of feature pixels, got {getattr(self, name)}")

    @property
    def minimum_feature_size(self) -> int:
        """Side of the smallest feature grid the pooling windows fit in, in training and evaluation."""
        return max(self.local_window, self.test_local_window, self.foreground_mode_window)


class ALPNet(FewShotSegmenter):
    """Local + global prototypes per class, softmax-weighted scoring."""

    needs_background_prototype = True

    def __init__(self, encoder: nn.Module, options: ALPNetOptions = ALPNetOptions()) -> None:
        super().__init__(encoder, options.score_scale, options.prototype_combination)
        self.options = options

    def class_prototypes(self, features: torch.Tensor, masks: torch.Tensor) -> ClassPrototypes:
        """features (B, S, C, h, w), masks (B, S, H', W') -> prototypes (B, P, C) per class."""
        options = self.options
        shots = features.shape[1]
        masks = resize_masks(masks, tuple(features.shape[-2:]))
        window = options.local_window if self.training else options.test_local_window
        background, background_valid = local_prototypes(features, 1.0 - masks, window, options.local_coverage)
        local, local_valid = local_prototypes(features, masks, window, options.local_coverage)
        per_shot, _ = masked_average_pool(features, masks.unsqueeze(2))
        per_shot = per_shot.squeeze(2)  # (B, S, C)
        shot_mean = per_shot.mean(dim=1, keepdim=True)  # (B, 1, C)
        coverage = window_coverage(masks, options.foreground_mode_window).flatten(1)
        with_local = (coverage.amax(dim=1) >= options.local_coverage).unsqueeze(1)  # (B, 1)
        foreground = torch.cat([local, per_shot, shot_mean], dim=1)
        foreground_valid = torch.cat([local_valid & with_local, with_local.expand(-1, shots), ~with_local], dim=1)
        return ClassPrototypes(background, background_valid, foreground, foreground_valid)
