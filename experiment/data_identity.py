"""The identity of the data a run trains on or an evaluation scores: a content fingerprint of the
dataset's files (docs/DESIGN.md, "Evaluation provenance").

A volume dataset (the few-shot datasets, and their semi-supervised folds) is the image and label
files of every scan its spec lists; ACDC is its .list files and every h5 file under data/. The
fingerprint covers the whole dataset, not one fold, so that every fold of one dataset has the same
one: train.py stores it in its checkpoints and refuses to resume on other data, test.py records
the evaluated data's in summary.json and the fold tables refuse rows that mix two.
"""
from __future__ import annotations

from dataloaders import acdc, image_datasets, volumes
from dataloaders.experiment_data import dataset_directories
from dataloaders.specs import get_spec
from utils.file_records import files_fingerprint

DATA_FINGERPRINT_KEY = "data_fingerprint"  # checkpoint `extra` entry: the fingerprint of the training data


def data_fingerprint(config: dict) -> dict:
    """{"dataset_dir": where the data was read, "sha256": its content's digest, "n_files": files hashed}
    of the dataset of `config` (dataset, data_root)."""
    if config["dataset"] == acdc.ACDC_NAME:
        dataset_dir = volumes.resolve_data_root(config["data_root"]) / acdc.ACDC_NAME
        files = acdc.dataset_files(dataset_dir)
    elif image_datasets.is_image_dataset(config["dataset"]):
        spec = image_datasets.IMAGE_DATASET_SPECS[config["dataset"]]
        dataset_dir = volumes.resolve_data_root(config["data_root"]) / spec.name
        files = image_datasets.dataset_files(dataset_dir, spec)
    else:
        spec = get_spec(config["dataset"])
        dataset_dir, _ = dataset_directories(config["data_root"], config["derived_root"], spec)
        files = volumes.dataset_files(dataset_dir, spec)
    return {"dataset_dir": str(dataset_dir.resolve()), "sha256": files_fingerprint(dataset_dir, files),
            "n_files": len(files)}
