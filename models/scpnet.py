"""SCP-Net (Zhang et al., MICCAI 2023, "Self-aware and Cross-sample Prototypical Learning for
Semi-supervised Medical Image Segmentation", arXiv 2305.16214, its method section) as its code trains
it: Medsemiseg/SCP-Net `code/SCPNettrain.py`, `code/networks/unet.py` (`UNet_pro`, `Decoder_pro`),
`code/utils/losses.py` (docs/METHOD.md, "SCP-Net").

The network, `UNet_pro`, is SSL4MIS's U-Net (models/unet.py) with 32 feature channels in its first
stage instead of 16: 1 847 460 parameters for one input channel and four classes. Its prototype head
has no parameters. From the last decoder feature f (B, C0, H, W) and the softmax p of the logits:

- prototypes: per slice b and class k, the masked average of f under p_k (the mask's sum + 1e-5);
- similarities: the cosine s(b, x, s', k) of every pixel feature f_bx to every prototype of the
  batch (slice s', class k), unscaled (temperature 1);
- self-aware map: softmax over k of s(b, x, b, k), the slice's own prototypes;
- cross-sample map: sum over s' != b of exp s(b, x, s', k), normalised over k;
- the batch's vote: every slice s' (slice b's own included) votes argmax_k s(b, x, s', k); with q
  the shares of the B votes, H = -sum_k q_k log(q_k + 1e-6) / log K, and the original's
  `agreementmap` returns the agreement 1 - H.

The losses of a step, over all L + U slices (the labelled ones included, as the script):

- supervised, on the labelled slices: 0.5 x (cross-entropy + SCP-Net's Dice loss, which is
  1 - Dice / 2: models/losses.py `half_dice_loss`);
- self-aware consistency: mean of (self map - p)^2;
- cross-sample consistency: mean of (1 - agreement) x confidence x (cross map - p)^2, confidence =
  the largest class share of the self map. The loss takes 1 - agreement of a map that is already
  1 - H, so the cross-sample term is weighted by the vote's entropy H itself: most where the
  slices' prototypes disagree (docs/METHOD.md says more);
- consistency = (self + cross) / 2, weight 0.1 x sigmoid_rampup(iteration // 150, 1000).

The original detaches every prototype quantity in its losses (both maps, the confidence, the
agreement): gradients reach the network only through p. The head therefore runs here without a
graph, which gives the same gradients. The test-time output is the logits (test_2d.py's
`out_main[0]`); the head runs in training only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange

from models.losses import half_dice_loss
from models.prototypes import cosine_scores, masked_average_pool
from models.semi_supervised import (SUPERVISED_LOSS_SCALE, ConsistencyRamp, MethodStep, SemiSupervisedMethod,
                                    supervised_loss)
from models.unet import UNet, UNetOptions

# UNet_pro's params1: feature_chns [32, 32, 64, 128, 256] (SSL4MIS's UNet: 16 in the first stage)
UNET_PRO_OPTIONS = UNetOptions(feature_channels=(32, 32, 64, 128, 256))
SIMILARITY_SCALE = 1.0  # similarity_calulation: plain cosine similarities, no temperature
VOTE_LOG_EPS = 1e-6  # entropy_value: log(p + 1e-6)
CONSISTENCY_TERMS_AVERAGE = 0.5  # consistency_loss = (consistency_loss_aux1 + consistency_loss_aux2) / 2


@dataclass(frozen=True)
class SCPNetOptions:
    """SCPNettrain.py's arguments and constants; `prototype_consistency` is this project's ablation."""

    consistency: float = 0.1  # --consistency
    consistency_rampup: float = 1000.0  # --consistency_rampup, in units of rampup_unit iterations
    rampup_unit: int = 150  # get_current_consistency_weight(iter_num // 150)
    prototype_consistency: bool = True  # False: the self-aware and cross-sample terms are left out


@dataclass
class PrototypeMaps:
    """What `Decoder_pro` adds to the logits, for B slices, K classes, H x W pixels."""

    self_probabilities: torch.Tensor  # (B, K, H, W): softmax over classes of the similarities to the own prototypes
    cross_probabilities: torch.Tensor  # (B, K, H, W): the other slices' prototypes, exp-summed and normalised
    vote_agreement: torch.Tensor  # (B, H, W): 1 - normalised entropy of the B slices' votes


@torch.no_grad()
def prototype_maps(features: torch.Tensor, probabilities: torch.Tensor) -> PrototypeMaps:
    """features (B, C, H, W), probabilities (B, K, H, W) (softmax of the logits) -> PrototypeMaps.

    Without a graph: the original detaches every use of these maps. B >= 2 (the cross-sample map of
    a lone slice has no other slice to come from).
    """
    batch, n_classes = probabilities.shape[:2]
    if batch < 2:
        raise ValueError("SCP-Net's cross-sample prototypes need at least 2 slices per batch, got 1")
    prototypes, _ = masked_average_pool(features[:, None], probabilities[:, None])  # (B, 1, K, C)
    every_prototype = rearrange(prototypes, "b 1 k c -> 1 (b k) c").expand(batch, -1, -1)  # (B, B K, C)
    all_valid = torch.ones(every_prototype.shape[:2], dtype=torch.bool, device=features.device)
    similarity = rearrange(cosine_scores(features, every_prototype, all_valid, SIMILARITY_SCALE),
                           "b (s k) h w -> b s k h w", k=n_classes)  # pixel of slice b, prototype k of slice s
    own_similarity = rearrange(torch.diagonal(similarity, dim1=0, dim2=1), "k h w b -> b k h w")
    own_slice = torch.eye(batch, dtype=torch.bool, device=features.device)[:, :, None, None, None]
    other_slices = similarity.exp().masked_fill(own_slice, 0.0).sum(dim=1)  # (B, K, H, W)
    classes = torch.arange(n_classes, device=features.device)
    votes = (similarity.argmax(dim=2)[..., None] == classes).sum(dim=1)  # (B, H, W, K): slices voting k
    shares = votes.float() / batch
    entropy = -(shares * torch.log(shares + VOTE_LOG_EPS)).sum(dim=-1) / math.log(n_classes)
    return PrototypeMaps(self_probabilities=torch.softmax(own_similarity, dim=1),
                         cross_probabilities=other_slices / other_slices.sum(dim=1, keepdim=True),
                         vote_agreement=1.0 - entropy)


def self_aware_consistency(maps: PrototypeMaps, probabilities: torch.Tensor) -> torch.Tensor:
    """probabilities (B, K, H, W) -> mean squared difference to the self-aware map (its target)."""
    return torch.mean((maps.self_probabilities - probabilities) ** 2)


def cross_sample_consistency(maps: PrototypeMaps, probabilities: torch.Tensor) -> torch.Tensor:
    """probabilities (B, K, H, W) -> mean of (1 - agreement) x confidence x squared difference to the
    cross-sample map, as `double_weight_cross_pro_softmax_mse_loss` (its order of products)."""
    confidence = maps.self_probabilities.amax(dim=1, keepdim=True)  # (B, 1, H, W)
    uncertainty = 1.0 - maps.vote_agreement[:, None]  # (B, 1, H, W): the vote's normalised entropy
    return torch.mean(uncertainty * (confidence * (maps.cross_probabilities - probabilities) ** 2))


class SCPNet(SemiSupervisedMethod):
    """UNet_pro trained with SCP-Net's supervised and prototype consistency losses."""

    def __init__(self, in_channels: int, n_classes: int, options: SCPNetOptions = SCPNetOptions()) -> None:
        super().__init__()
        self.options = options
        self.network = UNet(in_channels, n_classes, UNET_PRO_OPTIONS)
        self.ramp = ConsistencyRamp(options.consistency, options.consistency_rampup, options.rampup_unit)

    def training_losses(self, labelled_images: torch.Tensor, labels: torch.Tensor,
                        unlabelled_images: torch.Tensor, iteration: int) -> MethodStep:
        """labelled_images (L, Cin, H, W), labels (L, H, W), unlabelled_images (U, Cin, H, W)."""
        n_labelled = labelled_images.shape[0]
        logits, features = self.network.logits_and_features(torch.cat([labelled_images, unlabelled_images]))
        cross_entropy, dice = supervised_loss(logits[:n_labelled], labels, half_dice_loss)
        losses = {"cross_entropy": SUPERVISED_LOSS_SCALE * cross_entropy, "dice": SUPERVISED_LOSS_SCALE * dice}
        if not self.options.prototype_consistency:
            return MethodStep(losses=losses, logits=logits)
        probabilities = torch.softmax(logits.float(), dim=1)
        maps = prototype_maps(features, probabilities)
        self_aware = self_aware_consistency(maps, probabilities)
        cross_sample = cross_sample_consistency(maps, probabilities)
        weight = self.ramp(iteration)
        losses["self_consistency"] = weight * CONSISTENCY_TERMS_AVERAGE * self_aware
        losses["cross_consistency"] = weight * CONSISTENCY_TERMS_AVERAGE * cross_sample
        return MethodStep(losses=losses, logits=logits,
                          scalars={"consistency_weight": weight,
                                   "self_consistency_unweighted": float(self_aware.detach()),
                                   "cross_consistency_unweighted": float(cross_sample.detach()),
                                   "vote_agreement": float(maps.vote_agreement.mean())})

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) -> (B, K, H, W): the segmentation head's logits."""
        return self.network(images)
