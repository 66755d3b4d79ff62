"""The 2D U-Net of the semi-supervised benchmark (HiLab-git/SSL4MIS `code/networks/unet.py`, `UNet`).

Its layers, in the original's order (so that parameter names and the count match: 1 813 764
parameters with one input channel and four classes, tests/test_models_unet.py):

- five encoder stages of feature channels (16, 32, 64, 128, 256): a `ConvBlock` (conv 3x3 ->
  batch norm -> LeakyReLU -> dropout -> conv 3x3 -> batch norm -> LeakyReLU), the later four after
  a 2x2 max pooling; dropout rates (0.05, 0.1, 0.2, 0.3, 0.5) per stage;
- four decoder stages: a 1x1 convolution halves the channels, bilinear upsampling (corners
  aligned) doubles the size, the skip feature is concatenated before it (skip first), then a
  `ConvBlock` without dropout. The original's `params` say `bilinear: False`, but its `Decoder`
  never passes that flag to `UpBlock`, whose default is bilinear: every SSL4MIS U-Net (and every
  method that copies it) upsamples bilinearly, and so does this one (docs/METHOD.md). KnowSAM's
  `Model/model.py` does pass `bilinear=False` on: its U-Net upsamples with a 2x2 transposed
  convolution to the skip's channels instead of the 1x1 convolution and bilinear upsampling
  (`UNetOptions(upsampling="transposed")`);
- a 3x3 convolution to the class logits.

The image side must be a multiple of 16 (four poolings).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

DOWNSAMPLING = 16  # four 2x2 poolings: image sides must be multiples of this
UPSAMPLINGS = ("bilinear", "transposed")  # UpBlock: 1x1 conv + bilinear x2 (SSL4MIS) | 2x2 transposed conv (KnowSAM)


@dataclass(frozen=True)
class UNetOptions:
    """The original's `params` dict: feature channels and dropout per stage."""

    feature_channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    dropout: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)
    upsampling: str = "bilinear"  # UPSAMPLINGS: how each decoder stage doubles the size

    def __post_init__(self) -> None:
        if len(self.feature_channels) != 5 or len(self.dropout) != 5:
            raise ValueError(f"the U-Net has 5 stages: got {len(self.feature_channels)} feature channels and "
                             f"{len(self.dropout)} dropout rates")
        if self.upsampling not in UPSAMPLINGS:
            raise ValueError(f"upsampling must be one of {UPSAMPLINGS}, got {self.upsampling!r}")


class ConvBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and LeakyReLU, dropout between them."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.conv_conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) -> (B, Cout, H, W)"""
        return self.conv_conv(features)


class DownBlock(nn.Module):
    """2x2 max pooling, then a ConvBlock."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), ConvBlock(in_channels, out_channels, dropout))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) -> (B, Cout, H/2, W/2)"""
        return self.maxpool_conv(features)


class UpBlock(nn.Module):
    """1x1 convolution and bilinear upsampling x2 (or one 2x2 transposed convolution), concatenation
    with the skip feature (skip first), ConvBlock."""

    def __init__(self, deep_channels: int, skip_channels: int, out_channels: int, upsampling: str = "bilinear") -> None:
        super().__init__()
        if upsampling == "bilinear":
            self.conv1x1 = nn.Conv2d(deep_channels, skip_channels, kernel_size=1)
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        else:  # the original's parameter names either way: conv1x1 only where it exists
            self.conv1x1 = nn.Identity()
            self.up = nn.ConvTranspose2d(deep_channels, skip_channels, kernel_size=2, stride=2)
        self.conv = ConvBlock(2 * skip_channels, out_channels, dropout=0.0)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """deep (B, Cd, h, w), skip (B, Cs, 2h, 2w) -> (B, Cout, 2h, 2w)"""
        return self.conv(torch.cat([skip, self.up(self.conv1x1(deep))], dim=1))


class UNetEncoder(nn.Module):
    """Five stages; returns the feature of each, shallow to deep."""

    def __init__(self, in_channels: int, options: UNetOptions) -> None:
        super().__init__()
        channels, dropout = options.feature_channels, options.dropout
        self.in_conv = ConvBlock(in_channels, channels[0], dropout[0])
        self.down1 = DownBlock(channels[0], channels[1], dropout[1])
        self.down2 = DownBlock(channels[1], channels[2], dropout[2])
        self.down3 = DownBlock(channels[2], channels[3], dropout[3])
        self.down4 = DownBlock(channels[3], channels[4], dropout[4])

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, Cin, H, W) -> [(B, C0, H, W), (B, C1, H/2, W/2), ..., (B, C4, H/16, W/16)]"""
        x0 = self.in_conv(images)
        x1 = self.down1(x0)
        x2 = self.down2(x1)
        x3 = self.down3(x2)
        x4 = self.down4(x3)
        return [x0, x1, x2, x3, x4]


class UNetDecoder(nn.Module):
    """Four up stages from the deepest feature, then a 3x3 convolution to the class logits."""

    def __init__(self, n_classes: int, options: UNetOptions) -> None:
        super().__init__()
        channels, upsampling = options.feature_channels, options.upsampling
        self.up1 = UpBlock(channels[4], channels[3], channels[3], upsampling)
        self.up2 = UpBlock(channels[3], channels[2], channels[2], upsampling)
        self.up3 = UpBlock(channels[2], channels[1], channels[1], upsampling)
        self.up4 = UpBlock(channels[1], channels[0], channels[0], upsampling)
        self.out_conv = nn.Conv2d(channels[0], n_classes, kernel_size=3, padding=1)

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The encoder's five features -> the last decoder feature (B, C0, H, W), before the logits
        (the feature SCP-Net's prototypes are pooled from)."""
        x0, x1, x2, x3, x4 = features
        return self.up4(self.up3(self.up2(self.up1(x4, x3), x2), x1), x0)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The encoder's five features -> logits (B, K, H, W)"""
        return self.out_conv(self.decode(features))


class UNet(nn.Module):
    """SSL4MIS's 2D U-Net: (B, Cin, H, W) images -> (B, K, H, W) class logits."""

    def __init__(self, in_channels: int, n_classes: int, options: UNetOptions = UNetOptions()) -> None:
        super().__init__()
        self.in_channels, self.n_classes = in_channels, n_classes
        self.encoder = UNetEncoder(in_channels, options)
        self.decoder = UNetDecoder(n_classes, options)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) -> logits (B, K, H, W); H and W multiples of 16."""
        return self.decoder(self.encoder(checked_sides(images)))

    def logits_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Cin, H, W) -> logits (B, K, H, W) and the last decoder feature (B, C0, H, W) they are
        computed from (SCP-Net pools its prototypes from it); H and W multiples of 16."""
        features = self.decoder.decode(self.encoder(checked_sides(images)))
        return self.decoder.out_conv(features), features


def checked_sides(images: torch.Tensor) -> torch.Tensor:
    """The images, if their sides are multiples of DOWNSAMPLING (else a ValueError)."""
    if images.shape[-2] % DOWNSAMPLING or images.shape[-1] % DOWNSAMPLING:
        raise ValueError(f"U-Net input sides must be multiples of {DOWNSAMPLING}, got {tuple(images.shape[-2:])}")
    return images
