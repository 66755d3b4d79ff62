"""MGCC: multi-level global context cross consistency (Tang et al., arXiv 2305.09447, Sec. 2.2-2.3),
as the original's `train.py` trains its segmenter (FengheTan9/Multi-Level-Global-Context-Cross-Consistency).

Per step, with L labelled and U unlabelled images in the batch (labelled first), the network
(models/mgcc_network.py) segments all L + U images with its main and three auxiliary decoders:

- supervised: the original's `BCEDiceLoss` of each decoder on the labelled images, 0.5 x BCE +
  (1 - soft Dice per image, smoothing 1e-5, mean over the images), averaged over the 4 decoders;
- consistency: the mean squared difference between the main decoder's and each auxiliary
  decoder's probabilities on the unlabelled images, averaged over the 3 pairs, gradients into both
  sides (nothing is detached), weighted by 7 x sigmoid_rampup(iteration // 150, 200);
- the main decoder alone is the test-time output.

Outputs. The original is binary: one logit map, sigmoid probabilities (`output="sigmoid"`, chosen
by "auto" for two classes). For more classes (ACDC, CHAOST2) this module generalises it
(`output="softmax"`, docs/METHOD.md): K logit maps, softmax probabilities, 0.5 x cross-entropy +
(1 - soft Dice per image and foreground class, mean over both), the squared difference averaged
over the K maps. With two classes the generalisation is the original as a function of the logit
difference (tests/test_mgcc.py checks it). `segment` returns two-class logits (0, z) for the
sigmoid output, so that argmax and softmax read it as the original's sigmoid(z) > 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.mgcc_network import MGCCNetwork
from models.semi_supervised import ConsistencyRamp, MethodStep, SemiSupervisedMethod

# the first stage's channels by width name: "full" is the original's (16 x dim_mult 4; 64..1024 channels,
# 122 M parameters); "eighth" (8..128 channels, 1.9 M parameters, as many as SSL4MIS's U-Net) is the
# `cpu` profile's: at "quarter" a step of 4 + 4 images of 128 px costs 7 U-Net steps
MGCC_WIDTHS = {"full": 64, "quarter": 16, "eighth": 8}
AUTO, SIGMOID, SOFTMAX = "auto", "sigmoid", "softmax"
OUTPUTS = (AUTO, SIGMOID, SOFTMAX)
BINARY_CLASSES = 2
BCE_SCALE = 0.5  # BCEDiceLoss: 0.5 * bce + dice
DICE_SMOOTH = 1e-5  # BCEDiceLoss's smooth
MAX_ITERATIONS = 40_000  # --max_iterations, before train.py scales it by --semi_percent


@dataclass(frozen=True)
class MGCCOptions:
    """The original's arguments (train.py) and constants, and this project's output choice."""

    width: str = "full"  # MGCC_WIDTHS key: "full" (the original's) | "quarter" | "eighth" (the `cpu` profile)
    convmixer_depths: tuple[int, ...] = (3, 3, 3)  # --length: ConvMixer layers of the three stages
    kernel_size: int = 7  # --kernel_size of the ConvMixers' depthwise convolutions
    output: str = AUTO  # "auto": sigmoid (the original) for two classes, softmax otherwise | "sigmoid" | "softmax"
    consistency: float = 7.0  # --consistency
    consistency_rampup: float = 200.0  # --consistency_rampup, in units of rampup_unit iterations
    rampup_unit: int = 150  # get_current_consistency_weight(iter_num // 150)

    def __post_init__(self) -> None:
        if self.width not in MGCC_WIDTHS:
            raise ValueError(f"MGCC width must be one of {sorted(MGCC_WIDTHS)}, got {self.width!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"MGCC output must be one of {OUTPUTS}, got {self.output!r}")


def soft_dice_loss_per_image(probabilities: torch.Tensor, targets: torch.Tensor, smooth: float = DICE_SMOOTH
                             ) -> torch.Tensor:
    """probabilities, targets (L, C, H, W) -> 1 - the mean over images and maps of
    (2 sum(p t) + s) / (sum(p) + sum(t) + s), the sums over one image's map (BCEDiceLoss's Dice)."""
    overlap = (probabilities * targets).sum(dim=(-2, -1))
    total = probabilities.sum(dim=(-2, -1)) + targets.sum(dim=(-2, -1))
    return 1.0 - ((2.0 * overlap + smooth) / (total + smooth)).mean()


def sigmoid_supervised_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (L, 1, H, W), labels (L, H, W) in {0, 1} -> (BCE, Dice loss) of BCEDiceLoss, unweighted."""
    targets = labels.unsqueeze(1).to(logits.dtype)
    return (F.binary_cross_entropy_with_logits(logits, targets),
            soft_dice_loss_per_image(torch.sigmoid(logits), targets))


