"""KnowSAM's adapters in SAM's image encoder and mask decoder (taozh2017/KnowSAM
`Model/ImageEncoder/vit/adapter_block.py`, `Model/common/two_way_transformer.py`,
`Model/common/adapter.py`), around the blocks of the `segment-anything` package.

An `Adapter` is a bottleneck MLP (D -> D/4 -> D, GELU), with or without a skip connection. Each
wrapper takes a package block's own layers (so that their parameter names and a SAM checkpoint's
agree) and adds KnowSAM's adapters:

- `AdapterBlock` (a ViT block of the image encoder, KnowSAM's `AdapterBlock` in 2D):
      x = x + space_adapter(attention(norm1(x)))          (windows are cut before norm1, as KnowSAM)
      x = x + mlp(norm2(x)) + 0.5 mlp_adapter(norm2(x))
- `AdapterTwoWayBlock` (a block of the mask decoder's two-way transformer): one space adapter,
  shared, after each of its three attentions, and an MLP adapter beside its MLP; its
  self-attention is KnowSAM's, not SAM's: from the second block on the query position encoding is
  added to the queries themselves (values and residual included), and the first block keeps a
  residual around its self-attention, which SAM's has not;
- `AdapterTwoWayTransformer` (the decoder's transformer): its space adapter after the final
  token-to-image attention and again after the final norm, as KnowSAM applies it twice.

The space adapters have a skip connection, the MLP adapters none. With SAM's weights loaded, the
adapters are what trains in SAM besides the prompts (docs/METHOD.md).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange
from segment_anything.modeling import MaskDecoder, TwoWayTransformer
from segment_anything.modeling.image_encoder import Block, ImageEncoderViT, window_partition, window_unpartition
from segment_anything.modeling.transformer import TwoWayAttentionBlock

ADAPTER_RATIO = 0.25  # Adapter(mlp_ratio=0.25): the bottleneck's width over the block's
MLP_ADAPTER_SCALE = 0.5  # AdapterBlock(scale=0.5): weight of the MLP adapter beside the block's MLP


class Adapter(nn.Module):
    """(..., D) -> (..., D): D -> D/4 -> D with GELU, plus the input when `skip`."""

    def __init__(self, width: int, skip: bool) -> None:
        super().__init__()
        self.skip = skip
        self.down = nn.Linear(width, int(width * ADAPTER_RATIO))
        self.activation = nn.GELU()
        self.up = nn.Linear(int(width * ADAPTER_RATIO), width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., D)"""
        adapted = self.up(self.activation(self.down(tokens)))
        return tokens + adapted if self.skip else adapted


class AdapterBlock(nn.Module):
    """A package ViT block's layers with a space adapter after attention and an MLP adapter beside the MLP."""

    def __init__(self, block: Block) -> None:
        super().__init__()
        width = block.norm1.normalized_shape[0]
        self.norm1, self.attn, self.norm2, self.mlp = block.norm1, block.attn, block.norm2, block.mlp
        self.window_size = block.window_size
        self.space_adapter = Adapter(width, skip=True)
        self.mlp_adapter = Adapter(width, skip=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, h, w, D) -> (B, h, w, D)"""
        attended = tokens
        if self.window_size > 0:  # KnowSAM's order: the padding of the windows is normalised too
            attended, padded_size = window_partition(attended, self.window_size)
        attended = self.space_adapter(self.attn(self.norm1(attended)))
        if self.window_size > 0:
            attended = window_unpartition(attended, self.window_size, padded_size, tokens.shape[1:3])
        tokens = tokens + attended
        normalised = self.norm2(tokens)
        return tokens + self.mlp(normalised) + MLP_ADAPTER_SCALE * self.mlp_adapter(normalised)


class AdapterTwoWayBlock(nn.Module):
    """A package two-way attention block's layers with KnowSAM's adapters and self-attention."""

    def __init__(self, block: TwoWayAttentionBlock) -> None:
        super().__init__()
        width = block.norm1.normalized_shape[0]
        self.self_attn, self.norm1 = block.self_attn, block.norm1
        self.cross_attn_token_to_image, self.norm2 = block.cross_attn_token_to_image, block.norm2
        self.mlp, self.norm3 = block.mlp, block.norm3
        self.cross_attn_image_to_token, self.norm4 = block.cross_attn_image_to_token, block.norm4
        self.skip_first_layer_pe = block.skip_first_layer_pe
        self.space_adapter = Adapter(width, skip=True)
        self.mlp_adapter = Adapter(width, skip=False)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """queries and query_pe (B, N, C), keys and key_pe (B, hw, C) -> queries (B, N, C), keys (B, hw, C)"""
        if not self.skip_first_layer_pe:
            queries = queries + query_pe
        queries = self.norm1(queries + self.space_adapter(self.self_attn(q=queries, k=queries, v=queries)))
        attended = self.cross_attn_token_to_image(q=queries + query_pe, k=keys + key_pe, v=keys)
        queries = self.norm2(queries + self.space_adapter(attended))
        queries = self.norm3(queries + self.mlp(queries) + MLP_ADAPTER_SCALE * self.mlp_adapter(queries))
        attended = self.cross_attn_image_to_token(q=keys + key_pe, k=queries + query_pe, v=queries)
        return queries, self.norm4(keys + self.space_adapter(attended))


class AdapterTwoWayTransformer(nn.Module):
    """A package two-way transformer's layers (in AdapterTwoWayBlocks) with KnowSAM's final space adapter."""

    def __init__(self, transformer: TwoWayTransformer) -> None:
        super().__init__()
        self.layers = nn.ModuleList(AdapterTwoWayBlock(block) for block in transformer.layers)
        self.final_attn_token_to_image = transformer.final_attn_token_to_image
        self.norm_final_attn = transformer.norm_final_attn
        self.space_adapter = Adapter(transformer.embedding_dim, skip=True)

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor,
                point_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding and image_pe (B, C, h, w), point_embedding (B, N, C) -> queries (B, N, C),
        keys (B, hw, C)"""
        keys = rearrange(image_embedding, "b c h w -> b (h w) c")
        key_pe = rearrange(image_pe, "b c h w -> b (h w) c")
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        attended = self.final_attn_token_to_image(q=queries + point_embedding, k=keys + key_pe, v=keys)
        return self.space_adapter(self.norm_final_attn(queries + self.space_adapter(attended))), keys


def add_adapters(encoder: ImageEncoderViT, decoder: MaskDecoder) -> None:
    """Wrap every block of a package image encoder in an AdapterBlock, and the mask decoder's
    transformer in an AdapterTwoWayTransformer (in place)."""
    encoder.blocks = nn.ModuleList(AdapterBlock(block) for block in encoder.blocks)
    decoder.transformer = AdapterTwoWayTransformer(decoder.transformer)


def adapter_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The parameters of every Adapter inside `module`."""
    return [parameter for adapter in module.modules() if isinstance(adapter, Adapter)
            for parameter in adapter.parameters()]
