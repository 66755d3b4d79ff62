"""From a composed config to the parts of an experiment (docs/DESIGN.md, "Experiment assembly").

train.py, test.py, scripts/inspect_runs.py, scripts/make_figures.py and bench/ build a fold's
data, its episodes and models only through these functions, so that every one of them sees the
same scans, the same episodes and the same model for the same config:

- `fold_data(config)`: the dataset, its folders and the fold's query / support / training scans;
- `training_dataset`, `validation_episodes`, `test_episodes`: the episodes of that fold, and
  `absent_test_organs`: the query scans without an organ, which have no test episode for it;
- `build_model_from_config(config)` and `load_trained_model(checkpoint)`: a model, new or as a
  checkpoint stored it (with the config it was trained with).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from dataloaders.augmentation import AugmentationParams
from dataloaders.dataset_metadata import intensity_statistics
from dataloaders.derived_files import ensure_derived_files
from dataloaders.episode_base import TrainingEpisodes
from dataloaders.experiment_data import dataset_directories, tested_labels, training_episodes
from dataloaders.folds import FoldSplit, fold_split
from dataloaders.specs import DatasetSpec, get_spec
from dataloaders.volumes import Scan, load_scans
from evaluation.episodes import TestEpisode, fold_test_episodes, query_scans_without_organ
from experiment.data_identity import DATA_FINGERPRINT_KEY
from experiment.semi_supervised_assembly import build_method
from experiment.training_step import DEFAULT_EMPTY_BACKGROUND_POLICY, SCORE_ZERO
from models import SEMI_SUPERVISED, build_model, model_track, original_steps
from utils.checkpoint import FILE_SHA256_KEY, load_checkpoint, load_model_weights
from utils.io import DataError

logger = logging.getLogger(__name__)

# Configs stored in checkpoints of earlier versions: keys renamed since, and the values that
# earlier versions used, as constants, for keys added since (so such runs still resume and load).
RENAMED_KEYS = {"min_foreground_area": ("min_superpixel_area", "min_supervised_foreground_area")}
EARLIER_CONSTANTS = {"steps_per_epoch": 1000, "z_margin": 0, "optimizer": "sgd", "warmup_steps": 0,
                     "n_support_slices": 1,
                     # keys added with the semi-supervised track, at the values every few-shot run had
                     "track": "few_shot", "lr_schedule": "step", "poly_power": 0.9, "labelled_patients": 7,
                     "labelled_scans": 1, "schedule_clock": "iterations", "metric_rules": "ssl4mis",
                     # added with KnowSAM's two optimisers: every earlier run trained one group with the run's
                     "group_optimizers": {}}
# keys added since whose earlier value was another key's: {new key: the key it equals}
EARLIER_COPIES = {"labelled_batch_size": "batch_size"}
# the models whose earlier runs trained on the episodes their original skips, with a background
# score of 0 (`empty_background_prototypes`); other models have no such episode, so today's default
# trains them as before
EARLIER_SCORE_ZERO_MODELS = ("alpnet",)
# model options whose default has changed, with the default that earlier configs were built with:
# {model: {option: earlier default}}; an earlier config is one without `empty_background_prototypes`,
# added in the same version as PSMnet's windowed background prototypes became its default
EARLIER_MODEL_DEFAULTS = {"psmnet": {"use_local_background_prototypes": False}}


@dataclass(frozen=True)
class FoldData:
    """Where one fold's scans are and which they are: query, support and training ids."""

    spec: DatasetSpec
    dataset_dir: Path
    derived_dir: Path
    split: FoldSplit
    image_size: int | None

    def load(self, scan_ids: tuple[int, ...], with_superpixels: bool = False) -> dict[int, Scan]:
        """{scan id: Scan} at the configured image size (cached per process, see dataloaders/volumes.py),
        normalised, where the dataset has one normalisation (CT), with the training scans' statistics."""
        return load_scans(self.dataset_dir, self.spec, scan_ids, derived_dir=self.derived_dir,
                          with_superpixels=with_superpixels, image_size=self.image_size,
                          intensity_statistics=self.intensity_statistics())

    def intensity_statistics(self) -> tuple[float, float] | None:
        """(mean, std) of the fold's training scans for globally normalised datasets, else None:
        the query and support scans never influence the normalisation."""
        if self.spec.normalization != "global":
            return None
        return intensity_statistics(self.dataset_dir, self.derived_dir, self.split.train_ids)


def fold_data(config: dict) -> FoldData:
    """The dataset and fold of `config` (dataset, data_root, derived_root, eval_fold, n_shots,
    support_choice, image_size)."""
    spec = get_spec(config["dataset"])
    dataset_dir, derived_dir = dataset_directories(config["data_root"], config["derived_root"], spec)
    split = fold_split(spec, config["eval_fold"], config["n_shots"], config["support_choice"])
    return FoldData(spec, dataset_dir, derived_dir, split, config["image_size"])


def uses_superpixels(config: dict) -> bool:
    return config["training_mode"] == "superpixel"


def ensure_superpixels(config: dict, data: FoldData, on_scan_done: Callable[[int], None] | None = None) -> None:
    """Compute the dataset's superpixels (and its other derived files) where they are missing or stale,
    in as many processes as there are CPU cores."""
    ensure_derived_files(data.dataset_dir, data.spec, data.derived_dir, method=config["superpixel_method"],
                         workers=os.cpu_count() or 1, on_scan_done=on_scan_done)


