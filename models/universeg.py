"""UniverSeg (Butoi et al., ICCV 2023; docs/METHOD.md "UniverSeg"): in-context segmentation by CrossBlocks.

No encoder is shared with the prototype models: a U-Net-like encoder-decoder whose every stage is a
CrossBlock. A CrossBlock takes the query's feature map u (B, Cu, h, w) and one feature map per
support pair V = {v_i} (B, S, Cv, h, w) and

    z_i = CrossConv(u, v_i) = Conv3x3(u || v_i)        (the same weights for every i)
    u'  = LeakyReLU(Conv3x3(mean_i z_i))              (the query's new features)
    v'_i = LeakyReLU(Conv3x3(z_i))                    (each support pair's new features)

as the released code computes it (its CrossConv has no nonlinearity of its own; the paper's
equation applies one to z_i). Because the weights are shared over i and the query only sees the
mean over the support set, the output does not depend on the order of the support pairs and any
support size S >= 1 works.

The network sees one grey channel per image (the first of the project's channel-tiled inputs) and
each support pair as (image, mask), 2 channels. Encoder stages are separated by 2 x 2 max pooling
of query and supports alike; each decoder stage upsamples both (bilinear, corners aligned as the
released code's UpsamplingBilinear2d), concatenates the encoder's features of the same scale and
applies a CrossBlock; a 1 x 1 convolution of the last query features gives the foreground logit z
(the paper's sigmoid output is sigmoid(z)). The project's two-class interface gets
logits = [-z / 2, z / 2]: their softmax is (1 - sigmoid(z), sigmoid(z)), so cross-entropy on them is
the binary cross-entropy of sigmoid(z) and their argmax is the foreground where sigmoid(z) > 0.5.
Weights are initialised as the released code does: Kaiming normal (LeakyReLU gain where a LeakyReLU
follows, linear gain otherwise), zero biases.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, repeat

from models.base import FewShotOutput

PAPER_ENCODER_WIDTHS = (64, 64, 64, 64)  # released UniverSeg v1: four encoder CrossBlocks of 64 channels
PAPER_DECODER_WIDTHS = (64, 64, 64)  # ... and three decoder CrossBlocks (one per skip connection)
QUERY_CHANNELS = 1  # one grey channel per query image
SUPPORT_CHANNELS = 2  # a support pair: grey image and foreground mask
KERNEL_SIZE = 3
POOLING = 2  # each encoder stage halves the resolution
LEAKY_SLOPE = 0.01  # torch's LeakyReLU default, as the released code


@dataclass(frozen=True)
class UniverSegOptions:
    encoder_widths: tuple[int, ...] = PAPER_ENCODER_WIDTHS  # channels of each encoder CrossBlock
    decoder_widths: tuple[int, ...] = PAPER_DECODER_WIDTHS  # channels of each decoder CrossBlock (one fewer)

    def __post_init__(self) -> None:
        # a Sacred config gives lists: stored as tuples so that the options stay hashable and frozen
        object.__setattr__(self, "encoder_widths", tuple(self.encoder_widths))
        object.__setattr__(self, "decoder_widths", tuple(self.decoder_widths))
        if not self.encoder_widths or any(width < 1 for width in self.encoder_widths + self.decoder_widths):
            raise ValueError(f"encoder_widths must be non-empty positive channel counts, got {self.encoder_widths}, "
                             f"decoder_widths {self.decoder_widths}")
        if len(self.decoder_widths) != len(self.encoder_widths) - 1:
            raise ValueError(f"decoder_widths needs one width per skip connection ({len(self.encoder_widths) - 1} "
                             f"for {len(self.encoder_widths)} encoder stages), got {self.decoder_widths}")

    @property
    def image_size_multiple(self) -> int:
        """Image sides must be multiples of this: the encoder halves them between its stages."""
        return POOLING ** (len(self.encoder_widths) - 1)


def _convolution(in_channels: int, out_channels: int, kernel_size: int, followed_by_leaky_relu: bool) -> nn.Conv2d:
    """A same-padded convolution initialised as the released code: Kaiming normal, zero bias."""
    convolution = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    if followed_by_leaky_relu:
        nn.init.kaiming_normal_(convolution.weight, nonlinearity="leaky_relu")
    else:
        nn.init.kaiming_normal_(convolution.weight, nonlinearity="linear")
    nn.init.zeros_(convolution.bias)
    return convolution


class CrossBlock(nn.Module):
    """One UniverSeg stage: cross-convolution of the query with every support pair, mean over the set."""

    def __init__(self, query_channels: int, support_channels: int, width: int) -> None:
        super().__init__()
        self.cross_convolution = _convolution(query_channels + support_channels, width, KERNEL_SIZE, False)
        self.query_convolution = _convolution(width, width, KERNEL_SIZE, True)
        self.support_convolution = _convolution(width, width, KERNEL_SIZE, True)

    def forward(self, query: torch.Tensor, support: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, Cq, h, w), support (B, S, Cs, h, w) -> query (B, W, h, w), support (B, S, W, h, w)."""
        shots = support.shape[1]
        pairs = torch.cat([repeat(query, "b c h w -> b s c h w", s=shots), support], dim=2)
        interaction = self.cross_convolution(rearrange(pairs, "b s c h w -> (b s) c h w"))  # (B S, W, h, w)
        query = F.leaky_relu(self.query_convolution(
            rearrange(interaction, "(b s) c h w -> b s c h w", s=shots).mean(dim=1)), LEAKY_SLOPE)
        support = F.leaky_relu(self.support_convolution(interaction), LEAKY_SLOPE)
        return query, rearrange(support, "(b s) c h w -> b s c h w", s=shots)


