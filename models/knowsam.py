"""KnowSAM (Zhou et al., "Learnable Prompting SAM-induced Knowledge Distillation for Semi-supervised
Medical Image Segmentation", IEEE TMI 2025) as taozh2017/KnowSAM's `train_semi_SAM_ACDC.py` and
`trainer.py` train it (docs/METHOD.md, "KnowSAM").

Networks: a U-Net (SSL4MIS's, upsampling by transposed convolutions as KnowSAM's), a 2D V-Net
(models/vnet.py), the fusion of their logits (models/prediction_fusion.py), and SAM with adapters
and learnable box prompts (models/prompted_sam.py), prompted once per class with the fused map.
Per step, with L labelled and L unlabelled slices (labelled first), the networks' losses are

    per network n in (U-Net, V-Net), halved:  CE + Dice(n, labels)                    (labelled)
        + KD(n, SAM; T = 10) + 0.9 entropy(n) + w(i) BCE(n, other network)         (all slices)
    fused map:  CE + Dice(fused, labels)                                           (labelled)
    SAM:        CE + Dice(SAM, labels)                                             (labelled)

with w(i) = 0.1 x 10 x sigmoid_rampup(i // 250, 200); the fused map SAM is prompted with, and
SAM's logits the networks distil, carry no gradient. After iteration 12000 the slices exchange
their most certain patches (models/patch_exchange.py) and the networks also train on the
exchanged batch, halved per network:

        CE + Dice(n, exchanged labels) + 0.9 entropy(n) + w(i) [BCE(n, other network)
        + CE + Dice(n on the exchanged unlabelled slices, argmax of the exchanged fused map)]
    and CE + Dice(exchanged fused map, exchanged labels).

The networks train with SGD, SAM's trained parts with Adam (two parameter groups, config.py's
`group_optimizers`). The test-time output is the fused map: SAM is used in training only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from models.knowsam_losses import ce_dice, cross_consistency, distillation_loss, normalised_entropy
from models.patch_exchange import exchange_patches
from models.prediction_fusion import PredictionFusion
from models.prompted_sam import build_prompted_sam
from models.sam_builder import PATCH_SIZE, SAM_SIZES
from models.sam_prompts import PROMPT_DOWNSAMPLING
from models.semi_supervised import ConsistencyRamp, MethodStep, SemiSupervisedMethod
from models.unet import UNet, UNetOptions
from models.vnet import VNet

# trainer.py: optim.Adam(sam_model.parameters(), lr=args.lr = 1e-4), no weight decay (AdamW without it is Adam)
ORIGINAL_GROUP_OPTIMIZERS = {"sam": {"optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.0}}
NETWORK_SHARE = 0.5  # SGDL_loss = (UNet_loss + VNet_loss) / 2 + fusion_loss (+ the exchanged terms)
# image sides: SAM's 16 px patches, then two 2x2 poolings in the prompt generators
IMAGE_SIZE_MULTIPLE = PATCH_SIZE * PROMPT_DOWNSAMPLING


@dataclass(frozen=True)
class KnowSAMOptions:
    """KnowSAM's arguments of train_semi_SAM_ACDC.py and its trainer's constants."""

    sam_size: str = "small"  # models/sam_builder.py SAM_SIZES; the original's --model_type vit_b
    sam_checkpoint: str | None = None  # SAM's weights (sam_vit_b_01ec64.pth, with sam_size "vit_b"); None: random
    boxes_per_class: int = 1  # --box_nums
    distillation_temperature: float = 10.0  # KDLoss(T=10)
    entropy_weight: float = 0.9  # 0.9 * UNet_enp_loss
    consistency: float = 0.1  # --consistency
    consistency_scale: float = 10.0  # get_current_consistency_weight(...) * 10
    consistency_rampup: float = 200.0  # --consistency_rampup, in units of rampup_unit iterations
    rampup_unit: int = 250  # iter_num // int(max_iterations / consistency_rampup) = 50000 / 200
    exchange_start: int = 12_000  # --mixed_iterations: patches are exchanged when iter_num > 12000
    exchange_grid: int = 4  # mix_up(patch_size=4): a 4 x 4 grid of patches
    exchanged_patches: int = 5  # mix_up(top_k=5)
    # False: as the original, whose loss_diff2 gives the V-Net's term no gradient (both of its inputs
    # are detached); True: the V-Net is pulled towards the U-Net as the U-Net towards it
    symmetric_consistency: bool = False

    def __post_init__(self) -> None:
        if self.sam_size not in SAM_SIZES:
            raise ValueError(f"sam_size must be one of {sorted(SAM_SIZES)}, got {self.sam_size!r}")
        if not 0 < self.exchanged_patches <= self.exchange_grid ** 2:
            raise ValueError(f"exchanged_patches must be in 1..{self.exchange_grid ** 2} (the grid's cells), "
                             f"got {self.exchanged_patches}")


@dataclass
class NetworkLogits:
    """The two networks' logits and their fusion, (B, K, H, W) each."""

    unet: torch.Tensor
    vnet: torch.Tensor
    fused: torch.Tensor


