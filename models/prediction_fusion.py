"""KnowSAM's fusion of two networks' predictions (taozh2017/KnowSAM `Model/discriminator.py`, `Discriminator`).

The original calls it a discriminator; nothing adversarial trains it: it is a small convolutional
network, trained with the networks, that maps the two networks' logits to one fused map. Three
branches of (3x3 convolution -> batch norm -> LeakyReLU(0.2) -> 1x1 convolution -> batch norm ->
LeakyReLU(0.2)), every convolution without bias, read:

- the agreement map 1 - (p1 > 0.5 XOR p2 > 0.5), per class (K channels -> 16);
- one minus the two networks' entropy maps (2 channels -> 16);
- the two networks' logits, concatenated (2K channels -> 16 -> 32);

and a head of two 3x3 convolutions (64 -> 64 -> K), each with batch norm and LeakyReLU(0.2), maps
their concatenation to the fused logits. The final LeakyReLU is the original's: negative fused
logits are scaled by 0.2.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.knowsam_losses import entropy_map

AGREEMENT_THRESHOLD = 0.5  # Discriminator.forward(thr=0.5): a class counts as predicted above it
BRANCH_CHANNELS = 16  # ambiguous_channels, entmap_channels, logits_channels
NEGATIVE_SLOPE = 0.2  # LeakyReLU(0.2, inplace=True)
N_NETWORKS = 2  # the U-Net and the V-Net: two entropy maps, two sets of logits


def _convolution(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    """A convolution without bias (same size), batch norm, LeakyReLU(0.2)."""
    return [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels), nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)]


def _branch(in_channels: int, hidden_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 then 1x1 convolution, each with batch norm and LeakyReLU(0.2)."""
    return nn.Sequential(*_convolution(in_channels, hidden_channels, 3),
                         *_convolution(hidden_channels, out_channels, 1))


class PredictionFusion(nn.Module):
    """Two networks' logits -> fused logits, from where they agree, how certain each is, and their logits."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.agreement_branch = _branch(n_classes, BRANCH_CHANNELS, BRANCH_CHANNELS)
        self.certainty_branch = _branch(N_NETWORKS, BRANCH_CHANNELS, BRANCH_CHANNELS)
        self.logits_branch = _branch(N_NETWORKS * n_classes, BRANCH_CHANNELS, 2 * BRANCH_CHANNELS)
        head_channels = 4 * BRANCH_CHANNELS  # 16 + 16 + 32 = 64
        self.head = nn.Sequential(*_convolution(head_channels, head_channels, 3),
                                  *_convolution(head_channels, n_classes, 3))

    def forward(self, first_logits: torch.Tensor, second_logits: torch.Tensor) -> torch.Tensor:
        """first_logits, second_logits (B, K, H, W) -> fused logits (B, K, H, W)."""
        first_probabilities = torch.softmax(first_logits, dim=1)
        second_probabilities = torch.softmax(second_logits, dim=1)
        disagreement = ((first_probabilities > AGREEMENT_THRESHOLD)
                        ^ (second_probabilities > AGREEMENT_THRESHOLD)).to(first_logits.dtype)
        entropies = torch.cat([entropy_map(first_probabilities), entropy_map(second_probabilities)], dim=1)
        features = torch.cat([self.agreement_branch(1 - disagreement),
                              self.certainty_branch(1 - entropies),
                              self.logits_branch(torch.cat([first_logits, second_logits], dim=1))], dim=1)
        return self.head(features)
