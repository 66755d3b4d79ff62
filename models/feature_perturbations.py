"""The feature perturbations of MGCC's auxiliary decoders (MGCC arXiv 2305.09447, Sec. 2.2; the
original's `FeatureDropout`, `Dropout` and `FeatureNoise` in `src/network/MGCC.py`, themselves
from cross-consistency training, Ouali et al., CVPR 2020).

Each takes a feature (B, C, h, w) and returns a perturbed one of the same shape; MGCC applies one
kind to every level of the encoder's features before an auxiliary decoder. Randomness comes from
torch's generator (the original draws feature dropout's threshold from NumPy's global state).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

FEATURE_DROPOUT_THRESHOLD = (0.7, 0.9)  # the kept region: attention below U(0.7, 0.9) x its maximum
DROPOUT_RATE = 0.3  # Dropout(x, p=0.3): element-wise, rescaled by 1 / (1 - p)
FEATURE_NOISE_RANGE = 0.3  # FeatureNoise(uniform_range=0.3): x + x * U(-0.3, 0.3)


def feature_dropout(features: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, h, w): zero the positions whose channel-mean activation reaches a
    threshold, a fraction U(0.7, 0.9) (one draw for the batch) of each image's largest one; the
    most activated region is dropped and the decoder must segment from the rest."""
    attention = features.mean(dim=1, keepdim=True)  # (B, 1, h, w)
    fraction = torch.empty((), device=features.device).uniform_(*FEATURE_DROPOUT_THRESHOLD)
    threshold = attention.flatten(1).amax(dim=1).view(-1, 1, 1, 1) * fraction  # (B, 1, 1, 1)
    return features * (attention < threshold).to(features.dtype)


def dropout(features: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, h, w): element-wise dropout with rate DROPOUT_RATE (always on: the
    original calls F.dropout with its default training=True, and only while training)."""
    return F.dropout(features, DROPOUT_RATE, training=True)


def feature_noise(features: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, h, w): x + x * n, n ~ U(-0.3, 0.3) of shape (C, h, w), one draw shared
    by the batch (the original samples x.shape[1:])."""
    noise = torch.empty(features.shape[1:], device=features.device, dtype=features.dtype)
    noise.uniform_(-FEATURE_NOISE_RANGE, FEATURE_NOISE_RANGE)
    return features + features * noise.unsqueeze(0)
