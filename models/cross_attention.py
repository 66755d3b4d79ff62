"""Multi-level Cross Attention Module, MCAM (PSMnet paper section 3.3; docs/METHOD.md, "MCAM").

Three residual blocks, chained global -> local -> pixel, transfer the support foreground to the
query features. Each level has a guide map on the support grid, zero outside the foreground
(soft masks at feature resolution): level 1 the global foreground prototype at every foreground
position, level 2 the most similar foreground split prototype at each position, level 3 the
masked support features. Every block's output projection W is zero-initialised, so the module
starts as the identity.

Two directions (`MCAM_DIRECTIONS`):

- "guide_to_query" (default, the original code: PSMnet's models/backbone/FEM.py `crm`, called as
  `crm(x=query, y=guide)`): a non-local block whose attention queries come from the guide map,
  keys and values from the query features, weights divided by the number N of query positions,
  no softmax, nothing masked; the result lies on the guide's grid and is added to the query
  features at the same positions:  z = x + W(theta(y) [phi(x)^T g(x)] / N)
  with theta, phi, g, W 1x1 convolutions (with biases, so a zero guide still gives theta's bias).
  Each query position p is updated from the guide at the same position p of the support: the
  method assumes roughly aligned support and query slices. With k shots, one update per shot,
  averaged.
- "query_to_support" (an alternative kept for comparison, not the original): scaled dot-product
  softmax attention from every query position to the support foreground positions of all shots
  (a key padding mask hides the rest; a support without foreground leaves the query unchanged).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from models.prototypes import NORM_EPS

GUIDE_TO_QUERY = "guide_to_query"
QUERY_TO_SUPPORT = "query_to_support"
MCAM_DIRECTIONS = (GUIDE_TO_QUERY, QUERY_TO_SUPPORT)
# query_to_support: soft support-mask value from which a position is a foreground key
DEFAULT_KEY_THRESHOLD = 0.5
N_LEVELS = 3


def _zero_initialised(layer: nn.Module) -> nn.Module:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class GuideToQueryBlock(nn.Module):
    """The original non-local block: attention queries from the guide, keys and values from the query."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.guide_projection = nn.Conv2d(channels, channels, kernel_size=1)  # theta
        self.key_projection = nn.Conv2d(channels, channels, kernel_size=1)  # phi
        self.value_projection = nn.Conv2d(channels, channels, kernel_size=1)  # g
        self.output_projection = _zero_initialised(nn.Conv2d(channels, channels, kernel_size=1))  # W

    def forward(
        self, query_features: torch.Tensor, guides: torch.Tensor, foreground_masks: torch.Tensor
    ) -> torch.Tensor:
        """query_features (B, C, h, w), guides (B|1, S, C, h, w) on the query's grid,
        foreground_masks (B|1, S, h, w) (unused: nothing is masked) -> (B, C, h, w)."""
        batch, _, height, width = query_features.shape
        if tuple(guides.shape[-2:]) != (height, width):
            raise ValueError(f"guide maps {tuple(guides.shape)} must lie on the query's grid {(height, width)}")
        keys = rearrange(self.key_projection(query_features), "b c h w -> b c (h w)")
        values = rearrange(self.value_projection(query_features), "b c h w -> b (h w) c")
        # (theta(y)^T phi(x) / N) g(x) == theta(y)^T (phi(x) g(x)^T / N): the same arithmetic as
        # the original's N x N weight matrix, with a C x C one
        key_values = keys @ values / (height * width)  # (B, C, C)
        guide_queries = self.guide_projection(rearrange(guides, "b s c h w -> (b s) c h w"))
        guide_queries = rearrange(guide_queries, "(b s) c h w -> b s (h w) c", b=guides.shape[0])
        attended = (guide_queries @ key_values.unsqueeze(1)).mean(dim=1)  # (B, hw, C), mean over shots
        update = self.output_projection(rearrange(attended, "b (h w) c -> b c h w", h=height))
        return query_features + update