def training_dataset(config: dict, data: FoldData) -> TrainingEpisodes:
    """The training episodes of the fold's training scans: `steps_per_epoch` x `batch_size` per epoch.
    Superpixel training needs `ensure_superpixels` first."""
    scans = data.load(data.split.train_ids, with_superpixels=uses_superpixels(config))
    return training_episodes(
        mode=config["training_mode"], scans=list(scans.values()), spec=data.spec, setting=config["setting"],
        label_group=config["label_group"], exclusion_rule=config["exclusion_rule"], n_shots=config["n_shots"],
        episodes_per_epoch=config["steps_per_epoch"] * config["batch_size"],
        min_superpixel_area=config["min_superpixel_area"],
        min_supervised_foreground_area=config["min_supervised_foreground_area"],
        augmentation=AugmentationParams() if config["augment"] else None, seed=config["seed"],
    )


def validation_episodes(config: dict, data: FoldData) -> list[TestEpisode]:
    """Test-style episodes whose queries are the first `n_validation_scans` training scans (their
    labels are only logged, never trained on), with the fold's support; the fold's query scans stay
    unseen until test.py. An organ absent from a validation scan is left out of that scan's
    validation, as at test time; validation scans that show no tested organ at all are refused."""
    split = FoldSplit(query_ids=data.split.train_ids[: config["n_validation_scans"]],
                      support_ids=data.split.support_ids, train_ids=())
    episodes = _episodes(config, data, split)
    if not episodes:
        raise DataError(f"{data.spec.name} fold {config['eval_fold']}: validation scans {list(split.query_ids)} show "
                        f"none of the tested organs; raise n_validation_scans, or pass validate_every=0")
    absent = _absent_organs(config, data, split)
    if absent:
        logger.info("organs absent from validation scans, left out of their validation Dice: %s", absent)
    return episodes


def test_episodes(config: dict, data: FoldData) -> list[TestEpisode]:
    """The protocol's test episodes of the fold: every tested organ in every query scan that shows it."""
    return _episodes(config, data, data.split)


def absent_test_organs(config: dict, data: FoldData) -> dict[str, tuple[int, ...]]:
    """{organ: the fold's query scans in which it appears in no slice}: those have no test episode
    for the organ (docs/PROTOCOL.md, "Organs absent from a query scan")."""
    return _absent_organs(config, data, data.split)


def _episodes(config: dict, data: FoldData, split: FoldSplit) -> list[TestEpisode]:
    scans = data.load(split.query_ids + split.support_ids)
    labels = tested_labels(data.spec, config["setting"], config["label_group"])
    return fold_test_episodes(scans, split, data.spec, labels, n_parts=config["n_parts"], z_margin=config["z_margin"],
                              n_support_slices=config["n_support_slices"])


def _absent_organs(config: dict, data: FoldData, split: FoldSplit) -> dict[str, tuple[int, ...]]:
    labels = tested_labels(data.spec, config["setting"], config["label_group"])
    return query_scans_without_organ(data.load(split.query_ids), split, data.spec, labels)


def build_model_from_config(config: dict) -> torch.nn.Module:
    """A new model (few-shot) or method (semi-supervised) as `config["model"]` and
    `config["model_options"]` describe it."""
    if model_track(config["model"]["name"]) == SEMI_SUPERVISED:
        return build_method(config)
    return build_model(**config["model"], **config["model_options"])


@dataclass(frozen=True)
class TrainedModel:
    """A model rebuilt from a checkpoint, with the config it was trained with and its step."""

    model: torch.nn.Module
    config: dict
    step: int
    checkpoint: Path
    checkpoint_sha256: str  # of exactly the bytes the weights were loaded from
    data_fingerprint: dict | None = None  # of the data it was trained on (None: saved before fingerprints)


def load_trained_model(checkpoint: str | os.PathLike, device: torch.device | str = "cpu") -> TrainedModel:
    """Rebuild the model a checkpoint holds from the config stored in it; weights loaded strictly."""
    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint, map_location=device)
    config = upgrade_saved_config(state["config"])
    model = build_model_from_config(config).to(device)
    load_model_weights(model, state["model"], checkpoint)
    return TrainedModel(model, config, state["step"], checkpoint, state[FILE_SHA256_KEY],
                        state.get("extra", {}).get(DATA_FINGERPRINT_KEY))


def upgrade_saved_config(config: dict) -> dict:
    """A config stored by an earlier version with today's keys (see RENAMED_KEYS, EARLIER_CONSTANTS) and
    the model options it was built with (EARLIER_MODEL_DEFAULTS)."""
    upgraded = dict(config)
    for old, new_keys in RENAMED_KEYS.items():
        if old in upgraded:
            value = upgraded.pop(old)
            for new in new_keys:
                upgraded.setdefault(new, value)
    for key, value in EARLIER_CONSTANTS.items():
        upgraded.setdefault(key, value)
    for key, source in EARLIER_COPIES.items():
        upgraded.setdefault(key, upgraded[source])
    upgraded.setdefault("original_n_steps", original_steps(upgraded["model"]["name"]))
    if "empty_background_prototypes" not in upgraded:
        earlier_defaults = EARLIER_MODEL_DEFAULTS.get(upgraded["model"]["name"], {})
        upgraded["model_options"] = {**earlier_defaults, **upgraded["model_options"]}
    upgraded.setdefault("empty_background_prototypes", SCORE_ZERO if upgraded["model"]["name"] in
                        EARLIER_SCORE_ZERO_MODELS else DEFAULT_EMPTY_BACKGROUND_POLICY)
    return upgraded
