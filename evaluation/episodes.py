"""Test-time episodes of the SSL-ALPNet protocol (docs/PROTOCOL.md, "Test-time episodes").

For one organ: the slices of each support scan that contain it (in the labels at the resolution
the model sees, `image_size`, so that no support mask is emptied by resizing; SSL-ALPNet's
`classmap_1.json` lists them at file resolution, which is the same when images are not resized)
are split into `n_parts` chunks and chunk p uses the slice at
`zlist[int(fraction_p * len(zlist))]`, fraction_p = 1 / (2 n) + p (1 - 1 / n) / (n - 1)
(1/6, 1/2, 5/6 for n = 3; 1/2 for n = 1), the arithmetic of SSL-ALPNet's `get_support`. Each query
scan's slices inside the organ's ground-truth z-range widened by `z_margin` (clipped to the volume)
are assigned to part `floor((z - z_min) / ((z_max - z_min) / n))` clipped to 0..n-1, part 0 when
the organ spans one slice (SSL-ALPNet's `ValidationDataset`). k support scans give S = k shots;
with `n_support_slices` = N > 1 (docs/PROTOCOL.md, "Larger support sets") each support scan gives
its chunk slice and the N - 1 slices containing the organ nearest to it, S = k N shots, scan by scan.
Each episode carries the query scan's voxel spacing, which the surface distances need. A query
scan without the organ has no episode for it (docs/PROTOCOL.md, "Organs absent from a query scan").
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Mapping

import numpy as np
import torch

from dataloaders.episode_base import IMAGE_CHANNELS
from dataloaders.slice_selection import slices_containing
from utils.io import DataError

if TYPE_CHECKING:
    from dataloaders.folds import FoldSplit
    from dataloaders.specs import DatasetSpec
    from dataloaders.volumes import Scan

logger = logging.getLogger(__name__)


@dataclass
class TestEpisode:
    """Everything needed to segment and score one organ in one query scan (docs/DESIGN.md "Episodes").

    support_images (P, S, 3, H, W) float32, support_masks (P, S, H, W) float32 in {0, 1},
    query_images (Z, 3, H, W) float32 (a read-only channel-tiled view: copy before writing),
    query_labels (Z, H0, W0) int64 binary at file resolution, part_index (Z,) int64 in 0..P-1,
    z_indices (Z,) int64 consecutive slice numbers in the volume, volume_shape (Z_total, H0, W0);
    voxel_spacing (z, y, x) mm of the query's voxels at file resolution;
    support_scan_ids (S,) and support_z_indices (P, S) int64 say which slices the supports are
    (S = support scans x support slices per scan, the slices of one scan adjacent).
    """

    __test__ = False  # not a pytest test class despite the name

    label: int
    organ: str
    query_scan_id: int
    support_images: torch.Tensor
    support_masks: torch.Tensor
    query_images: torch.Tensor
    query_labels: torch.Tensor
    part_index: torch.Tensor
    z_indices: torch.Tensor
    volume_shape: tuple[int, int, int]
    voxel_spacing: tuple[float, float, float]
    support_scan_ids: tuple[int, ...]
    support_z_indices: torch.Tensor


def part_fractions(n_parts: int) -> list[float]:
    """Relative positions of the support slices in the organ's slice list: [1/6, 1/2, 5/6] for 3."""
    if n_parts < 1:
        raise ValueError(f"n_parts must be positive, got {n_parts}")
    if n_parts == 1:
        return [0.5]
    half_part = 1 / (n_parts * 2)
    part_interval = (1.0 - 1.0 / n_parts) / (n_parts - 1)
    return [half_part + part_interval * part for part in range(n_parts)]


def support_slice_indices(organ_slices: np.ndarray, n_parts: int) -> list[int]:
    """Sorted z indices containing the organ (N,) -> the support slice of each of the n_parts chunks."""
    return [int(organ_slices[int(fraction * len(organ_slices))]) for fraction in part_fractions(n_parts)]


def nearest_organ_slices(organ_slices: np.ndarray, centre: int, count: int) -> list[int]:
    """Sorted z indices containing the organ (N,) -> the `count` of them nearest to `centre` (a
    member), nearest first, the lower z first at equal distance; `centre` itself comes first."""
    if count > len(organ_slices):
        raise DataError(f"{count} support slices requested, but the organ is in {len(organ_slices)} slices only")
    return sorted((int(z) for z in organ_slices), key=lambda z: (abs(z - centre), z))[:count]