class UniverSeg(nn.Module):
    """CrossBlock encoder-decoder; see the module docstring. It has no alignment branch."""

    def __init__(self, options: UniverSegOptions = UniverSegOptions()) -> None:
        super().__init__()
        self.options = options
        self.encoder_blocks = nn.ModuleList()
        query_channels, support_channels = QUERY_CHANNELS, SUPPORT_CHANNELS
        for width in options.encoder_widths:
            self.encoder_blocks.append(CrossBlock(query_channels, support_channels, width))
            query_channels = support_channels = width
        self.decoder_blocks = nn.ModuleList()
        for width, skip_channels in zip(options.decoder_widths, reversed(options.encoder_widths[:-1])):
            self.decoder_blocks.append(CrossBlock(query_channels + skip_channels, support_channels + skip_channels,
                                                  width))
            query_channels = support_channels = width
        self.output_convolution = _convolution(query_channels, 1, 1, False)

    def forward(
        self,
        support_images: torch.Tensor,
        support_masks: torch.Tensor,
        query_images: torch.Tensor,
        return_alignment: bool = False,
    ) -> FewShotOutput:
        """support_images (B|1, S, C, H, W), support_masks (B|1, S, H, W), query_images (B, C, H, W)
        -> FewShotOutput(logits (B, 2, H, W) = [-z / 2, z / 2], alignment None); C >= 1 channels of
        which the first is used, H and W multiples of `options.image_size_multiple`."""
        if return_alignment:
            raise ValueError("universeg has no alignment branch: train it with alignment_loss_weight=0")
        self._check_episode(support_images, support_masks, query_images)
        batch = query_images.shape[0]
        query = query_images[:, :QUERY_CHANNELS]  # (B, 1, H, W)
        support = torch.cat([support_images[:, :, :1], support_masks.unsqueeze(2).to(support_images.dtype)], dim=2)
        support = support.expand(batch, *support.shape[1:])  # (B, S, 2, H, W): each query updates its own copy

        skips = []
        for index, block in enumerate(self.encoder_blocks):
            query, support = block(query, support)
            if index < len(self.encoder_blocks) - 1:
                skips.append((query, support))
                query, support = _pool(query), _pool_set(support)
        for block in self.decoder_blocks:
            query_skip, support_skip = skips.pop()
            query = torch.cat([_upsample(query), query_skip], dim=1)
            support = torch.cat([_upsample_set(support), support_skip], dim=2)
            query, support = block(query, support)
        foreground_logit = self.output_convolution(query)  # (B, 1, H, W): z, sigmoid(z) = P(foreground)
        return FewShotOutput(logits=torch.cat([-foreground_logit / 2, foreground_logit / 2], dim=1))

    def _check_episode(self, support_images: torch.Tensor, support_masks: torch.Tensor,
                       query_images: torch.Tensor) -> None:
        """Raise one clear ValueError for tensors that do not form an episode this network can take."""
        if support_images.dim() != 5 or support_masks.dim() != 4 or query_images.dim() != 4:
            raise ValueError(
                "expected support_images (B, S, C, H, W), support_masks (B, S, H, W), query_images (B, C, H, W); "
                f"got {tuple(support_images.shape)}, {tuple(support_masks.shape)}, {tuple(query_images.shape)}")
        if support_masks.shape != support_images.shape[:2] + support_images.shape[3:]:
            raise ValueError(f"support_masks {tuple(support_masks.shape)} do not match support_images "
                             f"{tuple(support_images.shape)}")
        support_batch = support_images.shape[0]
        if support_batch not in (1, query_images.shape[0]) or support_images.shape[2:] != query_images.shape[1:]:
            raise ValueError(f"support_images {tuple(support_images.shape)} do not fit query_images "
                             f"{tuple(query_images.shape)}: the support batch must be 1 or the query batch, with the "
                             "same channels and image size")
        if support_images.shape[1] < 1:
            raise ValueError("universeg needs at least one support pair, got S = 0")
        if any(side % self.options.image_size_multiple for side in query_images.shape[-2:]):
            raise ValueError(f"universeg with {len(self.options.encoder_widths)} encoder stages needs image sides that "
                             f"are multiples of {self.options.image_size_multiple}, got {tuple(query_images.shape[-2:])}")


def _pool(features: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, h / 2, w / 2), max pooling."""
    return F.max_pool2d(features, POOLING)


def _pool_set(features: torch.Tensor) -> torch.Tensor:
    """(B, S, C, h, w) -> (B, S, C, h / 2, w / 2)."""
    return rearrange(_pool(rearrange(features, "b s c h w -> (b s) c h w")), "(b s) c h w -> b s c h w",
                     s=features.shape[1])


def _upsample(features: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, 2h, 2w), bilinear with aligned corners."""
    return F.interpolate(features, scale_factor=POOLING, mode="bilinear", align_corners=True)


def _upsample_set(features: torch.Tensor) -> torch.Tensor:
    """(B, S, C, h, w) -> (B, S, C, 2h, 2w)."""
    return rearrange(_upsample(rearrange(features, "b s c h w -> (b s) c h w")), "(b s) c h w -> b s c h w",
                     s=features.shape[1])
