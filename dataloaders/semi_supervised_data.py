"""The data of one semi-supervised experiment: labelled and unlabelled training slices, validation
and test volumes (docs/PROTOCOL.md, "Semi-supervised segmentation").

- ACDC (SSL4MIS's layout, dataloaders/acdc.py): the first PATIENTS_TO_SLICES[n] slices of
  train_slices.list are labelled, the rest of that list is the unlabelled pool; val.list and
  test.list name the validation and test volumes.
- The project's volume datasets (CHAOST2, SABS, CMR, DEMO), from a few-shot fold: the fold's
  query scans are the test set; the labelled scans are the `labelled_scans` scans that the
  few-shot protocol would take as supports with that many shots (one labelled scan is the
  few-shot support scan: both tracks spend the same labels); validation takes the first
  `n_validation_scans` of the remaining training scans, and the rest is the unlabelled pool. Every
  structure is a class at once (multi-class labels), and each volume is min-max normalised to
  [0, 1] as SSL4MIS's preprocessing does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataloaders.acdc import (ACDC_CLASSES, ACDC_NAME, TEST_LIST, TRAIN_SLICES_LIST, VALIDATION_LIST,
                              check_listed_files, labelled_slice_count, read_id_list, read_slice_image,
                              read_slice_label, read_volume, slice_path, volume_path)
from dataloaders.folds import fold_split
from dataloaders.slice_batches import SliceSet
from dataloaders.specs import DatasetSpec
from dataloaders.volumes import Scan, load_scans
from utils.io import DataError

ALL_LABELLED = "all"  # labelled_patients / labelled_scans: every training slice keeps its label
# a globally normalised (CT) dataset's scans are loaded as stored: min-max needs no statistics
UNNORMALISED_STATISTICS = (0.0, 1.0)
VOXEL_SPACING = (1.0, 1.0, 1.0)  # ACDC's h5 files store no spacing: distances are in voxels


@dataclass(frozen=True)
class EvaluationVolume:
    """A validation or test volume: image (Z, H, W) float32 in [0, 1], label (Z, H, W) int64, its
    voxel spacing (z, y, x) and the unit distances are measured in ("mm" or "voxels"); `scan`
    (volume datasets) keeps the file geometry for writing predictions."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    distance_unit: str
    scan: Scan | None = None


@dataclass(frozen=True)
class SemiSupervisedData:
    """One experiment's slices and volumes; classes: {label id: name}, background 0 excluded."""

    name: str
    classes: dict[int, str]
    labelled: SliceSet
    unlabelled: SliceSet
    validation_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    volumes: dict[str, EvaluationVolume] | None = None  # volume datasets: every evaluation volume, loaded
    dataset_dir: Path | None = None  # ACDC: where validation and test volumes are read from

    @property
    def n_classes(self) -> int:
        return max(self.classes) + 1

    def evaluation_volumes(self, case_ids: tuple[str, ...]) -> list[EvaluationVolume]:
        """The validation or test volumes of `case_ids`, read and checked."""
        if self.volumes is not None:
            return [self.volumes[case_id] for case_id in case_ids]
        volumes = []
        for case_id in case_ids:
            image, label = read_volume(volume_path(self.dataset_dir, case_id), self.n_classes)
            volumes.append(EvaluationVolume(case_id, image, label, VOXEL_SPACING, "voxels"))
        return volumes


def acdc_data(dataset_dir: Path, labelled_patients: int | str) -> SemiSupervisedData:
    """ACDC's slices split as SSL4MIS splits them; every listed file must exist, the labelled slices
    are read and checked now (labels in 0..3), the unlabelled ones' images only."""
    n_classes = max(ACDC_CLASSES) + 1
    slice_ids = read_id_list(dataset_dir / TRAIN_SLICES_LIST)
    n_labelled = len(slice_ids) if labelled_patients == ALL_LABELLED else labelled_slice_count(labelled_patients)
    if n_labelled > len(slice_ids):
        raise DataError(f"{dataset_dir / TRAIN_SLICES_LIST}: {labelled_patients} labelled patients need "
                        f"{n_labelled} slices, the list has {len(slice_ids)}")
    paths = [slice_path(dataset_dir, slice_id) for slice_id in slice_ids]
    check_listed_files(paths, dataset_dir / TRAIN_SLICES_LIST)
    for path in paths[:n_labelled]:
        read_slice_label(path, n_classes)
    for path in paths:
        read_slice_image(path)
    validation_ids, test_ids = (tuple(read_id_list(dataset_dir / name)) for name in (VALIDATION_LIST, TEST_LIST))
    for ids, name in ((validation_ids, VALIDATION_LIST), (test_ids, TEST_LIST)):
        check_listed_files([volume_path(dataset_dir, case_id) for case_id in ids], dataset_dir / name)
    labelled = SliceSet(tuple(slice_ids[:n_labelled]), tuple(paths[:n_labelled]), tuple(paths[:n_labelled]), n_classes)
    unlabelled = SliceSet(tuple(slice_ids[n_labelled:]), tuple(paths[n_labelled:]), None, n_classes)
    return SemiSupervisedData(ACDC_NAME, dict(ACDC_CLASSES), labelled, unlabelled, validation_ids, test_ids,
                              dataset_dir=dataset_dir)


