"""Self-supervised superpixel episodes (docs/PROTOCOL.md "Training", SSL-ALPNet Sec. 3.2).

An episode: pick one allowed slice of the training scans uniformly, pick one of its superpixels as
the foreground, and make S + 1 independently augmented copies of that slice and mask: S supports
and one query. No organ label is used, except in Setting 2 to remove the slices where an excluded
(test) organ appears.

Superpixels smaller than `min_superpixel_area` pixels are rejected and another superpixel of the
same slice is drawn (so slices stay uniformly likely); rejections are counted in
`rejected_superpixels` (per process: DataLoader workers keep their own count) and logged at debug
level. Slices without any large-enough superpixel are left out when the dataset is built.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping

import numpy as np
import torch

from dataloaders.augmentation import AugmentationParams
from dataloaders.episode_base import TrainingEpisodes, assemble_episode
from dataloaders.slice_selection import ExclusionRule, allowed_slices
from utils.io import DataError

if TYPE_CHECKING:
    from dataloaders.volumes import Scan

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuperpixelSlice:
    """One usable slice: its superpixel ids (> 0) and their areas in pixels."""

    scan_id: int
    z: int
    superpixel_ids: np.ndarray  # (N,) int64
    areas: np.ndarray  # (N,) int64


@dataclass(frozen=True)
class EpisodeSource:
    """Where an episode comes from: the slice and the superpixel id used as foreground."""

    scan_id: int
    z: int
    superpixel_id: int


class SuperpixelEpisodes(TrainingEpisodes):
    """Superpixel episodes from training scans; item `index` is the DESIGN.md episode dict.

    scans:               training scans (by id or a list), with `superpixels` (Z, H, W), `image`
    n_shots:             S, augmented support copies per episode
    episodes_per_epoch:  dataset length
    min_superpixel_area: superpixels with fewer pixels are rejected
    excluded_labels:     Setting 2: labels whose slices are removed (empty: Setting 1)
    exclusion_rule:      "any" (protocol) or "all" (weaker option), see slice_selection
    augmentation:        augmentation ranges, or None for un-augmented copies
    seed:                episodes depend only on (seed, epoch, index)
    """

    def __init__(self, scans: "Mapping[int, Scan] | Iterable[Scan]", *, n_shots: int = 1,
                 episodes_per_epoch: int,
                 min_superpixel_area: int,
                 excluded_labels: tuple[int, ...] = (), exclusion_rule: ExclusionRule = "any",
                 augmentation: AugmentationParams | None = AugmentationParams(),
                 seed: int) -> None:
        super().__init__(scans, n_shots, episodes_per_epoch, seed, augmentation)
        self.min_superpixel_area = min_superpixel_area
        self.rejected_superpixels = 0
        self.slices, self.slices_without_superpixel = self._index_slices(excluded_labels, exclusion_rule)
        if not self.slices:
            raise ValueError(f"no slice of scans {sorted(self.scans)} has a superpixel of at least "
                             f"{min_superpixel_area} pixels outside the excluded labels {excluded_labels}")
        logger.info("superpixel episodes: %d slices from %d scans (%d slices without a superpixel of "
                    ">= %d px)", len(self.slices), len(self.scans), self.slices_without_superpixel,
                    min_superpixel_area)

    def _index_slices(self, excluded_labels: tuple[int, ...],
                      rule: ExclusionRule) -> tuple[list[SuperpixelSlice], int]:
        slices, without_superpixel = [], 0
        for scan_id, scan in sorted(self.scans.items()):
            if scan.superpixels is None:
                raise DataError(f"scan {scan_id}: no superpixels loaded (load_scans(with_superpixels=True))")
            if scan.superpixels.shape != scan.image.shape or scan.native_labels.shape[0] != scan.image.shape[0]:
                raise DataError(f"scan {scan_id}: superpixels {scan.superpixels.shape}, image "
                                f"{scan.image.shape} and labels {scan.native_labels.shape} disagree")
            # presence of an excluded organ is read at file resolution, where nothing is lost to resizing
            for z in allowed_slices(scan.native_labels, excluded_labels, rule):
                areas = np.bincount(scan.superpixels[z].ravel().astype(np.int64))
                ids = np.flatnonzero(areas)
                ids = ids[ids > 0]
                if (areas[ids] >= self.min_superpixel_area).any():
                    slices.append(SuperpixelSlice(scan_id, int(z), ids, areas[ids]))
                else:
                    without_superpixel += 1
        return slices, without_superpixel

    def _draw_source(self, generator: torch.Generator) -> tuple[EpisodeSource, int]:
        """Draw the slice, then superpixels of it until one is large enough; also return rejections."""
        chosen = self.slices[int(torch.randint(len(self.slices), (), generator=generator))]
        rejections = 0
        while True:
            pick = int(torch.randint(len(chosen.superpixel_ids), (), generator=generator))
            if chosen.areas[pick] >= self.min_superpixel_area:
                return EpisodeSource(chosen.scan_id, chosen.z, int(chosen.superpixel_ids[pick])), rejections
            rejections += 1

    def source(self, index: int) -> EpisodeSource:
        """The slice and superpixel that episode `index` of the current epoch uses."""
        return self._draw_source(self.generator(index))[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Episode dict: support_images (S, 3, H, W), support_masks (S, H, W), query_images
        (3, H, W), query_labels (H, W) int64; see DESIGN.md "Episodes"."""
        generator = self.generator(index)
        source, rejections = self._draw_source(generator)
        if rejections:
            self.rejected_superpixels += rejections
            logger.debug("episode %d: rejected %d superpixels below %d px", index, rejections,
                         self.min_superpixel_area)
        scan = self.scans[source.scan_id]
        image = scan.image[source.z]
        foreground = scan.superpixels[source.z] == source.superpixel_id
        return assemble_episode([(image, foreground)] * self.n_shots, (image, foreground),
                                self.augmentation, generator)
