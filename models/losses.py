"""Training losses (PROTOCOL.md "Training"; PSMNET.md pipeline step 6; PANet section 3.3).

- weighted cross-entropy with class weights [background 0.05, foreground 1.0] and ignore 255;
  the mean is weighted like torch's CrossEntropyLoss (divided by the summed weights of the
  counted pixels), as in PANet / SSL-ALPNet; a batch without any counted pixel gives 0;
- PANet's prototype alignment loss: the same cross-entropy on the supports segmented back,
  averaged over episodes and shots (PANet divides by the number of shots);
- a soft Dice loss on the foreground probability, per image, ignoring the ignore label.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

DEFAULT_CLASS_WEIGHTS = (0.05, 1.0)  # background, foreground
IGNORE_INDEX = 255
DICE_SMOOTH = 1.0
FOREGROUND_THRESHOLD = 0.5  # soft support mask value from which a pixel is foreground


def _check_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.dim() != 4 or labels.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"expected logits (B, 2, H, W) and labels (B, H, W), got {tuple(logits.shape)}, {tuple(labels.shape)}")


def _per_image_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, class_weights, ignore_index: int
) -> torch.Tensor:
    """logits (N, 2, H, W), labels (N, H, W) -> weighted mean cross-entropy per image (N,)."""
    weights = torch.as_tensor(class_weights, dtype=torch.float32, device=logits.device)
    losses = F.cross_entropy(logits.float(), labels.long(), weight=weights, ignore_index=ignore_index, reduction="none")
    counted = labels != ignore_index
    pixel_weights = weights[labels.long().clamp(0, len(class_weights) - 1)] * counted
    return losses.sum(dim=(-2, -1)) / pixel_weights.sum(dim=(-2, -1)).clamp(min=torch.finfo(torch.float32).tiny)


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
    class_weights=DEFAULT_CLASS_WEIGHTS,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """alignment_logits (B, S, 2, H, W), support_masks (B, S, H, W) in [0, 1] (or ignore_index)
    -> scalar: the weighted cross-entropy of each support, averaged over supports with any counted pixel."""
    if alignment_logits.dim() != 5 or support_masks.shape != alignment_logits.shape[:2] + alignment_logits.shape[3:]:
        raise ValueError(
            f"expected alignment_logits (B, S, 2, H, W) and support_masks (B, S, H, W), "
            f"got {tuple(alignment_logits.shape)}, {tuple(support_masks.shape)}"
        )
    ignored = support_masks == ignore_index
    labels = torch.where(ignored, ignore_index, (support_masks >= FOREGROUND_THRESHOLD).long())
    per_support = _per_image_cross_entropy(
        rearrange(alignment_logits, "b s k h w -> (b s) k h w"),
        rearrange(labels, "b s h w -> (b s) h w"),
        class_weights,
        ignore_index,
    )
    counted = ~rearrange(ignored, "b s h w -> (b s) (h w)").all(dim=1)
    if not counted.any():
        return alignment_logits.sum() * 0.0
    return per_support[counted].mean()


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
