"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017) as SSL4MIS's `code/train_mean_teacher_2D.py` trains it.

Per step, with L labelled and U unlabelled slices in the batch (labelled first):

- the student U-Net segments all L + U slices; its loss on the labelled ones is 0.5 x (CE + Dice);
- the teacher, an exponential moving average of the student (decay 0.99), segments the unlabelled
  slices plus Gaussian noise (std 0.1, clamped to +-0.2), without gradient; teacher and student
  are both in training mode (dropout and batch statistics on, as the original);
- consistency: the mean squared difference of the two softmaxes over the unlabelled slices,
  weighted by 0.1 x sigmoid_rampup(iteration // 150, 200), and 0 for the first 1000 iterations;
- after the optimiser step the teacher follows the student (models/semi_supervised.py `update_ema`).

The student is the test-time output; the teacher is used in training only.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from models.semi_supervised import (SUPERVISED_LOSS_SCALE, ConsistencyRamp, MethodStep, SemiSupervisedMethod,
                                    supervised_loss, update_ema)
from models.unet import UNet


@dataclass(frozen=True)
class MeanTeacherOptions:
    """SSL4MIS's arguments of train_mean_teacher_2D.py, and its constants."""

    ema_decay: float = 0.99  # --ema_decay
    noise_std: float = 0.1  # torch.randn_like(...) * 0.1
    noise_clamp: float = 0.2  # torch.clamp(..., -0.2, 0.2)
    consistency: float = 0.1  # --consistency
    consistency_rampup: float = 200.0  # --consistency_rampup, in units of rampup_unit iterations
    rampup_unit: int = 150  # get_current_consistency_weight(iter_num // 150)
    consistency_start: int = 1000  # `if iter_num < 1000: consistency_loss = 0.0`


class MeanTeacher(SemiSupervisedMethod):
    """Student U-Net and its EMA teacher."""

    def __init__(self, in_channels: int, n_classes: int, options: MeanTeacherOptions = MeanTeacherOptions()) -> None:
        super().__init__()
        self.options = options
        self.network = UNet(in_channels, n_classes)
        self.teacher = copy.deepcopy(self.network)
        self.teacher.requires_grad_(False)
        self.ramp = ConsistencyRamp(options.consistency, options.consistency_rampup, options.rampup_unit,
                                    options.consistency_start)

    def optimised_parameters(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"network": list(self.network.parameters())}

    def training_losses(self, labelled_images: torch.Tensor, labels: torch.Tensor,
                        unlabelled_images: torch.Tensor, iteration: int) -> MethodStep:
        """labelled_images (L, Cin, H, W), labels (L, H, W), unlabelled_images (U, Cin, H, W)."""
        n_labelled = labelled_images.shape[0]
        logits = self.network(torch.cat([labelled_images, unlabelled_images]))  # (L + U, K, H, W)
        cross_entropy, dice = supervised_loss(logits[:n_labelled], labels)
        noise = torch.clamp(torch.randn_like(unlabelled_images) * self.options.noise_std,
                            -self.options.noise_clamp, self.options.noise_clamp)
        with torch.no_grad():
            teacher_probabilities = torch.softmax(self.teacher(unlabelled_images + noise).float(), dim=1)
        weight = self.ramp(iteration)
        if self.ramp.active(iteration):
            student_probabilities = torch.softmax(logits[n_labelled:].float(), dim=1)
            consistency = torch.mean((student_probabilities - teacher_probabilities) ** 2)
        else:
            consistency = logits.sum() * 0.0
        return MethodStep(losses={"cross_entropy": SUPERVISED_LOSS_SCALE * cross_entropy,
                                  "dice": SUPERVISED_LOSS_SCALE * dice,
                                  "consistency": weight * consistency},
                          logits=logits,
                          scalars={"consistency_weight": weight, "consistency_unweighted": float(consistency.detach())})

    def after_update(self, iteration: int) -> None:
        update_ema(self.teacher, self.network, self.options.ema_decay, iteration)

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) -> (B, K, H, W): the student."""
        return self.network(images)
