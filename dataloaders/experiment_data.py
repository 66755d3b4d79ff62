"""From a dataset, a setting and a training mode to the tested organs and the training episodes.

docs/PROTOCOL.md, "Settings": Setting 1 tests every organ of the dataset's test list with one model;
Setting 2 tests one organ group per model and removes every training slice that shows an organ of
that group. Supervised training ("classic few-shot") learns from the labels of the organs that are
not tested.
"""
from __future__ import annotations

from pathlib import Path

from dataloaders.episodes_superpixel import SuperpixelEpisodes
from dataloaders.episodes_supervised import SupervisedEpisodes
from dataloaders.specs import DatasetSpec
from dataloaders.volumes import Scan, default_derived_dir, resolve_data_root

SETTINGS = (1, 2)
TRAINING_MODES = ("superpixel", "supervised")


def tested_labels(spec: DatasetSpec, setting: int, label_group: int) -> tuple[int, ...]:
    """Label ids one model is evaluated on: all test organs (Setting 1) or one group (Setting 2)."""
    if setting not in SETTINGS:
        raise ValueError(f"setting={setting}: expected one of {SETTINGS}")
    if setting == 1:
        return spec.test_labels
    if not 0 <= label_group < len(spec.setting2_groups):
        raise ValueError(
            f"label_group={label_group}: {spec.name} has {len(spec.setting2_groups)} Setting-2 groups "
            f"{[[spec.organs[label] for label in group] for group in spec.setting2_groups]}"
        )
    return spec.setting2_groups[label_group]


def excluded_training_labels(spec: DatasetSpec, setting: int, label_group: int) -> tuple[int, ...]:
    """Labels whose slices are removed from training: none in Setting 1, the tested group in Setting 2."""
    return tested_labels(spec, setting, label_group) if setting == 2 else ()


def training_episodes(
    *,
    mode: str,
    scans: list[Scan],
    spec: DatasetSpec,
    setting: int,
    label_group: int,
    exclusion_rule: str,
    n_shots: int,
    episodes_per_epoch: int,
    min_superpixel_area: int,
    min_supervised_foreground_area: int,
    augmentation,
    seed: int,
):
    """The training-episode dataset of one experiment: superpixel episodes (superpixels below
    `min_superpixel_area` pixels are redrawn) or supervised ones (a slice shows a base class from
    `min_supervised_foreground_area` pixels)."""
    if mode not in TRAINING_MODES:
        raise ValueError(f"training_mode={mode!r}: expected one of {TRAINING_MODES}")
    excluded = excluded_training_labels(spec, setting, label_group)
    common = dict(
        scans=scans,
        n_shots=n_shots,
        episodes_per_epoch=episodes_per_epoch,
        excluded_labels=excluded,
        exclusion_rule=exclusion_rule,
        augmentation=augmentation,
        seed=seed,
    )
    if mode == "superpixel":
        return SuperpixelEpisodes(min_superpixel_area=min_superpixel_area, **common)
    base_labels = tuple(label for label in spec.labels if label not in tested_labels(spec, setting, label_group))
    if not base_labels:
        raise ValueError(f"supervised training on {spec.name}: every organ is tested, no base class is left to train on")
    return SupervisedEpisodes(base_labels=base_labels, min_foreground_area=min_supervised_foreground_area, **common)


def dataset_directories(data_root: str | None, derived_root: str | None, spec: DatasetSpec) -> tuple[Path, Path]:
    """(folder of the dataset's volumes, folder of its derived files) from the configured roots."""
    dataset_dir = resolve_data_root(data_root) / spec.name
    derived_dir = Path(derived_root) / spec.name if derived_root else default_derived_dir(dataset_dir)
    return dataset_dir, derived_dir
