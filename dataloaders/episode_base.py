"""What every training-episode dataset shares (docs/DESIGN.md "Episodes"; docs/PROTOCOL.md "Training").

`TrainingEpisodes` holds the length, seed and epoch of an episode dataset and gives episode
`index` its own generator (`utils.seeding.episode_generator`), so an episode depends only on
(seed, epoch, index), never on the worker that builds it. `assemble_episode` augments the support
and query copies and returns the episode dict the models consume.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from dataloaders.augmentation import AugmentationParams, augment
from utils.seeding import episode_generator

if TYPE_CHECKING:
    from dataloaders.volumes import Scan

IMAGE_CHANNELS = 3  # grey slices are tiled for an ImageNet/COCO-style encoder


class TrainingEpisodes(Dataset):
    """Base of the training-episode datasets: `episodes_per_epoch` episodes, reseeded per epoch.

    Call `set_epoch(epoch)` before each epoch (before iterating a DataLoader over it, so that
    workers, which copy the dataset, see the new epoch) to get new episodes; the same
    (seed, epoch, index) always gives the same episode.
    """

    def __init__(self, scans: "Mapping[int, Scan] | Iterable[Scan]", n_shots: int,
                 episodes_per_epoch: int, seed: int, augmentation: AugmentationParams | None) -> None:
        if episodes_per_epoch < 1 or n_shots < 1:
            raise ValueError(f"episodes_per_epoch ({episodes_per_epoch}) and n_shots ({n_shots}) "
                             f"must be positive")
        self.scans = scans_by_id(scans)
        self.n_shots = n_shots
        self.episodes_per_epoch = episodes_per_epoch
        self.seed = seed
        self.epoch = 0
        self.augmentation = augmentation

    def __len__(self) -> int:
        return self.episodes_per_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self, index: int) -> torch.Generator:
        """The generator of episode `index` in the current epoch."""
        if not 0 <= index < self.episodes_per_epoch:
            raise IndexError(f"episode index {index} outside 0..{self.episodes_per_epoch - 1}")
        return episode_generator(self.seed, self.epoch, index)


def scans_by_id(scans: "Mapping[int, Scan] | Iterable[Scan]") -> "dict[int, Scan]":
    """{scan id: Scan} from a mapping (as `load_scans` returns) or an iterable of scans."""
    if isinstance(scans, Mapping):
        return dict(scans)
    return {scan.scan_id: scan for scan in scans}


def _augmented_copy(image: np.ndarray, mask: np.ndarray, augmentation: AugmentationParams | None,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """image (H, W), mask (H, W) -> image (3, H, W) float32, mask (H, W) float32 in {0, 1}."""
    # copies: loaded scans are read-only and shared between episodes
    image_t = torch.from_numpy(np.array(image, dtype=np.float32)).unsqueeze(0)
    mask_t = torch.from_numpy(np.array(mask, dtype=np.float32)).unsqueeze(0)
    if augmentation is not None:
        image_t, mask_t = augment(image_t, mask_t, augmentation, generator)
    return image_t.repeat(IMAGE_CHANNELS, 1, 1), mask_t[0]


def assemble_episode(support: Sequence[tuple[np.ndarray, np.ndarray]],
                     query: tuple[np.ndarray, np.ndarray],
                     augmentation: AugmentationParams | None,
                     generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Augment each support and the query copy independently and stack them.

    support: S pairs (image (H, W), binary foreground (H, W)); query: one pair.
    Returns {support_images (S, 3, H, W) float32, support_masks (S, H, W) float32 in {0, 1},
    query_images (3, H, W) float32, query_labels (H, W) int64 in {0, 1}}.
    """
    support_copies = [_augmented_copy(image, mask, augmentation, generator) for image, mask in support]
    query_image, query_mask = _augmented_copy(*query, augmentation, generator)
    return {
        "support_images": torch.stack([image for image, _ in support_copies]),
        "support_masks": torch.stack([mask for _, mask in support_copies]),
        "query_images": query_image,
        "query_labels": query_mask.to(torch.int64),
    }