def volume_dataset_data(dataset_dir: Path, derived_dir: Path, spec: DatasetSpec, fold: int,
                        labelled_scans: int | str, n_validation_scans: int) -> SemiSupervisedData:
    """A few-shot dataset's fold as a semi-supervised experiment (see the module docstring)."""
    split = semi_supervised_fold(spec, fold, labelled_scans, n_validation_scans)
    labelled_ids, unlabelled_ids, validation_ids, test_ids = split
    statistics = UNNORMALISED_STATISTICS if spec.normalization == "global" else None
    scans = load_scans(dataset_dir, spec, tuple(sorted(set(spec.scan_ids))), derived_dir=derived_dir,
                       intensity_statistics=statistics)
    images = {scan_id: min_max_normalised(scan.image) for scan_id, scan in scans.items()}

    def slices(scan_ids: tuple[int, ...], with_labels: bool) -> SliceSet:
        keys = [(scan_id, z) for scan_id in scan_ids for z in range(images[scan_id].shape[0])]
        return SliceSet(tuple(f"scan{scan_id}_slice{z}" for scan_id, z in keys),
                        tuple(images[scan_id][z] for scan_id, z in keys),
                        tuple(scans[scan_id].native_labels[z] for scan_id, z in keys) if with_labels else None,
                        max(spec.organs) + 1)

    volumes = {str(scan_id): EvaluationVolume(str(scan_id), images[scan_id], np.asarray(scans[scan_id].native_labels),
                                              tuple(reversed(scans[scan_id].spacing)), "mm", scans[scan_id])
               for scan_id in validation_ids + test_ids}
    return SemiSupervisedData(spec.name, dict(spec.organs), slices(labelled_ids, True), slices(unlabelled_ids, False),
                              tuple(map(str, validation_ids)), tuple(map(str, test_ids)), volumes=volumes)


def semi_supervised_fold(spec: DatasetSpec, fold: int, labelled_scans: int | str, n_validation_scans: int
                         ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(labelled, unlabelled, validation, test) scan ids of a few-shot fold (see the module docstring)."""
    protocol = fold_split(spec, fold)
    n_training = len(protocol.support_ids) + len(protocol.train_ids)
    if labelled_scans == ALL_LABELLED:
        labelled_scans = n_training - n_validation_scans
    if not isinstance(labelled_scans, int) or not 1 <= labelled_scans <= n_training - n_validation_scans:
        raise ValueError(f"{spec.name} fold {fold}: labelled_scans={labelled_scans!r} is out of range: expected 1.."
                         f"{n_training - n_validation_scans} (the fold's {n_training} training scans less "
                         f"{n_validation_scans} validation scans) or {ALL_LABELLED!r}")
    labelled = fold_split(spec, fold, n_shots=labelled_scans).support_ids
    remaining = [scan_id for scan_id in protocol.support_ids + protocol.train_ids if scan_id not in labelled]
    validation = tuple(remaining[:n_validation_scans])
    unlabelled = tuple(remaining[n_validation_scans:])
    return labelled, unlabelled, validation, protocol.query_ids


def min_max_normalised(volume: np.ndarray) -> np.ndarray:
    """(Z, H, W) -> the same in [0, 1], (v - min) / (max - min) over the volume, float32."""
    low, high = float(volume.min()), float(volume.max())
    if not high > low:
        raise DataError(f"cannot min-max normalise a constant volume (all values {low})")
    return ((volume.astype(np.float64) - low) / (high - low)).astype(np.float32)
