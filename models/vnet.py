"""The 2D V-Net KnowSAM co-trains beside its U-Net (taozh2017/KnowSAM `Model/vnet.py`, `VNet`).

V-Net (Milletari et al., 3DV 2016) with 2D convolutions, as KnowSAM builds it
(`VNet(n_channels, n_classes)`: 16 base filters, no normalisation, no dropout):

- five encoder stages of (16, 32, 64, 128, 256) channels with (1, 2, 3, 3, 3) 3x3 convolutions,
  each followed by ReLU; between stages a 2x2 convolution of stride 2 (and ReLU) doubles the
  channels and halves the size;
- four decoder stages: a 2x2 transposed convolution of stride 2 (and ReLU) halves the channels
  and doubles the size, the encoder feature of that size is added (not concatenated), then
  (3, 3, 2, 1) 3x3 convolutions with ReLU; the first decoder stage upsamples the fifth encoder
  stage's output;
- a 1x1 convolution to the class logits;
- convolution and transposed-convolution weights drawn by Kaiming's normal initialisation.

Image sides must be multiples of 16 (four stride-2 downsamplings).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from models.unet import checked_sides


@dataclass(frozen=True)
class VNetOptions:
    """Channels and depth of each stage."""

    feature_channels: tuple[int, ...] = (16, 32, 64, 128, 256)  # n_filters x (1, 2, 4, 8, 16)
    encoder_convolutions: tuple[int, ...] = (1, 2, 3, 3, 3)  # block_one .. block_five
    decoder_convolutions: tuple[int, ...] = (3, 3, 2, 1)  # block_six .. block_nine

    def __post_init__(self) -> None:
        if not len(self.feature_channels) == len(self.encoder_convolutions) == len(self.decoder_convolutions) + 1:
            raise ValueError(f"the V-Net needs one channel count and convolution count per encoder stage and one "
                             f"fewer decoder stages: got {self.feature_channels}, {self.encoder_convolutions}, "
                             f"{self.decoder_convolutions}")


def convolution_stage(in_channels: int, out_channels: int, n_convolutions: int) -> nn.Sequential:
    """n 3x3 convolutions, each followed by ReLU: (B, Cin, H, W) -> (B, Cout, H, W)."""
    layers = []
    for index in range(n_convolutions):
        layers += [nn.Conv2d(in_channels if index == 0 else out_channels, out_channels, kernel_size=3, padding=1),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class VNet(nn.Module):
    """KnowSAM's 2D V-Net: (B, Cin, H, W) images -> (B, K, H, W) class logits."""

    def __init__(self, in_channels: int, n_classes: int, options: VNetOptions = VNetOptions()) -> None:
        super().__init__()
        channels = options.feature_channels
        self.encoder_stages = nn.ModuleList(
            convolution_stage(in_channels if stage == 0 else channels[stage], channels[stage], n_convolutions)
            for stage, n_convolutions in enumerate(options.encoder_convolutions))
        self.downsamplings = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels[stage], channels[stage + 1], kernel_size=2, stride=2),
                          nn.ReLU(inplace=True))
            for stage in range(len(channels) - 1))
        # decoder stage d upsamples from channels[-1 - d] to channels[-2 - d], then convolves at that width
        self.upsamplings = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(channels[-1 - stage], channels[-2 - stage], kernel_size=2, stride=2),
                          nn.ReLU(inplace=True))
            for stage in range(len(channels) - 1))
        self.decoder_stages = nn.ModuleList(
            convolution_stage(channels[-2 - stage], channels[-2 - stage], n_convolutions)
            for stage, n_convolutions in enumerate(options.decoder_convolutions))
        self.out_conv = nn.Conv2d(channels[0], n_classes, kernel_size=1)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) -> logits (B, K, H, W); H and W multiples of 16."""
        features = self.encoder_stages[0](checked_sides(images))
        skips = [features]  # the output of each encoder stage but the last, shallow to deep
        for downsampling, stage in zip(self.downsamplings, self.encoder_stages[1:]):
            features = stage(downsampling(features))
            skips.append(features)
        skips.pop()
        for upsampling, stage in zip(self.upsamplings, self.decoder_stages):
            features = stage(upsampling(features) + skips.pop())
        return self.out_conv(features)
