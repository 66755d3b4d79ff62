"""Supervised few-shot episodes from manual labels (docs/PROTOCOL.md "Settings", last item; PANet Sec. 4).

Classic few-shot training: the model is trained on base classes (a list of label values) and
tested on others. An episode picks a base class uniformly, a query slice uniformly among the
allowed slices that contain it, and S support slices that contain it; the foreground of every
slice is that class and nothing else (other base classes are background, as in SSL-ALPNet).

Choice of the support slices: they are drawn from scans other than the query's whenever another
scan contains the class, else from the query's scan without the query slice, else the query slice
itself (logged). SSL-ALPNet and PANet draw support and query independently from the class's
slices, so they can pick neighbouring, almost identical slices of one scan; test episodes always
pair different patients, and training on same-scan pairs would make the task easier than the test
one. Supports are distinct slices when enough exist.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np
import torch

from dataloaders.augmentation import AugmentationParams
from dataloaders.episode_base import TrainingEpisodes, assemble_episode
from dataloaders.slice_selection import ExclusionRule, allowed_slices, label_areas_per_slice
from utils.io import DataError

if TYPE_CHECKING:
    from dataloaders.volumes import Scan

logger = logging.getLogger(__name__)


class SupervisedEpisodes(TrainingEpisodes):
    """Episodes of base classes from manual labels; item `index` is the DESIGN.md episode dict.

    scans:               training scans, by id or as a list (`image`, `labels` at model resolution)
    base_labels:         label values episodes may use as foreground
    n_shots:             S, support slices per episode
    episodes_per_epoch:  dataset length
    min_foreground_area: a slice counts as containing a class from this many pixels
    excluded_labels:     Setting 2: labels whose slices are removed; must not be base labels
    exclusion_rule:      "any" (protocol) or "all" (weaker option), see slice_selection
    augmentation:        augmentation ranges, or None
    seed:                episodes depend only on (seed, epoch, index)
    """

    def __init__(self, scans: "Mapping[int, Scan] | Iterable[Scan]", base_labels: Sequence[int], *, n_shots: int = 1,
                 episodes_per_epoch: int,
                 min_foreground_area: int,
                 excluded_labels: tuple[int, ...] = (), exclusion_rule: ExclusionRule = "any",
                 augmentation: AugmentationParams | None = AugmentationParams(),
                 seed: int) -> None:
        super().__init__(scans, n_shots, episodes_per_epoch, seed, augmentation)
        overlap = sorted(set(base_labels) & set(excluded_labels))
        if overlap:
            raise ValueError(f"labels {overlap} are both base classes and excluded (Setting 2)")
        # label -> (scan ids (N,), z indices (N,)) of the allowed slices containing it
        self.pools: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for label in base_labels:
            scan_ids, zs = self._slices_of(label, min_foreground_area, excluded_labels, exclusion_rule)
            if len(zs) == 0:
                logger.warning("base label %d appears in no allowed slice of scans %s: not used",
                               label, sorted(self.scans))
                continue
            self.pools[label] = (scan_ids, zs)
        if not self.pools:
            raise ValueError(f"none of the base labels {list(base_labels)} appears in an allowed slice "
                             f"of scans {sorted(self.scans)}")
        self.labels = sorted(self.pools)

    def _slices_of(self, label: int, min_area: int, excluded_labels: tuple[int, ...],
                   rule: ExclusionRule) -> tuple[np.ndarray, np.ndarray]:
        scan_ids, zs = [], []
        for scan_id, scan in sorted(self.scans.items()):
            if scan.labels.shape != scan.image.shape or scan.native_labels.shape[0] != scan.image.shape[0]:
                raise DataError(f"scan {scan_id}: image {scan.image.shape}, labels {scan.labels.shape} "
                                f"and native labels {scan.native_labels.shape} disagree")
            # Setting 2 reads presence at file resolution; the foreground must exist at model resolution
            allowed = allowed_slices(scan.native_labels, excluded_labels, rule)
            containing = np.flatnonzero(label_areas_per_slice(scan.labels, label) >= min_area)
            usable = np.intersect1d(allowed, containing)
            scan_ids.append(np.full(len(usable), scan_id, dtype=np.int64))
            zs.append(usable.astype(np.int64))
        return np.concatenate(scan_ids), np.concatenate(zs)

    def _choose(self, candidates: np.ndarray, count: int, generator: torch.Generator) -> np.ndarray:
        """`count` positions into `candidates`, distinct when there are enough of them."""
        if len(candidates) >= count:
            return candidates[torch.randperm(len(candidates), generator=generator)[:count].numpy()]
        return candidates[torch.randint(len(candidates), (count,), generator=generator).numpy()]

    def source(self, index: int) -> tuple[int, tuple[int, int], list[tuple[int, int]]]:
        """(label, (query scan id, z), [(support scan id, z)] * S) of episode `index`."""
        return self._draw_source(self.generator(index))

    def _draw_source(self, generator: torch.Generator) -> tuple[int, tuple[int, int], list[tuple[int, int]]]:
        label = self.labels[int(torch.randint(len(self.labels), (), generator=generator))]
        scan_ids, zs = self.pools[label]
        query = int(torch.randint(len(zs), (), generator=generator))
        other_scans = np.flatnonzero(scan_ids != scan_ids[query])
        same_scan = np.flatnonzero((scan_ids == scan_ids[query]) & (np.arange(len(zs)) != query))
        if len(other_scans):
            candidates = other_scans
        elif len(same_scan):
            candidates = same_scan
        else:
            logger.debug("label %d has a single slice: support and query share it", label)
            candidates = np.array([query])
        supports = self._choose(candidates, self.n_shots, generator)
        return (label, (int(scan_ids[query]), int(zs[query])),
                [(int(scan_ids[i]), int(zs[i])) for i in supports])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Episode dict: support_images (S, 3, H, W), support_masks (S, H, W), query_images
        (3, H, W), query_labels (H, W) int64; see DESIGN.md "Episodes"."""
        generator = self.generator(index)
        label, query, supports = self._draw_source(generator)

        def slice_and_mask(scan_id: int, z: int) -> tuple[np.ndarray, np.ndarray]:
            scan = self.scans[scan_id]
            return scan.image[z], scan.labels[z] == label

        return assemble_episode([slice_and_mask(*support) for support in supports],
                                slice_and_mask(*query), self.augmentation, generator)
