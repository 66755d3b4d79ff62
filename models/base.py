"""The episode plumbing shared by the prototype models (docs/DESIGN.md "Models"; PANet section 3.2-3.3).

`FewShotSegmenter` encodes support and query slices in one encoder pass, makes per-class
prototypes from the supports (once per support batch, shared by every query of a batch of 1),
scores the query features against them, upsamples the logits, and implements PANet's prototype
alignment regularisation (PAR) as PANet and SSL-ALPNet compute it: the query's hard prediction at
feature resolution gives query prototypes that segment each support back. Subclasses only say how
a class's prototypes are made (`class_prototypes`) and, optionally, how the query features are
adapted to the support (`adapt_query`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, repeat

from models.prototypes import DEFAULT_SCORE_SCALE, combine_class_scores, cosine_scores

N_CLASSES = 2  # background, foreground
FOREGROUND = 1


@dataclass
class FewShotOutput:
    """logits (B, 2, H, W); alignment_logits (B, S, 2, H, W) or None; alignment_counted (B,) bool
    or None: False for an episode whose alignment loss the model's original skips; scorable (B,)
    bool or None (every episode): False for an episode the model's original cannot score at all
    (`FewShotSegmenter.needs_background_prototype`), which its training skips."""

    logits: torch.Tensor
    alignment_logits: torch.Tensor | None = None
    alignment_counted: torch.Tensor | None = None
    scorable: torch.Tensor | None = None


@dataclass
class ClassPrototypes:
    """Prototypes of both classes: background / foreground (B, P, C) with validity (B, P)."""

    background: torch.Tensor
    background_valid: torch.Tensor
    foreground: torch.Tensor
    foreground_valid: torch.Tensor

    def map_tensors(self, transform) -> "ClassPrototypes":
        """A copy with `transform` applied to every tensor field (each (B, ...))."""
        return dataclasses.replace(self, **{
            field.name: transform(value)
            for field in dataclasses.fields(self)
            if isinstance(value := getattr(self, field.name), torch.Tensor)
        })


class FewShotSegmenter(nn.Module):
    """Base class: encoder + prototype scoring + PAR; see the module docstring."""

    # PANet skips the alignment loss of an episode whose query has no predicted foreground (its
    # `skip_ways`); SSL-ALPNet computes it anyway (its FIXME: "a positive class must be there")
    skips_alignment_without_foreground = False
    # SSL-ALPNet's background is local prototypes only ("gridconv"): an episode whose background has
    # none makes its convolution with zero filters raise, and its training.py skips the episode
    # (docs/METHOD.md, "Where this project departs from the originals"); here such a class scores 0
    # and the episode is reported not `scorable`, for the training loop to decide
    needs_background_prototype = False

    def __init__(
        self, encoder: nn.Module, score_scale: float = DEFAULT_SCORE_SCALE, prototype_combination: str = "softmax"
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.score_scale = score_scale
        self.prototype_combination = prototype_combination

    def class_prototypes(self, features: torch.Tensor, masks: torch.Tensor) -> ClassPrototypes:
        """features (B, S, C, h, w), foreground masks (B, S, H', W') soft, at image or feature
        resolution -> ClassPrototypes (B, P, C)."""
        raise NotImplementedError

    def adapt_query(
        self,
        query_features: torch.Tensor,
        support_features: torch.Tensor,
        prototypes: ClassPrototypes,
    ) -> torch.Tensor:
        """query_features (B, C, h, w), support_features (B|1, S, C, h, w), prototypes of the support
        batch -> (B, C, h, w); the identity unless a model overrides it."""
        return query_features

    def score(self, query_features: torch.Tensor, prototypes: ClassPrototypes) -> torch.Tensor:
        """query_features (B, C, h, w), prototypes (B, P, C) -> logits (B, 2, h, w), background then foreground."""
        class_maps = []
        for class_prototypes, valid in (
            (prototypes.background, prototypes.background_valid),
            (prototypes.foreground, prototypes.foreground_valid),
        ):
            scores = cosine_scores(query_features, class_prototypes, valid, self.score_scale)
            class_maps.append(combine_class_scores(scores, valid, self.prototype_combination))
        return torch.stack(class_maps, dim=1)

    def scorable(self, prototypes: ClassPrototypes) -> torch.Tensor | None:
        """prototypes (B, P, C) -> (B,) bool: whether the model's original can score each episode
        (False where the background has no valid prototype), for a model that
        `needs_background_prototype`; None (every episode) for the others."""
        return prototypes.background_valid.any(dim=1) if self.needs_background_prototype else None

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
        -> FewShotOutput(logits (B, 2, H, W), alignment_logits (B, S, 2, H, W) | None,
        alignment_counted (B,) | None, scorable (B,) | None: of the support's prototypes and, with
        the alignment branch, of the query prototypes it segments the support with)."""
        _check_episode(support_images, support_masks, query_images)
        batch = query_images.shape[0]
        image_size = query_images.shape[-2:]
        support_features, query_features = self.encode(support_images, query_images)
        prototypes = self.class_prototypes(support_features, support_masks.to(support_features.device))
        adapted = self.adapt_query(query_features, support_features, prototypes)
        shared = prototypes.map_tensors(lambda tensor: tensor.expand(batch, *tensor.shape[1:]))
        feature_logits = self.score(adapted, shared)  # (B, 2, h, w)
        output = FewShotOutput(logits=_upsample(feature_logits, image_size), scorable=self.scorable(shared))
        if return_alignment:
            support_features = support_features.expand(batch, *support_features.shape[1:])
            output.alignment_logits, output.alignment_counted, alignment_scorable = self.align(
                query_features, feature_logits, support_features, image_size)
            if output.scorable is not None:
                output.scorable = output.scorable & alignment_scorable
        return output

    def align(
        self, query_features: torch.Tensor, feature_logits: torch.Tensor, support_features: torch.Tensor, image_size
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """PAR: query_features (B, C, h, w) as encoded, feature_logits (B, 2, h, w), support_features
        (B, S, C, h, w) -> alignment logits (B, S, 2, H, W), counted (B,) bool, scorable (B,) bool or
        None (`scorable` of the query prototypes: SSL-ALPNet's alignment fails on a predicted
        background without a local prototype as its forward pass does on the support's).

        The query mask is the argmax of the feature-resolution logits (PANet and SSL-ALPNet pass
        `pred` before upsampling), so the query prototypes pool hard masks at feature resolution.
        """
        shots = support_features.shape[1]
        predicted = (feature_logits.argmax(dim=1) == FOREGROUND).float()  # (B, h, w)
        query_prototypes = self.class_prototypes(query_features.unsqueeze(1), predicted.unsqueeze(1))
        repeated = query_prototypes.map_tensors(lambda tensor: repeat(tensor, "b ... -> (b s) ...", s=shots))
        support_logits = self.score(rearrange(support_features, "b s c h w -> (b s) c h w"), repeated)
        alignment = rearrange(_upsample(support_logits, image_size), "(b s) k h w -> b s k h w", s=shots)
        counted = torch.ones(predicted.shape[0], dtype=torch.bool, device=predicted.device)
        if self.skips_alignment_without_foreground:
            counted = predicted.flatten(1).any(dim=1)
        return alignment, counted, self.scorable(query_prototypes)


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