class QueryToSupportBlock(nn.Module):
    """Softmax cross attention from the query positions to the support foreground positions."""

    def __init__(self, channels: int, key_threshold: float = DEFAULT_KEY_THRESHOLD) -> None:
        super().__init__()
        self.key_threshold = key_threshold
        self.query_projection = nn.Linear(channels, channels)
        self.key_projection = nn.Linear(channels, channels)
        self.value_projection = nn.Linear(channels, channels)
        self.output_projection = _zero_initialised(nn.Linear(channels, channels))

    def forward(
        self, query_features: torch.Tensor, guides: torch.Tensor, foreground_masks: torch.Tensor
    ) -> torch.Tensor:
        """query_features (B, C, h, w), guides (B|1, S, C, h, w), foreground_masks (B|1, S, h, w)
        -> (B, C, h, w). Support positions below the key threshold are not attended."""
        batch, _, height, width = query_features.shape
        tokens = rearrange(query_features, "b c h w -> b (h w) c")
        guide = rearrange(guides, "b s c h w -> b (s h w) c").expand(batch, -1, -1)
        key_mask = rearrange(foreground_masks >= self.key_threshold, "b s h w -> b (s h w)").expand(batch, -1)
        # attention cost grows with the number of keys: keep only the foreground positions,
        # padded to the largest foreground of the batch (the padding stays masked)
        n_keys = max(int(key_mask.sum(dim=1).max()), 1)
        key_index = torch.argsort(key_mask.to(torch.uint8), dim=1, descending=True, stable=True)[:, :n_keys]
        key_mask = key_mask.gather(1, key_index)
        guide = guide.gather(1, key_index.unsqueeze(-1).expand(-1, -1, guide.shape[-1]))
        has_keys = key_mask.any(dim=1)
        # rows with no valid key would softmax over nothing (NaN): let them see every key, then
        # drop their update below
        attend = key_mask | ~has_keys[:, None]
        attended = F.scaled_dot_product_attention(
            self.query_projection(tokens), self.key_projection(guide), self.value_projection(guide),
            attn_mask=attend[:, None, :])
        update = self.output_projection(attended) * has_keys[:, None, None].to(attended.dtype)
        return rearrange(tokens + update, "b (h w) c -> b c h w", h=height, w=width)


class MultiLevelCrossAttention(nn.Module):
    """Global, local and pixel level cross attention from the support foreground to the query features."""

    def __init__(
        self, channels: int, direction: str = GUIDE_TO_QUERY, key_threshold: float = DEFAULT_KEY_THRESHOLD
    ) -> None:
        super().__init__()
        if direction not in MCAM_DIRECTIONS:
            raise ValueError(f"MCAM direction must be one of {MCAM_DIRECTIONS}, got {direction!r}")
        self.direction = direction
        self.levels = nn.ModuleList([
            GuideToQueryBlock(channels) if direction == GUIDE_TO_QUERY else QueryToSupportBlock(channels, key_threshold)
            for _ in range(N_LEVELS)
        ])

    @staticmethod
    def guide_maps(
        support_features: torch.Tensor,
        foreground_masks: torch.Tensor,
        global_prototypes: torch.Tensor,
        part_prototypes: torch.Tensor,
        part_valid: torch.Tensor,
    ) -> list[torch.Tensor]:
        """The three guide maps, each (B, S, C, h, w), zero outside the support foreground.

        support_features (B, S, C, h, w), foreground_masks (B, S, h, w) soft, global_prototypes
        (B, S, C), part_prototypes (B, S, K, C), part_valid (B, S, K).
        """
        weights = foreground_masks.unsqueeze(2).to(support_features.dtype)
        global_map = global_prototypes[..., None, None].to(weights.dtype) * weights
        unit_features = F.normalize(support_features.float(), dim=2, eps=NORM_EPS)
        unit_parts = F.normalize(part_prototypes.float(), dim=-1, eps=NORM_EPS)
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

        support_features (B|1, S, C, h, w), foreground_masks (B|1, S, h, w) soft, global_prototypes
        (B|1, S, C), part_prototypes (B|1, S, K, C) with part_valid (B|1, S, K); a support batch of
        1 guides every query.
        """
        guides = self.guide_maps(support_features, foreground_masks, global_prototypes, part_prototypes, part_valid)
        for block, guide in zip(self.levels, guides):
            query_features = block(query_features, guide, foreground_masks)
        return query_features
