"""The episode plumbing shared by every few-shot model (DESIGN.md "Models"; PANet section 3.2-3.3).

`FewShotSegmenter` encodes support and query slices in one encoder pass, resizes the support
masks to the feature grid, shares a support batch of 1 with every query, scores the query against
per-class prototypes, upsamples the logits, and implements PANet's prototype alignment
regularisation (PAR): prototypes taken from the query with its own hard prediction segment each
support back. Subclasses only say how a class's prototypes are made (`class_prototypes`) and,
optionally, how the query features are adapted to the support (`adapt_query`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, repeat

from models.prototypes import DEFAULT_SCORE_SCALE, combine_class_scores, cosine_scores, resize_masks

N_CLASSES = 2  # background, foreground


@dataclass
class FewShotOutput:
    """logits (B, 2, H, W); alignment_logits (B, S, 2, H, W) or None."""

    logits: torch.Tensor
    alignment_logits: torch.Tensor | None = None


@dataclass
class ClassPrototypes:
    """Prototypes of both classes: background / foreground (B, P, C) with validity (B, P)."""

    background: torch.Tensor
    background_valid: torch.Tensor
    foreground: torch.Tensor
    foreground_valid: torch.Tensor


class FewShotSegmenter(nn.Module):
    """Base class: encoder + prototype scoring + PAR; see the module docstring."""

    def __init__(
        self, encoder: nn.Module, score_scale: float = DEFAULT_SCORE_SCALE, prototype_combination: str = "softmax"
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.score_scale = score_scale
        self.prototype_combination = prototype_combination

    def class_prototypes(self, features: torch.Tensor, masks: torch.Tensor) -> ClassPrototypes:
        """features (B, S, C, h, w), foreground masks (B, S, h, w) soft -> ClassPrototypes."""
        raise NotImplementedError

    def adapt_query(
        self,
        query_features: torch.Tensor,
        support_features: torch.Tensor,
        support_masks: torch.Tensor,
        prototypes: ClassPrototypes,
    ) -> torch.Tensor:
        """query_features (B, C, h, w) -> (B, C, h, w); the identity unless a model overrides it."""
        return query_features

    def score(self, query_features: torch.Tensor, prototypes: ClassPrototypes) -> torch.Tensor:
        """query_features (B, C, h, w) -> logits (B, 2, h, w), background then foreground."""
        class_maps = []
        for class_prototypes, valid in (
            (prototypes.background, prototypes.background_valid),
            (prototypes.foreground, prototypes.foreground_valid),
        ):
            scores = cosine_scores(query_features, class_prototypes, valid, self.score_scale)
            class_maps.append(
                combine_class_scores(scores, valid, self.prototype_combination, empty_score=-self.score_scale)
            )
        return torch.stack(class_maps, dim=1)

    def encode(self, support_images: torch.Tensor, query_images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """support (Bs, S, 3, H, W), query (B, 3, H, W) -> (Bs, S, C, h, w), (B, C, h, w), one pass."""
        support_batch, shots = support_images.shape[:2]
        flat_support = rearrange(support_images, "b s c h w -> (b s) c h w")
        features = self.encoder(torch.cat([flat_support, query_images], dim=0))
        support_features = rearrange(features[: support_batch * shots], "(b s) c h w -> b s c h w", b=support_batch)
        return support_features, features[support_batch * shots:]

    def forward(
        self,
        support_images: torch.Tensor,
        support_masks: torch.Tensor,
        query_images: torch.Tensor,
        return_alignment: bool = False,
    ) -> FewShotOutput:
        """support_images (B|1, S, 3, H, W), support_masks (B|1, S, H, W), query_images (B, 3, H, W)
        -> FewShotOutput(logits (B, 2, H, W), alignment_logits (B, S, 2, H, W) | None)."""
        _check_episode(support_images, support_masks, query_images)
        batch = query_images.shape[0]
        image_size = query_images.shape[-2:]
        support_features, query_features = self.encode(support_images, query_images)
        feature_size = tuple(query_features.shape[-2:])
        masks = resize_masks(support_masks, feature_size).to(support_features.device)
        if support_features.shape[0] != batch:
            support_features = support_features.expand(batch, *support_features.shape[1:])
            masks = masks.expand(batch, *masks.shape[1:])
        prototypes = self.class_prototypes(support_features, masks)
        query_features = self.adapt_query(query_features, support_features, masks, prototypes)
        logits = _upsample(self.score(query_features, prototypes), image_size)
        alignment = None
        if return_alignment:
            alignment = self.align(query_features, logits, support_features, image_size)
        return FewShotOutput(logits=logits, alignment_logits=alignment)

    def align(
        self, query_features: torch.Tensor, logits: torch.Tensor, support_features: torch.Tensor, image_size
    ) -> torch.Tensor:
        """PAR: query_features (B, C, h, w), logits (B, 2, H, W), support_features (B, S, C, h, w)
        -> alignment logits (B, S, 2, H, W). The prediction mask is the argmax (PANet)."""
        shots = support_features.shape[1]
        predicted = (logits.argmax(dim=1) == 1).float()
        query_masks = resize_masks(predicted, tuple(query_features.shape[-2:]))
        query_prototypes = self.class_prototypes(query_features.unsqueeze(1), query_masks.unsqueeze(1))
        repeated = ClassPrototypes(
            *(
                repeat(tensor, "b ... -> (b s) ...", s=shots)
                for tensor in (
                    query_prototypes.background, query_prototypes.background_valid,
                    query_prototypes.foreground, query_prototypes.foreground_valid,
                )
            )
        )
        support_logits = self.score(rearrange(support_features, "b s c h w -> (b s) c h w"), repeated)
        return rearrange(_upsample(support_logits, image_size), "(b s) k h w -> b s k h w", s=shots)


def _upsample(logits: torch.Tensor, size) -> torch.Tensor:
    """(N, 2, h, w) -> (N, 2, H, W), bilinear."""
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def _check_episode(support_images: torch.Tensor, support_masks: torch.Tensor, query_images: torch.Tensor) -> None:
    """Raise one clear ValueError for tensors that do not form an episode."""
    if support_images.dim() != 5 or support_masks.dim() != 4 or query_images.dim() != 4:
        raise ValueError(
            "expected support_images (B, S, 3, H, W), support_masks (B, S, H, W), query_images (B, 3, H, W); "
            f"got {tuple(support_images.shape)}, {tuple(support_masks.shape)}, {tuple(query_images.shape)}"
        )
    support_batch = support_images.shape[0]
    if support_masks.shape != support_images.shape[:2] + support_images.shape[3:]:
        raise ValueError(
            f"support_masks {tuple(support_masks.shape)} do not match support_images {tuple(support_images.shape)}"
        )
    if support_batch not in (1, query_images.shape[0]) or support_images.shape[2:] != query_images.shape[1:]:
        raise ValueError(
            f"support_images {tuple(support_images.shape)} do not fit query_images {tuple(query_images.shape)}: "
            "the support batch must be 1 or the query batch, with the same channels and image size"
        )
