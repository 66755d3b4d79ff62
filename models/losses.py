"""Training losses (docs/PROTOCOL.md "Training"; docs/METHOD.md "Losses"; PANet section 3.3).

- weighted cross-entropy of the query with class weights [background 0.05, foreground 1.0] and
  ignore 255; the mean is weighted like torch's CrossEntropyLoss (divided by the summed weights
  of the counted pixels), as in SSL-ALPNet / PSMnet; a batch without any counted pixel gives 0;
- PANet's prototype alignment loss on the supports segmented back, as PANet and SSL-ALPNet
  compute it: plain cross-entropy, without the query loss's class weights;
- a soft Dice loss on the foreground probability, per image, ignoring the ignore label;
- the semi-supervised track's multi-class Dice loss, as SSL4MIS's `DiceLoss` computes it
  (`code/utils/losses.py`): per class over the whole batch, background included, squared terms in
  the denominator, smoothing 1e-5, averaged over the classes;
- SCP-Net's `DiceLoss` (Medsemiseg/SCP-Net `code/utils/losses.py`), the same sums without the
  Dice coefficient's factor 2 in the numerator: 1 - Dice / 2 per class (`half_dice_loss`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

DEFAULT_CLASS_WEIGHTS = (0.05, 1.0)  # background, foreground
IGNORE_INDEX = 255
DICE_SMOOTH = 1.0
MULTICLASS_DICE_SMOOTH = 1e-5  # SSL4MIS DiceLoss._dice_loss
HALF_DICE_SMOOTH = 1e-10  # SCP-Net DiceLoss._dice_loss, in the denominator only


def _check_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.dim() != 4 or labels.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"expected logits (B, 2, H, W) and labels (B, H, W), got {tuple(logits.shape)}, {tuple(labels.shape)}")


def weighted_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    class_weights=DEFAULT_CLASS_WEIGHTS,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """logits (B, 2, H, W), labels (B, H, W) int in {0, 1, ignore_index} -> scalar loss."""
    _check_labels(logits, labels)
    if not (labels != ignore_index).any():
        return logits.sum() * 0.0
    weights = torch.as_tensor(class_weights, dtype=torch.float32, device=logits.device)
    return F.cross_entropy(logits.float(), labels.long(), weight=weights, ignore_index=ignore_index)


def alignment_loss(
    alignment_logits: torch.Tensor,
    support_masks: torch.Tensor,
    counted: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """PANet's prototype alignment loss, as PANet and SSL-ALPNet compute it.

    alignment_logits (B, S, 2, H, W), support_masks (B, S, H, W), counted (B,) bool or None (all)
    -> scalar. Each support is labelled 1 where its mask is 1, 0 where it is 0, ignored elsewhere;
    its loss is the plain (unweighted) cross-entropy over its labelled pixels. Per episode the
    losses are divided by the number of shots and summed; episodes the model skips (`counted`
    False, PANet's `skip_ways`) add 0, and the sum is divided by the batch size, as the originals
    divide by theirs.
    """
    if alignment_logits.dim() != 5 or support_masks.shape != alignment_logits.shape[:2] + alignment_logits.shape[3:]:
        raise ValueError(
            f"expected alignment_logits (B, S, 2, H, W) and support_masks (B, S, H, W), "
            f"got {tuple(alignment_logits.shape)}, {tuple(support_masks.shape)}"
        )
    labels = torch.full_like(support_masks, ignore_index, dtype=torch.long)
    labels[support_masks == 1] = 1
    labels[support_masks == 0] = 0
    pixel_losses = F.cross_entropy(rearrange(alignment_logits, "b s k h w -> (b s) k h w").float(),
                                   rearrange(labels, "b s h w -> (b s) h w"), ignore_index=ignore_index,
                                   reduction="none")
    labelled = rearrange(labels != ignore_index, "b s h w -> (b s) h w").sum(dim=(-2, -1))
    per_support = pixel_losses.sum(dim=(-2, -1)) / labelled.clamp(min=1)
    per_episode = rearrange(per_support, "(b s) -> b s", b=alignment_logits.shape[0]).mean(dim=1)
    if counted is not None:
        per_episode = per_episode * counted.to(per_episode.dtype)
    return per_episode.mean()


def soft_dice_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX, smooth: float = DICE_SMOOTH
) -> torch.Tensor:
    """logits (B, 2, H, W), labels (B, H, W) -> 1 - mean over images of the soft foreground Dice.

    Dice = (2 sum(p y) + smooth) / (sum(p) + sum(y) + smooth) over the counted pixels.
    """
    _check_labels(logits, labels)
    counted = (labels != ignore_index).float()
    probability = torch.softmax(logits.float(), dim=1)[:, 1] * counted
    target = (labels == 1).float() * counted
    overlap = (probability * target).sum(dim=(-2, -1))
    total = probability.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1))
    return 1.0 - ((2.0 * overlap + smooth) / (total + smooth)).mean()


def class_overlaps_and_squares(probabilities: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """probabilities (B, K, H, W) (softmax), labels (B, H, W) int in 0..K-1 -> per class, summed over
    the whole batch: overlap sum(p_k y_k) (K,) and squares sum(p_k^2) + sum(y_k^2) (K,)."""
    if probabilities.dim() != 4 or labels.shape != probabilities.shape[:1] + probabilities.shape[2:]:
        raise ValueError(f"expected probabilities (B, K, H, W) and labels (B, H, W), got "
                         f"{tuple(probabilities.shape)}, {tuple(labels.shape)}")
    one_hot = F.one_hot(labels.long(), probabilities.shape[1]).permute(0, 3, 1, 2).to(probabilities.dtype)
    overlap = (probabilities * one_hot).sum(dim=(0, 2, 3))
    squares = (probabilities * probabilities).sum(dim=(0, 2, 3)) + (one_hot * one_hot).sum(dim=(0, 2, 3))
    return overlap, squares


def multiclass_dice_loss(probabilities: torch.Tensor, labels: torch.Tensor,
                         smooth: float = MULTICLASS_DICE_SMOOTH) -> torch.Tensor:
    """probabilities (B, K, H, W) (softmax), labels (B, H, W) int in 0..K-1 -> scalar.

    SSL4MIS's DiceLoss: for each class k, 1 - (2 sum(p_k y_k) + s) / (sum(p_k^2) + sum(y_k^2) + s)
    with the sums over the whole batch, then the mean over the K classes (background included).
    """
    overlap, squares = class_overlaps_and_squares(probabilities, labels)
    return (1.0 - (2.0 * overlap + smooth) / (squares + smooth)).mean()


def half_dice_loss(probabilities: torch.Tensor, labels: torch.Tensor, smooth: float = HALF_DICE_SMOOTH) -> torch.Tensor:
    """probabilities (B, K, H, W) (softmax), labels (B, H, W) int in 0..K-1 -> scalar.

    SCP-Net's DiceLoss: for each class k, 1 - sum(p_k y_k) / (sum(p_k^2) + sum(y_k^2) + s), the sums
    over the whole batch, then the mean over the K classes. Without Dice's factor 2 this is
    1 - Dice / 2: a perfect prediction scores 0.5, and the gradient is half that of
    `multiclass_dice_loss`.
    """
    overlap, squares = class_overlaps_and_squares(probabilities, labels)
    return (1.0 - overlap / (squares + smooth)).mean()
