"""CMU-Net's building blocks as MGCC uses them (Tang et al., "CMU-Net: a strong ConvMixer-based
medical ultrasound image segmentation network", ISBI 2023; MGCC arXiv 2305.09447, Sec. 2.2 and
FengheTan9/Multi-Level-Global-Context-Cross-Consistency `src/network/MGCC.py`).

- `CMUNetEncoder`: five stages of two 3x3 convolutions (batch norm, ReLU), the later four after a
  2x2 max pooling; feature channels base x (1, 2, 4, 8, 16), base = 16 x width multiplier;
- `ConvMixerStage`: `depth` ConvMixer layers at the bottleneck, each a residual depthwise k x k
  convolution (GELU, batch norm) then a pointwise convolution (GELU, batch norm): the global
  context of the bottleneck feature;
- `MultiScaleAttentionGate`: a skip feature reweighted by itself through pointwise, 3x3 and
  dilated 3x3 convolutions voted by a sigmoid gate, x + x * gate;
- `CMUNetDecoder`: every skip through its own gate, four stages of nearest-neighbour 2x upsampling
  with a 3x3 convolution, concatenation with the skip (skip first) and two 3x3 convolutions, then a
  1x1 convolution to the output channels.

Layer order, kinds and biases follow the original, so that the parameter count is the original's
(tests/test_mgcc.py); the image sides must be multiples of 16 (four poolings).
"""
from __future__ import annotations

import torch
import torch.nn as nn

STAGE_MULTIPLIERS = (1, 2, 4, 8, 16)  # channels of the five stages, in units of the first stage's
DOWNSAMPLING = 2 ** (len(STAGE_MULTIPLIERS) - 1)  # four 2x2 poolings: image sides must be multiples of this
GATE_DILATION = 2  # the attention gate's dilated 3x3 convolution
GATE_BRANCHES = 3  # pointwise, ordinary and dilated convolutions, voted together


def stage_channels(first_channels: int) -> tuple[int, ...]:
    """Feature channels of the five stages: (64, 128, 256, 512, 1024) for the original's 64."""
    return tuple(first_channels * multiplier for multiplier in STAGE_MULTIPLIERS)


def convolution_with_norm(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> list[nn.Module]:
    """A 'same'-padded convolution (with bias, as the original) and batch norm."""
    return [nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation),
            nn.BatchNorm2d(out_channels)]


class DoubleConvolution(nn.Module):
    """Two 3x3 convolutions, each with batch norm and ReLU (the original's `conv_block`)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*convolution_with_norm(in_channels, out_channels, 3), nn.ReLU(inplace=True),
                                    *convolution_with_norm(out_channels, out_channels, 3), nn.ReLU(inplace=True))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, Cin, h, w) -> (B, Cout, h, w)"""
        return self.layers(features)


class UpsamplingConvolution(nn.Module):
    """Nearest-neighbour 2x upsampling, then a 3x3 convolution with batch norm and ReLU (`up_conv`)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Upsample(scale_factor=2), *convolution_with_norm(in_channels, out_channels, 3),
                                    nn.ReLU(inplace=True))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, Cin, h, w) -> (B, Cout, 2h, 2w)"""
        return self.layers(features)


class MultiScaleAttentionGate(nn.Module):
    """CMU-Net's multi-scale attention gate (`MSAG`): x + x * sigmoid(vote(relu([pointwise(x),
    conv3x3(x), dilated conv3x3(x)])))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pointwise = nn.Sequential(*convolution_with_norm(channels, channels, 1))
        self.ordinary = nn.Sequential(*convolution_with_norm(channels, channels, 3))
        self.dilated = nn.Sequential(*convolution_with_norm(channels, channels, 3, dilation=GATE_DILATION))
        self.vote = nn.Sequential(*convolution_with_norm(GATE_BRANCHES * channels, channels, 1), nn.Sigmoid())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, h, w)"""
        branches = torch.cat([self.pointwise(features), self.ordinary(features), self.dilated(features)], dim=1)
        gate = self.vote(torch.relu(branches))
        return features + features * gate


class ConvMixerLayer(nn.Module):
    """One ConvMixer layer: x + BN(GELU(depthwise k x k conv(x))), then BN(GELU(pointwise conv))."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.depthwise = nn.Sequential(nn.Conv2d(channels, channels, kernel_size, groups=channels,
                                                 padding=kernel_size // 2), nn.GELU(), nn.BatchNorm2d(channels))
        self.pointwise = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.GELU(), nn.BatchNorm2d(channels))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, h, w)"""
        return self.pointwise(features + self.depthwise(features))


class ConvMixerStage(nn.Sequential):
    """`depth` ConvMixer layers (the original's `ConvMixerBlock`); (B, C, h, w) -> (B, C, h, w)."""

    def __init__(self, channels: int, depth: int, kernel_size: int) -> None:
        super().__init__(*[ConvMixerLayer(channels, kernel_size) for _ in range(depth)])


class CMUNetEncoder(nn.Module):
    """Five double-convolution stages, the later four after 2x2 max pooling."""

    def __init__(self, in_channels: int, first_channels: int) -> None:
        super().__init__()
        channels = (in_channels,) + stage_channels(first_channels)
        self.stages = nn.ModuleList(DoubleConvolution(channels[index], channels[index + 1])
                                    for index in range(len(STAGE_MULTIPLIERS)))
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, Cin, H, W) -> five features (B, C_s, H / 2^s, W / 2^s), s = 0..4; H, W multiples of 16."""
        if images.shape[-2] % DOWNSAMPLING or images.shape[-1] % DOWNSAMPLING:
            raise ValueError(f"CMU-Net input sides must be multiples of {DOWNSAMPLING}, got {tuple(images.shape[-2:])}")
        features = [self.stages[0](images)]
        for stage in self.stages[1:]:
            features.append(stage(self.pool(features[-1])))
        return features


class CMUNetDecoder(nn.Module):
    """Attention-gated skips and four upsampling stages to `out_channels` maps at the image size."""

    def __init__(self, first_channels: int, out_channels: int) -> None:
        super().__init__()
        channels = stage_channels(first_channels)
        self.gates = nn.ModuleList(MultiScaleAttentionGate(channel) for channel in channels[:-1])
        self.upsampling = nn.ModuleList(UpsamplingConvolution(channels[index + 1], channels[index])
                                        for index in range(len(channels) - 1))
        self.fusion = nn.ModuleList(DoubleConvolution(2 * channels[index], channels[index])
                                    for index in range(len(channels) - 1))
        self.head = nn.Conv2d(channels[0], out_channels, kernel_size=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """five features (B, C_s, H / 2^s, W / 2^s) -> (B, out_channels, H, W)."""
        skips = [gate(feature) for gate, feature in zip(self.gates, features[:-1])]
        decoded = features[-1]
        for index in reversed(range(len(skips))):
            decoded = self.fusion[index](torch.cat([skips[index], self.upsampling[index](decoded)], dim=1))
        return self.head(decoded)
