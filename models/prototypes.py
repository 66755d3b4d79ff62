"""The prototype toolbox shared by PANet, SSL-ALPNet and PSMnet (PSMNET.md steps 2, 3 and 5).

- mask resizing to the feature grid (PSMNET.md step 2, soft masks in [0, 1]);
- masked average pooling (PANet, Wang et al. 2019, eq. 1);
- adaptive local prototype pooling (SSL-ALPNet, Ouyang et al. 2020, section 3.3);
- cosine scoring x 20 and the per-class combination of several prototypes' similarity maps
  (SSL-ALPNet's softmax-weighted sum, or max).

Everything is vectorised over batch, shots and prototypes. Prototypes come with a validity mask
(B, P) so that classes with different numbers of prototypes stack into one tensor; invalid
prototypes never influence a score. The arithmetic runs in float32 even under autocast, because
masked sums over many pixels and cosine similarities lose too much precision in fp16 / bf16.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from einops import rearrange

# guards divisions by a mask area and the norm in cosine similarity
EPS = 1e-5
# the multiplier of cosine similarity in PANet / SSL-ALPNet scoring
DEFAULT_SCORE_SCALE = 20.0
# SSL-ALPNet: 4 x 4 feature windows (32 x 32 features / proto_grid 8), kept at >= 95% coverage
DEFAULT_LOCAL_WINDOW = 4
DEFAULT_LOCAL_COVERAGE = 0.95
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
    """
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


def local_average_pool(
    features: torch.Tensor,
    masks: torch.Tensor,
    window: int = DEFAULT_LOCAL_WINDOW,
    coverage: float = DEFAULT_LOCAL_COVERAGE,
    include_global: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SSL-ALPNet adaptive local prototypes of one class, all shots pooled together.

    features (B, S, C, h, w), masks (B, S, h, w) -> prototypes (B, P, C), valid (B, P) with
    P = S * (h // window) * (w // window) + S. The first prototypes are the window averages of
    the features (valid where the window's mean mask >= `coverage`), the last S the per-shot
    global masked averages: valid when `include_global`, or as the fallback of a sample whose
    mask covers no window well enough (as SSL-ALPNet does), and only for a non-empty mask.
    """
    batch, shots = features.shape[:2]
    with full_precision(features):
        features, masks = features.float(), masks.float()
        pooled = F.avg_pool2d(rearrange(features, "b s c h w -> (b s) c h w"), window, stride=window)
        coverages = F.avg_pool2d(rearrange(masks, "b s h w -> (b s) 1 h w"), window, stride=window)
        local = rearrange(pooled, "(b s) c y x -> b (s y x) c", b=batch)
        local_valid = rearrange(coverages, "(b s) 1 y x -> b (s y x)", b=batch) >= coverage
        global_prototypes, global_valid = masked_average_pool(features, masks.unsqueeze(2))
    global_valid = global_valid.squeeze(2)
    if not include_global:
        global_valid = global_valid & ~local_valid.any(dim=1, keepdim=True)
    prototypes = torch.cat([local, global_prototypes.squeeze(2)], dim=1)
    return prototypes, torch.cat([local_valid, global_valid], dim=1)


def cosine_scores(
    query_features: torch.Tensor,
    prototypes: torch.Tensor,
    valid: torch.Tensor,
    scale: float = DEFAULT_SCORE_SCALE,
) -> torch.Tensor:
    """Scaled cosine similarity of every query feature to every prototype.

    query_features (B, C, h, w), prototypes (B, P, C), valid (B, P) -> scores (B, P, h, w);
    scores of invalid prototypes are 0 (use `combine_class_scores` to exclude them).
    """
    with full_precision(query_features):
        query = F.normalize(query_features.float(), dim=1, eps=EPS)
        keys = F.normalize(prototypes.float(), dim=-1, eps=EPS)
        scores = torch.einsum("bchw,bpc->bphw", query, keys) * scale
    return scores * valid[:, :, None, None].to(scores.dtype)


def combine_class_scores(
    scores: torch.Tensor,
    valid: torch.Tensor,
    mode: str = "softmax",
    empty_score: float = -DEFAULT_SCORE_SCALE,
) -> torch.Tensor:
    """One class's score map from its prototypes' score maps.

    scores (B, P, h, w), valid (B, P) -> (B, h, w). "softmax": sum over prototypes of
    softmax(scores) * scores (SSL-ALPNet); "max": the best prototype. Invalid prototypes are
    excluded; a sample without any valid prototype gets `empty_score` (default: the lowest
    possible scaled cosine), so an empty class is never predicted and never NaN.
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