def assign_parts(z_indices: np.ndarray, z_min: int, z_max: int, n_parts: int) -> np.ndarray:
    """(Z,) slice numbers -> (Z,) int64 part of each, from the organ's z-range [z_min, z_max]."""
    if z_max == z_min:
        return np.zeros(len(z_indices), dtype=np.int64)
    chunk = (z_max - z_min) / n_parts
    parts = np.array([int((z - z_min) // chunk) for z in z_indices], dtype=np.int64)
    return np.clip(parts, 0, n_parts - 1)


def _tiled(slices: np.ndarray) -> torch.Tensor:
    """(N, H, W) -> (N, 3, H, W) float32 view tiling the grey channel."""
    return torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32)).unsqueeze(1).expand(
        -1, IMAGE_CHANNELS, -1, -1)


def _query_organ_slices(scan: "Scan", label: int, organ: str) -> np.ndarray:
    """The query's slices showing the organ at file resolution, where it is scored."""
    organ_slices = slices_containing(scan.native_labels, label)
    if len(organ_slices) == 0:
        raise DataError(f"query scan {scan.scan_id}: organ {organ} (label {label}) appears in no slice")
    return organ_slices


def _support_organ_slices(scan: "Scan", label: int, organ: str) -> np.ndarray:
    """The support's slices showing the organ at the model's resolution, where its mask is taken."""
    organ_slices = slices_containing(scan.labels, label)
    if len(organ_slices) == 0:
        native_count = len(slices_containing(scan.native_labels, label))
        where = (f"at the model's resolution {scan.labels.shape[1]} x {scan.labels.shape[2]} (it is in "
                 f"{native_count} slice(s) at file resolution; a larger image_size keeps it)" if native_count else "")
        raise DataError(f"support scan {scan.scan_id}: organ {organ} (label {label}) appears in no slice {where}".rstrip())
    return organ_slices


def build_test_episodes(scans: Mapping[int, "Scan"], split: "FoldSplit", label: int, organ: str, *,
                        n_parts: int, z_margin: int, n_support_slices: int) -> list[TestEpisode]:
    """One `TestEpisode` per query scan of `split` for organ `label` (named `organ`).

    scans must hold every id of `split.query_ids` and `split.support_ids`;
    S = len(support_ids) x n_support_slices. Raises DataError when a scan is missing, does not
    contain the organ, or a support scan has fewer than n_support_slices slices with it.
    """
    missing = [scan_id for scan_id in (*split.support_ids, *split.query_ids) if scan_id not in scans]
    if missing:
        raise DataError(f"scans {missing} of the fold split are not loaded (have {sorted(scans)})")

    support_z = []  # per shot, the z of each part
    shot_scan_ids = []  # per shot, its support scan
    for scan_id in split.support_ids:
        organ_slices = _support_organ_slices(scans[scan_id], label, organ)
        try:
            neighbours = [nearest_organ_slices(organ_slices, centre, n_support_slices)
                          for centre in support_slice_indices(organ_slices, n_parts)]  # (P, N)
        except DataError as error:
            raise DataError(f"support scan {scan_id}, organ {organ}: {error}") from None
        support_z += [list(z_row) for z_row in zip(*neighbours)]
        shot_scan_ids += [scan_id] * n_support_slices
    support_z_indices = torch.tensor(support_z, dtype=torch.int64).T  # (P, S)
    support_images = torch.stack([
        _tiled(np.stack([scans[scan_id].image[z_row[part]]
                         for scan_id, z_row in zip(shot_scan_ids, support_z)]))
        for part in range(n_parts)])
    support_masks = torch.stack([
        torch.from_numpy(np.stack([scans[scan_id].labels[z_row[part]] == label
                                   for scan_id, z_row in zip(shot_scan_ids, support_z)]))
        for part in range(n_parts)]).to(torch.float32)

    episodes = []
    for scan_id in split.query_ids:
        scan = scans[scan_id]
        organ_slices = _query_organ_slices(scan, label, organ)
        z_min, z_max = int(organ_slices[0]), int(organ_slices[-1])
        n_slices = scan.native_labels.shape[0]
        z_indices = np.arange(max(z_min - z_margin, 0), min(z_max + z_margin, n_slices - 1) + 1)
        episodes.append(TestEpisode(
            label=label, organ=organ, query_scan_id=scan_id,
            support_images=support_images, support_masks=support_masks,
            query_images=_tiled(scan.image[z_indices]),
            query_labels=torch.from_numpy((scan.native_labels[z_indices] == label).astype(np.int64)),
            part_index=torch.from_numpy(assign_parts(z_indices, z_min, z_max, n_parts)),
            z_indices=torch.from_numpy(z_indices.astype(np.int64)),
            volume_shape=tuple(int(size) for size in scan.native_labels.shape),
            voxel_spacing=tuple(float(size) for size in reversed(scan.spacing)),  # files store (x, y, z)
            support_scan_ids=tuple(shot_scan_ids), support_z_indices=support_z_indices))
        logger.debug("test episode %s scan %d: slices %d..%d", organ, scan_id, z_indices[0], z_indices[-1])
    return episodes


def query_scans_without_organ(scans: Mapping[int, "Scan"], split: "FoldSplit", spec: "DatasetSpec",
                              labels: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """{organ: the loaded query scans of `split` in which it appears in no slice}, for the organs of
    `labels` absent from at least one query scan."""
    absent = {spec.organs[label]: tuple(scan_id for scan_id in split.query_ids if scan_id in scans
                                        and len(slices_containing(scans[scan_id].native_labels, label)) == 0)
              for label in labels}
    return {organ: scan_ids for organ, scan_ids in absent.items() if scan_ids}


def fold_test_episodes(scans: Mapping[int, "Scan"], split: "FoldSplit", spec: "DatasetSpec",
                       labels: tuple[int, ...], *, n_parts: int, z_margin: int,
                       n_support_slices: int) -> list[TestEpisode]:
    """Every (organ, query scan) test episode of a fold, organ by organ in the order of `labels`.

    A query scan in which an organ appears in no slice has no episode for that organ (docs/PROTOCOL.md,
    "Organs absent from a query scan"); `query_scans_without_organ` names those scans.
    """
    absent = query_scans_without_organ(scans, split, spec, labels)
    return [
        episode
        for label in labels
        for episode in build_test_episodes(
            scans, replace(split, query_ids=tuple(scan_id for scan_id in split.query_ids
                                                  if scan_id not in absent.get(spec.organs[label], ()))),
            label=label, organ=spec.organs[label], n_parts=n_parts, z_margin=z_margin,
            n_support_slices=n_support_slices)
    ]
