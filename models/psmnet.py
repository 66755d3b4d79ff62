"""PSMnet (PSMnet paper section 3; docs/METHOD.md, "PSM", "MCAM" and "Scoring"): PSM prototypes + MCAM.

Foreground and background of every support are split by the Prototype Splitting Module; the
query features are adapted to the support foreground by the Multi-level Cross Attention Module;
the query is scored against all valid prototypes of each class (softmax-weighted sum).

Windowed background prototypes (reconstructed, docs/METHOD.md "Where this project departs from the
originals"): PSMnet's surviving `forward` passes a training window (`tra_wsize`), `isval` and a test
window (`val_wsize`) to its lost scoring function, as SSL-ALPNet switches its pooling windows
between training and test. By default SSL-ALPNet's local prototypes of the background (the window
averages of the features whose window is covered above 0.95) join the split prototypes, pooled over
`local_window` (4 x 4) windows in training and `test_local_window` (2 x 2) in evaluation mode
(`model.eval()`); `use_local_background_prototypes=False` scores with the split prototypes alone.

Ablations: `use_psm=False` scores with the per-shot global prototypes only (the "singular
prototype"); the foreground split still feeds MCAM's level-2 guide map, which needs it.
`use_mcam=False` scores the encoder's query features directly. `mcam_direction` chooses between
the original code's guide-to-query non-local blocks (default) and a query-to-support alternative
(models/cross_attention.py).

Support masks are resized to the feature grid (bilinear, soft) as the original does
(`F.interpolate(fore_mask, size=32, mode='bilinear')` in PSMnet's models/DVD1.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from einops import rearrange

from models.base import ClassPrototypes, FewShotSegmenter
from models.cross_attention import DEFAULT_KEY_THRESHOLD, GUIDE_TO_QUERY, MCAM_DIRECTIONS, MultiLevelCrossAttention
from models.prototype_splitting import (
    ADAPTIVE, DEFAULT_MIN_PART_AREA, DEFAULT_N_SPLITS, PrototypeSplittingModule, SplitPrototypes,
)
from models.prototypes import (
    COMBINATIONS, DEFAULT_LOCAL_COVERAGE, DEFAULT_LOCAL_WINDOW, DEFAULT_SCORE_SCALE, DEFAULT_TEST_LOCAL_WINDOW,
    local_prototypes, resize_masks,
)


@dataclass(frozen=True)
class PSMNetOptions:
    n_splits: int = DEFAULT_N_SPLITS  # T, splitting iterations per class mask
    split_threshold: str | float = ADAPTIVE  # "adaptive" (mean similarity in the region) or a fixed cosine
    min_part_area: float = DEFAULT_MIN_PART_AREA  # parts smaller than this (feature pixels) give no prototype
    use_psm: bool = True  # score with split prototypes (False: per-shot global prototypes only)
    use_mcam: bool = True  # adapt the query features with multi-level cross attention
    mcam_direction: str = GUIDE_TO_QUERY  # "guide_to_query" (the original non-local blocks) | "query_to_support"
    attention_key_threshold: float = DEFAULT_KEY_THRESHOLD  # query_to_support: mask value making a position a key
    score_scale: float = DEFAULT_SCORE_SCALE  # multiplier of cosine similarity in the logits
    prototype_combination: str = "softmax"  # per-class combination of prototype scores: softmax | max
    use_local_background_prototypes: bool = True  # add window-pooled background prototypes (reconstructed)
    local_window: int = DEFAULT_LOCAL_WINDOW  # their pooling window in training (tra_wsize), feature pixels
    test_local_window: int = DEFAULT_TEST_LOCAL_WINDOW  # their pooling window in evaluation (val_wsize)
    local_coverage: float = DEFAULT_LOCAL_COVERAGE  # a window is kept above this mean background value

    def __post_init__(self) -> None:
        if self.mcam_direction not in MCAM_DIRECTIONS:
            raise ValueError(f"mcam_direction must be one of {MCAM_DIRECTIONS}, got {self.mcam_direction!r}")
        if self.prototype_combination not in COMBINATIONS:
            raise ValueError(f"prototype_combination must be one of {COMBINATIONS}, got {self.prototype_combination!r}")
        if self.split_threshold != ADAPTIVE and not isinstance(self.split_threshold, (int, float)):
            raise ValueError(f"split_threshold must be {ADAPTIVE!r} or a number, got {self.split_threshold!r}")
        for name in ("local_window", "test_local_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive number of feature pixels, got {getattr(self, name)}")

    @property
    def minimum_feature_size(self) -> int:
        """Side of the smallest feature grid the pooling windows fit in, in training and evaluation."""
        return max(self.local_window, self.test_local_window) if self.use_local_background_prototypes else 1


@dataclass
class PSMNetPrototypes(ClassPrototypes):
    """ClassPrototypes plus what MCAM's guide maps need: the foreground split and the support's
    foreground masks at feature resolution (B, S, h, w)."""

    foreground_split: SplitPrototypes | None = None
    foreground_masks: torch.Tensor | None = None


class PSMNet(FewShotSegmenter):
    """Prototype splitting + multi-level cross attention."""

    def __init__(self, encoder: nn.Module, channels: int, options: PSMNetOptions = PSMNetOptions()) -> None:
        super().__init__(encoder, options.score_scale, options.prototype_combination)
        self.options = options
        self.splitter = PrototypeSplittingModule(options.n_splits, options.split_threshold, options.min_part_area)
        self.cross_attention = (
            MultiLevelCrossAttention(channels, options.mcam_direction, options.attention_key_threshold)
            if options.use_mcam else None
        )

    def class_prototypes(self, features: torch.Tensor, masks: torch.Tensor) -> PSMNetPrototypes:
        """features (B, S, C, h, w), masks (B, S, H', W') -> prototypes (B, P, C) per class + fg split."""
        batch = features.shape[0]
        masks = resize_masks(masks, tuple(features.shape[-2:]))
        both = self.splitter(torch.cat([features, features]), torch.cat([1.0 - masks, masks]))
        prototypes, valid = both.prototypes, both.valid
        if not self.options.use_psm:
            prototypes, valid = prototypes[:, :, :1], valid[:, :, :1]
        flat = rearrange(prototypes, "(k b) s p c -> k b (s p) c", b=batch)
        flat_valid = rearrange(valid, "(k b) s p -> k b (s p)", b=batch)
        background, background_valid = flat[0], flat_valid[0]
        if self.options.use_local_background_prototypes:
            window = self.options.local_window if self.training else self.options.test_local_window
            local, local_valid = local_prototypes(features, 1.0 - masks, window, self.options.local_coverage)
            background = torch.cat([background, local], dim=1)
            background_valid = torch.cat([background_valid, local_valid], dim=1)
        foreground_split = SplitPrototypes(both.prototypes[batch:], both.valid[batch:], both.sub_masks[batch:])
        return PSMNetPrototypes(background, background_valid, flat[1], flat_valid[1], foreground_split, masks)

    def adapt_query(
        self,
        query_features: torch.Tensor,
        support_features: torch.Tensor,
        prototypes: PSMNetPrototypes,
    ) -> torch.Tensor:
        """query_features (B, C, h, w), support_features (B|1, S, C, h, w) -> (B, C, h, w) after
        MCAM (unchanged when use_mcam=False)."""
        if self.cross_attention is None:
            return query_features
        split = prototypes.foreground_split
        return self.cross_attention(
            query_features, support_features, prototypes.foreground_masks,
            split.prototypes[:, :, 0], split.prototypes[:, :, 1:], split.valid[:, :, 1:],
        )
