"""Labelled slices only: SSL4MIS's `code/train_fully_supervised_2D.py`.

The semi-supervised track's bounds: with the labelled subset it is the lower bound (`supervised`),
with every training slice labelled the upper bound (`fully_supervised`). One U-Net, the loss
0.5 x (cross-entropy + Dice) on the labelled batch; no unlabelled slice is drawn.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.semi_supervised import SUPERVISED_LOSS_SCALE, MethodStep, SemiSupervisedMethod, supervised_loss
from models.unet import UNet


@dataclass(frozen=True)
class SupervisedOptions:
    """The U-Net's options (models/unet.py); the method has none of its own."""



class SupervisedSegmentation(SemiSupervisedMethod):
    """A U-Net trained on labelled slices alone."""

    uses_unlabelled = False

    def __init__(self, in_channels: int, n_classes: int, options: SupervisedOptions = SupervisedOptions()) -> None:
        super().__init__()
        self.network = UNet(in_channels, n_classes)

    def training_losses(self, labelled_images: torch.Tensor, labels: torch.Tensor,
                        unlabelled_images: torch.Tensor, iteration: int) -> MethodStep:
        """labelled_images (L, Cin, H, W), labels (L, H, W); unlabelled_images (0, Cin, H, W)."""
        logits = self.network(labelled_images)
        cross_entropy, dice = supervised_loss(logits, labels)
        return MethodStep(losses={"cross_entropy": SUPERVISED_LOSS_SCALE * cross_entropy,
                                  "dice": SUPERVISED_LOSS_SCALE * dice}, logits=logits)

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) -> (B, K, H, W)"""
        return self.network(images)
