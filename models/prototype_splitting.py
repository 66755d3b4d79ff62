"""Prototype Splitting Module, PSM (PSMnet paper section 3.2; docs/METHOD.md, "PSM").

One class mask R_0 is split iteratively under the guidance of the support itself: at step t the
prototype p_t of the remaining region R_{t-1} is compared (cosine) with every feature of that
region; positions with similarity >= tau_t form the segmented part A_t, the others the new
remaining region R_t. The class keeps the prototypes of its global mask, of A_1..A_T and of the
last unsegmented part R_T.

Soft masks: the *assignment* of a position to a part is hard (decided by its similarity), the
mask *values* stay soft: part mask = class mask * indicator(position in the part). The part masks
therefore sum exactly to the class mask and have disjoint supports, whatever the mask values.
tau_t is by default the mask-weighted mean similarity inside R_{t-1} (adaptive), or a fixed
cosine threshold. A small tolerance keeps a region of identical features in one part instead of
splitting it on rounding noise. Parts whose area (sum of soft mask values, in feature pixels) is
below `min_part_area` keep their sub-mask but give no valid prototype; an empty class gives only
invalid prototypes, never NaN.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.prototypes import EPS, full_precision, masked_average_pool

DEFAULT_N_SPLITS = 3
DEFAULT_MIN_PART_AREA = 1.0
ADAPTIVE = "adaptive"
# cosine similarities closer than this to the threshold count as reaching it
SIMILARITY_TOLERANCE = 1e-4


@dataclass
class SplitPrototypes:
    """PSM output for one class. K = n_splits + 2 prototypes per shot, in the order
    [global, A_1 .. A_T, R_T]; the n_splits + 1 sub-masks are [A_1 .. A_T, R_T].

    prototypes (B, S, K, C), valid (B, S, K), sub_masks (B, S, K - 1, h, w).
    """

    prototypes: torch.Tensor
    valid: torch.Tensor
    sub_masks: torch.Tensor


class PrototypeSplittingModule(nn.Module):
    """Iterative self-guided splitting of a class mask into parts with one prototype each."""

    def __init__(
        self,
        n_splits: int = DEFAULT_N_SPLITS,
        split_threshold: str | float = ADAPTIVE,
        min_part_area: float = DEFAULT_MIN_PART_AREA,
    ) -> None:
        super().__init__()
        if n_splits < 1:
            raise ValueError(f"n_splits must be >= 1, got {n_splits}")
        if split_threshold != ADAPTIVE and not isinstance(split_threshold, (int, float)):
            raise ValueError(f"split_threshold must be {ADAPTIVE!r} or a cosine value, got {split_threshold!r}")
        self.n_splits = n_splits
        self.split_threshold = split_threshold
        self.min_part_area = min_part_area

    def forward(self, features: torch.Tensor, masks: torch.Tensor) -> SplitPrototypes:
        """features (B, S, C, h, w), masks (B, S, h, w) soft in [0, 1] -> SplitPrototypes."""
        with full_precision(features):
            features, masks = features.float(), masks.float()
            unit_features = F.normalize(features, dim=2, eps=EPS)
            remaining = masks
            parts = []
            for _ in range(self.n_splits):
                prototype, _ = masked_average_pool(features, remaining.unsqueeze(2))
                unit_prototype = F.normalize(prototype.squeeze(2), dim=-1, eps=EPS)
                similarity = torch.einsum("bschw,bsc->bshw", unit_features, unit_prototype)
                if self.split_threshold == ADAPTIVE:
                    area = remaining.sum(dim=(-2, -1), keepdim=True)
                    threshold = (similarity * remaining).sum(dim=(-2, -1), keepdim=True) / (area + EPS)
                else:
                    threshold = torch.full_like(similarity[..., :1, :1], float(self.split_threshold))
                segmented = similarity >= threshold - SIMILARITY_TOLERANCE
                parts.append(remaining * segmented)
                remaining = remaining * ~segmented
            parts.append(remaining)
            sub_masks = torch.stack(parts, dim=2)
            all_masks = torch.cat([masks.unsqueeze(2), sub_masks], dim=2)
            prototypes, valid = masked_average_pool(features, all_masks)
            areas = all_masks.sum(dim=(-2, -1))
        part_valid = areas[:, :, 1:] >= self.min_part_area
        valid = torch.cat([valid[:, :, :1], valid[:, :, 1:] & part_valid], dim=2)
        return SplitPrototypes(prototypes=prototypes, valid=valid, sub_masks=sub_masks)
