"""From a composed config to the parts of a semi-supervised experiment (docs/DESIGN.md, "Two tracks").

- `semi_supervised_data(config)`: ACDC's SSL4MIS split, a volume dataset's fold with
  `labelled_scans` labelled scans (dataloaders/semi_supervised_data.py), or a 2D image dataset's
  split with MGCC's `semi_percent` labelled (dataloaders/image_datasets.py);
- `training_slices(config, data)`: the two-stream batches' dataset (dataloaders/slice_batches.py),
  its unlabelled pool from `unlabelled_source` (dataloaders/generated_images.py);
- `build_method(config)`: the method of `config["model"]["name"]` for the dataset's classes;
- `labelled_count(config)` and `unlabelled_batch_size(config)`: what the config asks for;
- `labelled_share_of(dataset, ...)`: the labelled share of the training images (config.py: MGCC's iterations).
"""
from __future__ import annotations

from dataloaders.acdc import ACDC_CLASSES, ACDC_NAME, PATIENTS_TO_SLICES
from dataloaders.experiment_data import dataset_directories
from dataloaders.generated_images import with_unlabelled_source
from dataloaders.image_datasets import IMAGE_DATASET_SPECS, image_dataset_data, is_image_dataset
from dataloaders.semi_supervised_data import ALL_LABELLED, SemiSupervisedData, acdc_data, volume_dataset_data
from dataloaders.slice_batches import TwoStreamSlices
from dataloaders.specs import get_spec
from dataloaders.volumes import resolve_data_root
from models import build_semi_supervised_method
from models.semi_supervised import SemiSupervisedMethod

IMAGE_CHANNELS = 1  # grey MRI / CT slices, as SSL4MIS's in_chns=1


def is_acdc(config: dict) -> bool:
    return config["dataset"] == ACDC_NAME


def labelled_count(config: dict) -> int | float | str:
    """ACDC: labelled patients (SSL4MIS's counts); a volume dataset: labelled scans; "all": every
    slice; a 2D image dataset: the labelled share of its training list (semi_percent)."""
    if is_image_dataset(config["dataset"]):
        return config["semi_percent"]
    return config["labelled_patients"] if is_acdc(config) else config["labelled_scans"]


def labelled_share_of(dataset: str, labelled_patients: int | str, semi_percent: float) -> float | None:
    """The share of a dataset's training slices that is labelled: a 2D image dataset's semi_percent,
    ACDC's SSL4MIS subsets over its whole list; None where the labels are counted in scans of a fold
    (volume datasets) or the count or share is out of range (the config checks refuse it)."""
    if is_image_dataset(dataset):
        valid = isinstance(semi_percent, (int, float)) and 0 < semi_percent <= 1
        return float(semi_percent) if valid else None
    if dataset != ACDC_NAME:
        return None
    whole = max(PATIENTS_TO_SLICES.values())
    if labelled_patients == ALL_LABELLED:
        return 1.0
    return PATIENTS_TO_SLICES[labelled_patients] / whole if labelled_patients in PATIENTS_TO_SLICES else None


def n_classes(config: dict) -> int:
    """Classes of the dataset, background included."""
    if is_image_dataset(config["dataset"]):
        return IMAGE_DATASET_SPECS[config["dataset"]].n_classes
    organs = ACDC_CLASSES if is_acdc(config) else get_spec(config["dataset"]).organs
    return max(organs) + 1


def unlabelled_batch_size(config: dict) -> int:
    return config["batch_size"] - config["labelled_batch_size"]


def semi_supervised_data(config: dict) -> SemiSupervisedData:
    """The experiment's slices and volumes (checked as they are read; errors name the file)."""
    if is_acdc(config):
        return acdc_data(resolve_data_root(config["data_root"]) / ACDC_NAME, config["labelled_patients"])
    if is_image_dataset(config["dataset"]):
        spec = IMAGE_DATASET_SPECS[config["dataset"]]
        return image_dataset_data(resolve_data_root(config["data_root"]) / spec.name, spec, config["eval_fold"],
                                  config["semi_percent"])
    spec = get_spec(config["dataset"])
    dataset_dir, derived_dir = dataset_directories(config["data_root"], config["derived_root"], spec)
    return volume_dataset_data(dataset_dir, derived_dir, spec, config["eval_fold"], config["labelled_scans"],
                               config["n_validation_scans"])


def training_slices(config: dict, data: SemiSupervisedData) -> TwoStreamSlices:
    """Augmented labelled + unlabelled slices at the patch size, batches of the config's shares; the
    unlabelled ones from `unlabelled_source` (the dataset's pool, generated images, or both)."""
    unlabelled = unlabelled_batch_size(config)
    if unlabelled:
        data = with_unlabelled_source(data, config["unlabelled_source"], config["generated_dir"])
    return TwoStreamSlices(data.labelled, data.unlabelled if unlabelled else None, config["image_size"],
                           config["labelled_batch_size"], unlabelled, config["augment"], config["seed"])


def build_method(config: dict) -> SemiSupervisedMethod:
    """A new method as `config["model"]["name"]` and `config["model_options"]` describe it."""
    return build_semi_supervised_method(config["model"]["name"], IMAGE_CHANNELS, n_classes(config),
                                        **config["model_options"])