class KnowSAM(SemiSupervisedMethod):
    """U-Net and V-Net co-trained with their fusion, and SAM prompted by the fusion as their teacher."""

    def __init__(self, in_channels: int, n_classes: int, options: KnowSAMOptions = KnowSAMOptions()) -> None:
        super().__init__()
        self.options = options
        self.unet = UNet(in_channels, n_classes, UNetOptions(upsampling="transposed"))
        self.vnet = VNet(in_channels, n_classes)
        self.fusion = PredictionFusion(n_classes)
        self.sam = build_prompted_sam(n_classes, options.sam_size, options.boxes_per_class, options.sam_checkpoint)
        self.ramp = ConsistencyRamp(options.consistency * options.consistency_scale, options.consistency_rampup,
                                    options.rampup_unit)

    def optimised_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Two optimisers, as the original: the networks and the fusion (SGD), SAM's trained parts (Adam)."""
        networks = [*self.unet.parameters(), *self.vnet.parameters(), *self.fusion.parameters()]
        return {"networks": networks, "sam": self.sam.trained_parameters()}

    def network_logits(self, images: torch.Tensor) -> NetworkLogits:
        """(B, Cin, H, W) -> the U-Net's, the V-Net's and the fused logits."""
        unet, vnet = self.unet(images), self.vnet(images)
        return NetworkLogits(unet, vnet, self.fusion(unet, vnet))

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) -> (B, K, H, W): the fused map (prediction_ACDC.py's output)."""
        return self.network_logits(images).fused

    def training_losses(self, labelled_images: torch.Tensor, labels: torch.Tensor,
                        unlabelled_images: torch.Tensor, iteration: int) -> MethodStep:
        """labelled_images (L, Cin, H, W), labels (L, H, W), unlabelled_images (L, Cin, H, W)."""
        n_labelled = labelled_images.shape[0]
        images = torch.cat([labelled_images, unlabelled_images])
        logits = self.network_logits(images)
        sam_logits = self.sam(images, logits.fused.detach())  # (B, K, H, W)
        weight = self.ramp(iteration)
        losses = {"fusion_supervised": ce_dice(logits.fused[:n_labelled], labels),
                  "sam_supervised": ce_dice(sam_logits[:n_labelled], labels)}
        for name, network, other in (("unet", logits.unet, logits.vnet), ("vnet", logits.vnet, logits.unet)):
            probabilities, other_probabilities = torch.softmax(network.float(), 1), torch.softmax(other.float(), 1)
            losses[f"{name}_supervised"] = NETWORK_SHARE * ce_dice(network[:n_labelled], labels)
            losses[f"{name}_distillation"] = NETWORK_SHARE * distillation_loss(
                network, sam_logits, self.options.distillation_temperature)
            losses[f"{name}_entropy"] = NETWORK_SHARE * self.options.entropy_weight * normalised_entropy(probabilities)
            losses[f"{name}_consistency"] = NETWORK_SHARE * weight * self.consistency(name, probabilities,
                                                                                     other_probabilities)
        exchanging = iteration > self.options.exchange_start
        if exchanging:
            pseudo_labels = sam_logits[n_labelled:].detach().argmax(dim=1)
            losses.update(self.exchange_losses(labelled_images, labels, unlabelled_images, pseudo_labels,
                                               torch.softmax(logits.fused.detach().float(), dim=1), weight))
        return MethodStep(losses=losses, logits=logits.fused,
                          scalars={"consistency_weight": weight, "patch_exchange": float(exchanging)})

    def consistency(self, name: str, probabilities: torch.Tensor, other_probabilities: torch.Tensor) -> torch.Tensor:
        """The cross-consistency of network `name` ("unet" | "vnet") towards the other (B, K, H, W)
        probabilities. The V-Net's term is the original's loss_diff2 unless symmetric_consistency:
        the U-Net's detached probabilities against the V-Net's, detached too (no gradient)."""
        if name == "vnet" and not self.options.symmetric_consistency:
            return cross_consistency(other_probabilities.detach(), probabilities.detach())
        return cross_consistency(probabilities, other_probabilities.detach())

    def exchange_losses(self, labelled_images: torch.Tensor, labels: torch.Tensor, unlabelled_images: torch.Tensor,
                        pseudo_labels: torch.Tensor, fused_probabilities: torch.Tensor,
                        weight: float) -> dict[str, torch.Tensor]:
        """The terms of the exchanged batch (mix_up): per network, its losses against the exchanged
        labels, its entropy, and (ramped) its consistency and its fit to the exchanged fused map on
        the unlabelled half; and the exchanged fused map's loss."""
        n_labelled = labelled_images.shape[0]
        exchanged = exchange_patches(labelled_images, labels, unlabelled_images, pseudo_labels, fused_probabilities,
                                     self.options.exchange_grid, self.options.exchanged_patches)
        logits = self.network_logits(exchanged.images)
        fused_pseudo_labels = logits.fused[n_labelled:].detach().argmax(dim=1)
        losses = {"fusion_exchanged": ce_dice(logits.fused, exchanged.labels)}
        for name, network, other in (("unet", logits.unet, logits.vnet), ("vnet", logits.vnet, logits.unet)):
            probabilities, other_probabilities = torch.softmax(network.float(), 1), torch.softmax(other.float(), 1)
            unsupervised = ce_dice(network[n_labelled:], fused_pseudo_labels)
            losses[f"{name}_exchanged"] = NETWORK_SHARE * (
                ce_dice(network, exchanged.labels) + self.options.entropy_weight * normalised_entropy(probabilities)
                + weight * (self.consistency(name, probabilities, other_probabilities) + unsupervised))
        return losses
