"""KnowSAM's entropy-guided patch exchange between labelled and unlabelled slices (`Trainer.mix_up`).

Each labelled slice i is paired with unlabelled slice i. Both are cut into a 4 x 4 grid of
patches, and each patch scored by the mean entropy of the fused map's probabilities over it. Then,
per pair:

- into the unlabelled slice go the labelled slice's patches at the unlabelled slice's 5 most
  certain (lowest-entropy) cells, with their labels; elsewhere it keeps its pseudo-label;
- into the labelled slice go the unlabelled slice's patches at the labelled slice's 5 most certain
  cells, with their pseudo-labels; elsewhere it keeps its labels.

The pseudo-labels are SAM's argmax on the unlabelled slices (models/knowsam.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat

from models.knowsam_losses import entropy_map


@dataclass
class ExchangedBatch:
    """The mixed slices (labelled first) and their labels, both halves as the patch exchange made them."""

    images: torch.Tensor  # (L + U, Cin, H, W)
    labels: torch.Tensor  # (L + U, H, W) int64


def most_certain_cells(probabilities: torch.Tensor, grid: int, n_cells: int) -> torch.Tensor:
    """(B, K, H, W) class probabilities -> (B, H, W) bool: the `n_cells` cells of a grid x grid
    partition with the lowest mean entropy; H and W multiples of `grid`."""
    height, width = probabilities.shape[-2:]
    if height % grid or width % grid:
        raise ValueError(f"the patch grid {grid} x {grid} needs sides that are multiples of {grid}, "
                         f"got {height} x {width}")
    cell_entropy = rearrange(F.adaptive_avg_pool2d(entropy_map(probabilities), grid), "b 1 gh gw -> b (gh gw)")
    chosen = torch.zeros_like(cell_entropy, dtype=torch.bool)
    chosen.scatter_(1, torch.topk(cell_entropy, n_cells, dim=1, largest=False).indices, True)
    return repeat(chosen, "b (gh gw) -> b (gh ph) (gw pw)", gh=grid, ph=height // grid, pw=width // grid)


def exchange_patches(labelled_images: torch.Tensor, labels: torch.Tensor, unlabelled_images: torch.Tensor,
                     pseudo_labels: torch.Tensor, fused_probabilities: torch.Tensor, grid: int,
                     n_cells: int) -> ExchangedBatch:
    """labelled_images (L, Cin, H, W), labels (L, H, W), unlabelled_images (L, Cin, H, W),
    pseudo_labels (L, H, W), fused_probabilities (2L, K, H, W) of the labelled then the unlabelled
    slices -> the exchanged batch (2L slices, labelled first)."""
    n_labelled = labelled_images.shape[0]
    if unlabelled_images.shape[0] != n_labelled:
        raise ValueError(f"KnowSAM's patch exchange pairs each labelled slice with an unlabelled one: got "
                         f"{n_labelled} labelled and {unlabelled_images.shape[0]} unlabelled slices (set "
                         f"labelled_batch_size to half of batch_size)")
    into_labelled = most_certain_cells(fused_probabilities[:n_labelled], grid, n_cells)  # (L, H, W)
    into_unlabelled = most_certain_cells(fused_probabilities[n_labelled:], grid, n_cells)
    mixed_labelled = torch.where(into_labelled[:, None], unlabelled_images, labelled_images)
    mixed_unlabelled = torch.where(into_unlabelled[:, None], labelled_images, unlabelled_images)
    labels_of_labelled = torch.where(into_labelled, pseudo_labels, labels)
    labels_of_unlabelled = torch.where(into_unlabelled, labels, pseudo_labels)
    return ExchangedBatch(torch.cat([mixed_labelled, mixed_unlabelled]),
                          torch.cat([labels_of_labelled, labels_of_unlabelled]).long())
