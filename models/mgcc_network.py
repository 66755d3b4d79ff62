"""MGCC's segmenter: a CMU-Net with one main and three auxiliary decoders (MGCC arXiv 2305.09447,
Sec. 2.2, Fig. 2; the original's `MGCC` in `src/network/MGCC.py`).

The encoder's bottleneck feature passes three ConvMixer stages; each auxiliary decoder sees the
five encoder features, the bottleneck taken at another depth of global context and every level
perturbed another way:

    auxiliary decoder 1: bottleneck before the ConvMixers,      feature dropout on every level
    auxiliary decoder 2: bottleneck after ConvMixer stage 1,    dropout (p 0.3) on every level
    auxiliary decoder 3: bottleneck after ConvMixer stage 2,    feature noise on every level
    main decoder:        bottleneck after ConvMixer stage 3,    unperturbed

In training all four decoders run (`decoder_outputs`); at test time only the main one (`forward`),
as the original's eval-mode forward. `first_channels` (C0) sets every channel count, C0 x (1, 2,
4, 8, 16) by stage (the original: 16 x dim_mult = 64, 122 182 980 parameters with three input
channels and one output).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from models.cmunet import CMUNetDecoder, CMUNetEncoder, ConvMixerStage, stage_channels
from models.feature_perturbations import dropout, feature_dropout, feature_noise

# the auxiliary decoders' perturbations, in the order of the bottleneck depths they see (0..2 ConvMixer stages)
AUXILIARY_PERTURBATIONS: tuple[Callable[[torch.Tensor], torch.Tensor], ...] = (feature_dropout, dropout, feature_noise)


class MGCCNetwork(nn.Module):
    """CMU-Net encoder, three ConvMixer stages at the bottleneck, a main and three auxiliary decoders."""

    def __init__(self, in_channels: int, out_channels: int, first_channels: int,
                 convmixer_depths: tuple[int, ...], kernel_size: int) -> None:
        super().__init__()
        if len(convmixer_depths) != len(AUXILIARY_PERTURBATIONS):
            raise ValueError(f"MGCC has {len(AUXILIARY_PERTURBATIONS)} ConvMixer stages, got depths {convmixer_depths}")
        bottleneck_channels = stage_channels(first_channels)[-1]
        self.encoder = CMUNetEncoder(in_channels, first_channels)
        self.convmixers = nn.ModuleList(ConvMixerStage(bottleneck_channels, depth, kernel_size)
                                        for depth in convmixer_depths)
        self.main_decoder = CMUNetDecoder(first_channels, out_channels)
        self.auxiliary_decoders = nn.ModuleList(CMUNetDecoder(first_channels, out_channels)
                                                for _ in AUXILIARY_PERTURBATIONS)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) -> (B, Cout, H, W): the main decoder on the unperturbed features (test time)."""
        *skips, bottleneck = self.encoder(images)
        for convmixer in self.convmixers:
            bottleneck = convmixer(bottleneck)
        return self.main_decoder(skips + [bottleneck])

    def decoder_outputs(self, images: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) -> (4, B, Cout, H, W): main, then auxiliary decoders 1-3 on their perturbed features."""
        *skips, bottleneck = self.encoder(images)
        auxiliary = []
        for convmixer, decoder, perturb in zip(self.convmixers, self.auxiliary_decoders, AUXILIARY_PERTURBATIONS):
            auxiliary.append(decoder([perturb(feature) for feature in skips + [bottleneck]]))
            bottleneck = convmixer(bottleneck)
        return torch.stack([self.main_decoder(skips + [bottleneck])] + auxiliary)
