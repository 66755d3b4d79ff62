"""The prototype toolbox shared by PANet, SSL-ALPNet and PSMnet (docs/METHOD.md, "Prototypes").

- mask resizing to the feature grid (bilinear, soft masks in [0, 1]), as SSL-ALPNet and PSMnet do;
- masked average pooling (PANet, Wang et al. 2019, eq. 1);
- local prototypes of SSL-ALPNet (Ouyang et al. 2020, section 3.3): window averages of the
  features, kept where the window's mean mask value exceeds a coverage threshold;
- cosine scoring x 20 and the per-class combination of several prototypes' similarity maps
  (SSL-ALPNet's softmax-weighted sum, or max).

Everything is vectorised over batch, shots and prototypes. Prototypes come with a validity mask
(B, P) so that classes with different numbers of prototypes stack into one tensor; invalid
prototypes never influence a score. A class without any valid prototype scores 0 everywhere. For a
zero prototype (the masked average under an empty mask) that is what the originals compute too
(cosine 0). For an empty set of local prototypes it is not: SSL-ALPNet scores its prototypes with a
convolution whose filters are the prototypes, and a convolution with zero filters raises, so the
original has no score for such a class; its training.py skips the episode (the project's default,
experiment/training_step.py) and its validation.py would stop. The arithmetic runs in float32 even
under autocast, because masked sums over many pixels and cosine similarities lose too much
precision in fp16 / bf16.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from einops import rearrange

# guards divisions by a mask area (the originals' "+ 1e-5")
EPS = 1e-5
# smallest norm a vector is divided by in cosine scoring (SSL-ALPNet's safe_norm)
NORM_EPS = 1e-4
# the multiplier of cosine similarity in PANet / SSL-ALPNet scoring
DEFAULT_SCORE_SCALE = 20.0
# SSL-ALPNet: 4 x 4 feature windows in training (32 x 32 features / proto_grid 8), 2 x 2 at test
# (val_wsize), kept when their mask coverage exceeds 0.95
DEFAULT_LOCAL_WINDOW = 4
DEFAULT_TEST_LOCAL_WINDOW = 2
DEFAULT_LOCAL_COVERAGE = 0.95
# score of a class that has no valid prototype (see the module docstring)
EMPTY_CLASS_SCORE = 0.0
COMBINATIONS = ("softmax", "max")


@contextlib.contextmanager
def full_precision(tensor: torch.Tensor) -> Iterator[None]:
    """Disable autocast on the device of `tensor` inside the block."""
    with torch.autocast(device_type=tensor.device.type, enabled=False):
        yield


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Soft masks at feature size: (..., H, W) -> (..., h, w), values in [0, 1].

    Plain bilinear (no antialiasing), as SSL-ALPNet does: each feature cell takes the mask value
    interpolated at its centre, so masks stay sharp and become soft only along their edges.
    Masks already at `size` are returned as they are.
    """
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks.float()
    lead = masks.shape[:-2]
    flat = masks.reshape(-1, 1, *masks.shape[-2:]).float()
    resized = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return resized.clamp(0.0, 1.0).reshape(*lead, *size)


def masked_average_pool(
    features: torch.Tensor, masks: torch.Tensor, min_area: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked average of features under K soft masks per image.

    features (B, S, C, h, w), masks (B, S, K, h, w) -> prototypes (B, S, K, C), valid (B, S, K).
    A prototype is valid when its mask area (in feature pixels) exceeds `min_area`; an empty mask
    gives a zero prototype (no NaN) flagged invalid.
    """
    with full_precision(features):
        features, masks = features.float(), masks.float()
        sums = torch.einsum("bschw,bskhw->bskc", features, masks)
        areas = masks.sum(dim=(-2, -1))
        prototypes = sums / (areas.unsqueeze(-1) + EPS)
    return prototypes, areas > max(min_area, EPS)


def window_coverage(masks: torch.Tensor, window: int) -> torch.Tensor:
    """Mean mask value of every non-overlapping window: (B, S, h, w) -> (B, S, h // window, w // window)."""
    batch = masks.shape[0]
    pooled = F.avg_pool2d(rearrange(masks.float(), "b s h w -> (b s) 1 h w"), window, stride=window)
    return rearrange(pooled, "(b s) 1 y x -> b s y x", b=batch)


def local_prototypes(
    features: torch.Tensor,
    masks: torch.Tensor,
    window: int = DEFAULT_LOCAL_WINDOW,
    coverage: float = DEFAULT_LOCAL_COVERAGE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SSL-ALPNet's local prototypes of one class, all shots pooled together.

    features (B, S, C, h, w), masks (B, S, h, w) -> prototypes (B, P, C), valid (B, P) with
    P = S * (h // window) * (w // window): the window averages of the features, valid where the
    window's mean mask value is strictly above `coverage` (SSL-ALPNet's `sup_y_g > thresh`).
    """
    batch = features.shape[0]
    with full_precision(features):
        pooled = F.avg_pool2d(rearrange(features.float(), "b s c h w -> (b s) c h w"), window, stride=window)
        prototypes = rearrange(pooled, "(b s) c y x -> b (s y x) c", b=batch)
    valid = rearrange(window_coverage(masks, window), "b s y x -> b (s y x)") > coverage
    return prototypes, valid


def cosine_scores(
    query_features: torch.Tensor,
    prototypes: torch.Tensor,
    valid: torch.Tensor,
    scale: float = DEFAULT_SCORE_SCALE,
) -> torch.Tensor:
    """Scaled cosine similarity of every query feature to every prototype.

    query_features (B, C, h, w), prototypes (B, P, C), valid (B, P) -> scores (B, P, h, w);
    scores of invalid prototypes are 0 (use `combine_class_scores` to exclude them). A zero
    prototype scores 0 (vectors are divided by max(norm, NORM_EPS), as SSL-ALPNet's safe_norm).
    """
    with full_precision(query_features):
        query = F.normalize(query_features.float(), dim=1, eps=NORM_EPS)
        keys = F.normalize(prototypes.float(), dim=-1, eps=NORM_EPS)
        scores = torch.einsum("bchw,bpc->bphw", query, keys) * scale
    return scores * valid[:, :, None, None].to(scores.dtype)


def combine_class_scores(
    scores: torch.Tensor,
    valid: torch.Tensor,
    mode: str = "softmax",
    empty_score: float = EMPTY_CLASS_SCORE,
) -> torch.Tensor:
    """One class's score map from its prototypes' score maps.

    scores (B, P, h, w), valid (B, P) -> (B, h, w). "softmax": sum over prototypes of
    softmax(scores) * scores (SSL-ALPNet); "max": the best prototype. Invalid prototypes are
    excluded; a sample without any valid prototype gets `empty_score` (0; see the module docstring).
    """
    if mode not in COMBINATIONS:
        raise ValueError(f"prototype combination must be one of {COMBINATIONS}, got {mode!r}")
    keep = valid[:, :, None, None]
    lowest = torch.finfo(scores.dtype).min
    masked = scores.masked_fill(~keep, lowest)
    if mode == "softmax":
        combined = (torch.softmax(masked, dim=1) * scores.masked_fill(~keep, 0.0)).sum(dim=1)
    else:
        combined = masked.amax(dim=1)
    has_prototype = valid.any(dim=1)[:, None, None]
    return torch.where(has_prototype, combined, torch.full_like(combined, empty_score))