def softmax_supervised_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (L, K, H, W), labels (L, H, W) in 0..K-1 -> (cross-entropy, Dice loss over the
    foreground classes), unweighted: BCEDiceLoss generalised to K classes."""
    one_hot = F.one_hot(labels.long(), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
    probabilities = torch.softmax(logits, dim=1)
    return F.cross_entropy(logits, labels.long()), soft_dice_loss_per_image(probabilities[:, 1:], one_hot[:, 1:])


class MGCC(SemiSupervisedMethod):
    """The MGCC segmenter and its losses."""

    def __init__(self, in_channels: int, n_classes: int, options: MGCCOptions = MGCCOptions()) -> None:
        super().__init__()
        self.options = options
        self.n_classes = n_classes
        self.output = options.output if options.output != AUTO else (SIGMOID if n_classes == BINARY_CLASSES
                                                                      else SOFTMAX)
        if self.output == SIGMOID and n_classes != BINARY_CLASSES:
            raise ValueError(f"MGCC's sigmoid output (the original's) segments two classes, got {n_classes}: "
                             f"use output='softmax' (or 'auto')")
        out_channels = 1 if self.output == SIGMOID else n_classes
        self.network = MGCCNetwork(in_channels, out_channels, MGCC_WIDTHS[options.width],
                                   tuple(options.convmixer_depths), options.kernel_size)
        self.ramp = ConsistencyRamp(options.consistency, options.consistency_rampup, options.rampup_unit)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., Cout, H, W) logits -> probabilities of the same shape (sigmoid or softmax over Cout)."""
        return torch.sigmoid(logits) if self.output == SIGMOID else torch.softmax(logits, dim=-3)

    def training_losses(self, labelled_images: torch.Tensor, labels: torch.Tensor,
                        unlabelled_images: torch.Tensor, iteration: int) -> MethodStep:
        """labelled_images (L, Cin, H, W), labels (L, H, W), unlabelled_images (U, Cin, H, W), U >= 1."""
        n_labelled = labelled_images.shape[0]
        outputs = self.network.decoder_outputs(torch.cat([labelled_images, unlabelled_images])).float()  # (4, L+U, Cout, H, W)
        decoder_losses = sigmoid_supervised_losses if self.output == SIGMOID else softmax_supervised_losses
        cross_entropy, dice = (torch.stack(terms).mean() for terms in
                               zip(*(decoder_losses(decoder[:n_labelled], labels) for decoder in outputs)))
        probabilities = self.probabilities(outputs[:, n_labelled:])  # (4, U, Cout, H, W)
        consistency = ((probabilities[1:] - probabilities[:1]) ** 2).mean()  # the mean of the 3 pairs' means
        weight = self.ramp(iteration)
        return MethodStep(losses={"cross_entropy": BCE_SCALE * cross_entropy, "dice": dice,
                                  "consistency": weight * consistency},
                          logits=self.class_logits(outputs[0]),
                          scalars={"consistency_weight": weight, "consistency_unweighted": float(consistency.detach())})

    def class_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, Cout, H, W) -> (B, K, H, W): a sigmoid output z as two-class logits (0, z)."""
        return torch.cat([torch.zeros_like(logits), logits], dim=1) if self.output == SIGMOID else logits

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) -> (B, K, H, W): the main decoder on unperturbed features."""
        return self.class_logits(self.network(images))


def mgcc_iterations(labelled_share: float) -> int:
    """train.py's iteration rule: int(max_iterations x semi_percent), --max_iterations 40000; e.g.
    20 000 iterations at its default semi_percent 0.5."""
    if not 0.0 < labelled_share <= 1.0:
        raise ValueError(f"the labelled share of the training images must be in (0, 1], got {labelled_share!r}")
    return int(MAX_ITERATIONS * labelled_share)
