"""Multi-level Cross Attention Module, MCAM (PSMnet paper section 3.3; PSMNET.md pipeline step 4).

Query positions attend to support "guide map" positions in three residual cross-attention blocks:
level 1 the global foreground prototype at every support foreground position, level 2 the
most similar foreground split prototype at each such position, level 3 the masked support
features. Only support foreground positions are keys (a key padding mask hides the rest); the
guide maps of all shots are concatenated along positions. Each block's output projection is
zero-initialised, so the module starts as the identity; a support without foreground leaves
the query features unchanged (no attendable key), without NaN.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from models.prototypes import EPS

ATTENTION_SCALINGS = ("softmax", "mean")
# soft support-mask value from which a position is a foreground key
DEFAULT_KEY_THRESHOLD = 0.5
N_LEVELS = 3


class CrossAttentionBlock(nn.Module):
    """Residual single-head cross attention with a zero-initialised output projection.

    scaling "softmax": softmax(q k^T / sqrt(C)) v; "mean": the original PSMnet code's
    unnormalised (q k^T / N) v with N the number of attendable keys.
    """

    def __init__(self, channels: int, scaling: str = "softmax") -> None:
        super().__init__()
        if scaling not in ATTENTION_SCALINGS:
            raise ValueError(f"attention scaling must be one of {ATTENTION_SCALINGS}, got {scaling!r}")
        self.scaling = scaling
        self.query_projection = nn.Linear(channels, channels)
        self.key_projection = nn.Linear(channels, channels)
        self.value_projection = nn.Linear(channels, channels)
        self.output_projection = nn.Linear(channels, channels)
        nn.init.zeros_(self.output_projection.weight)
        nn.init.zeros_(self.output_projection.bias)

    def forward(self, tokens: torch.Tensor, guide: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, C), guide (B, M, C), key_mask (B, M) bool (True = attendable) -> (B, N, C).

        Samples without any attendable key get their tokens back unchanged.
        """
        has_keys = key_mask.any(dim=1)
        queries = self.query_projection(tokens)
        keys = self.key_projection(guide)
        values = self.value_projection(guide)
        if self.scaling == "softmax":
            # rows with no valid key would softmax over nothing (NaN): let them see every key,
            # then drop their update below
            attend = key_mask | ~has_keys[:, None]
            attended = F.scaled_dot_product_attention(queries, keys, values, attn_mask=attend[:, None, :])
        else:
            weights = queries @ keys.transpose(1, 2)
            weights = weights * key_mask[:, None, :].to(weights.dtype)
            n_keys = key_mask.sum(dim=1).clamp(min=1).to(weights.dtype)
            attended = (weights @ values) / n_keys[:, None, None]
        update = self.output_projection(attended)
        return tokens + update * has_keys[:, None, None].to(update.dtype)


class MultiLevelCrossAttention(nn.Module):
    """Global, local and pixel level cross attention from support foreground to query features."""

    def __init__(
        self, channels: int, scaling: str = "softmax", key_threshold: float = DEFAULT_KEY_THRESHOLD
    ) -> None:
        super().__init__()
        self.key_threshold = key_threshold
        self.levels = nn.ModuleList([CrossAttentionBlock(channels, scaling) for _ in range(N_LEVELS)])

    @staticmethod
    def guide_maps(
        support_features: torch.Tensor,
        foreground_masks: torch.Tensor,
        global_prototypes: torch.Tensor,
        part_prototypes: torch.Tensor,
        part_valid: torch.Tensor,
    ) -> list[torch.Tensor]:
        """The three guide maps, each (B, S, C, h, w), zero outside the support foreground.

        support_features (B, S, C, h, w), foreground_masks (B, S, h, w), global_prototypes
        (B, S, C), part_prototypes (B, S, K, C), part_valid (B, S, K).
        """
        weights = foreground_masks.unsqueeze(2).to(support_features.dtype)
        global_map = global_prototypes[..., None, None].to(weights.dtype) * weights
        unit_features = F.normalize(support_features.float(), dim=2, eps=EPS)
        unit_parts = F.normalize(part_prototypes.float(), dim=-1, eps=EPS)
        similarity = torch.einsum("bschw,bskc->bskhw", unit_features, unit_parts)
        similarity = similarity.masked_fill(~part_valid[..., None, None], -torch.inf)
        nearest = F.one_hot(similarity.argmax(dim=2), part_prototypes.shape[2]).to(part_prototypes.dtype)
        local_map = torch.einsum("bshwk,bskc->bschw", nearest, part_prototypes).to(weights.dtype) * weights
        pixel_map = support_features * weights
        return [global_map, local_map, pixel_map]

    def forward(
        self,
        query_features: torch.Tensor,
        support_features: torch.Tensor,
        foreground_masks: torch.Tensor,
        global_prototypes: torch.Tensor,
        part_prototypes: torch.Tensor,
        part_valid: torch.Tensor,
    ) -> torch.Tensor:
        """query_features (B, C, h, w) -> (B, C, h, w), guided by the support foreground.

        support_features (B, S, C, h, w), foreground_masks (B, S, h, w) soft, global_prototypes
        (B, S, C), part_prototypes (B, S, K, C) with part_valid (B, S, K).
        """
        height, width = query_features.shape[-2:]
        tokens = rearrange(query_features, "b c h w -> b (h w) c")
        key_mask = rearrange(foreground_masks >= self.key_threshold, "b s h w -> b (s h w)")
        # attention cost grows with the number of keys: keep only the foreground positions,
        # padded to the largest foreground of the batch (the padding stays masked)
        n_keys = max(int(key_mask.sum(dim=1).max()), 1)
        key_index = torch.argsort(key_mask.to(torch.uint8), dim=1, descending=True, stable=True)[:, :n_keys]
        key_mask = key_mask.gather(1, key_index)
        guides = self.guide_maps(support_features, foreground_masks, global_prototypes, part_prototypes, part_valid)
        for block, guide in zip(self.levels, guides):
            guide = rearrange(guide, "b s c h w -> b (s h w) c")
            guide = guide.gather(1, key_index.unsqueeze(-1).expand(-1, -1, guide.shape[-1]))
            tokens = block(tokens, guide, key_mask)
        return rearrange(tokens, "b (h w) c -> b c h w", h=height, w=width)
