"""Every config value that could stop a run later, checked before the model is built, in one place.

train.py calls `check_training_config` and test.py `check_evaluation_config` on the composed config
before anything is built, so that a value out of range stops the run at once with the range in the
message, not at the first validation (`n_validation_scans=0`: IndexError), the first checkpoint
(`checkpoint_every=0`: ZeroDivisionError) or in the middle of a forward pass (an `image_size` too
small for the model's feature grid). Values that the library checks where it uses them (dataset,
fold, shots, setting, label group, precision, metrics, model options) are checked here by calling
those same checks, before the minutes of model building and superpixels that precede their use.
"""
from __future__ import annotations

import math
import numbers

from dataloaders.acdc import ACDC_NAME, labelled_slice_count
from dataloaders.experiment_data import TRAINING_MODES, tested_labels
from dataloaders.folds import fold_split
from dataloaders.generated_images import REAL, UNLABELLED_SOURCES
from dataloaders.image_datasets import IMAGE_DATASET_SPECS, is_image_dataset
from dataloaders.slice_selection import EXCLUSION_RULES
from dataloaders.semi_supervised_data import ALL_LABELLED, semi_supervised_fold
from dataloaders.specs import get_spec
from evaluation.metrics import check_metric_names
from experiment.layout import check_run_name
from evaluation.volume_scoring import METRIC_RULES, NO_POSTPROCESSING, POSTPROCESSING, SCORED_SLICES
from experiment.optimisation import GROUP_SETTINGS, LR_SCHEDULES, OPTIMIZERS
from experiment.training_step import EMPTY_BACKGROUND_POLICIES
from models import (SEMI_SUPERVISED, check_alignment_weight, image_size_multiple, minimum_feature_size, model_track,
                    uses_unlabelled)
from utils.distributed import launched_ranks
from utils.runtime import check_precision

SCHEDULE_CLOCKS = ("iterations", "scaled")

# key -> smallest valid integer, for counts that train.py uses (no upper bound)
TRAINING_COUNTS = {
    "n_steps": 1,
    "batch_size": 1,
    "steps_per_epoch": 1,
    "log_every": 1,
    "checkpoint_every": 1,
    "validate_every": 0,
    "lr_decay_every": 1,
    "warmup_steps": 0,
    "num_workers": 0,
    "min_superpixel_area": 0,
    "min_supervised_foreground_area": 0,
}
# key -> smallest valid integer, for counts that evaluation (test.py and validation) uses
EVALUATION_COUNTS = {"eval_batch_size": 1, "n_shots": 1, "n_parts": 1, "z_margin": 0, "n_support_slices": 1}
# what the smallest value of a count means, where it has a meaning of its own
COUNT_MEANINGS = {"validate_every": "0: never validate", "warmup_steps": "0: no warm-up", "num_workers": "0: load in the training process"}
# keys that must be non-negative numbers
NON_NEGATIVE_NUMBERS = ("weight_decay", "momentum", "alignment_loss_weight", "dice_loss_weight")
N_CLASSES = 2  # background and foreground: one cross-entropy weight each


class ConfigError(ValueError):
    """A config value is out of its valid range, or contradicts the checkpoint it is used with."""


def check_evaluation_config(config: dict) -> None:
    """The keys test.py and validation read: run name, counts, dataset and fold, setting, precision, metrics."""
    check_run_name_config(config)
    if model_track(config["model"]["name"]) == SEMI_SUPERVISED:
        _check_semi_supervised_evaluation(config)
        return
    _check_counts(config, EVALUATION_COUNTS)
    spec = get_spec(config["dataset"])
    fold_split(spec, config["eval_fold"], config["n_shots"], config["support_choice"])
    tested_labels(spec, config["setting"], config["label_group"])
    check_precision(config["precision"])
    check_metric_names(config["metrics"])
    if config["postprocessing"] != NO_POSTPROCESSING:
        raise ConfigError(f"config: postprocessing={config['postprocessing']!r} applies to the semi-supervised "
                          f"track's test; the few-shot track scores its episodes' predictions as they are")


def check_run_name_config(config: dict) -> None:
    """`run_name` and `model_label` (which names the default run folder) must each be one folder
    name, so that no run is written outside runs_root (`run_name=../x` or an absolute path)."""
    for key in ("run_name", "model_label"):
        if config.get(key):  # unset (None or empty): the default name
            try:
                check_run_name(config[key], key)
            except ValueError as error:
                raise ConfigError(f"config: {error}") from None


def check_training_config(config: dict) -> None:
    """Everything `check_evaluation_config` checks, and the keys only training reads."""
    check_evaluation_config(config)
    if model_track(config["model"]["name"]) == SEMI_SUPERVISED:
        _check_semi_supervised_training(config)
        return
    _check_lr_schedule(config)
    _check_counts(config, TRAINING_COUNTS)
    _check_choice(config, "training_mode", TRAINING_MODES)
    _check_choice(config, "exclusion_rule", EXCLUSION_RULES)
    _check_choice(config, "optimizer", OPTIMIZERS)
    _check_choice(config, "empty_background_prototypes", EMPTY_BACKGROUND_POLICIES)
    for key in NON_NEGATIVE_NUMBERS:
        if not _is_number(config[key]) or config[key] < 0:
            raise ConfigError(f"config: {key}={config[key]!r} is out of range: expected a number >= 0")
    if not _is_number(config["lr"]) or not config["lr"] > 0:
        raise ConfigError(f"config: lr={config['lr']!r} is out of range: expected a number > 0")
    if not _is_number(config["lr_decay"]) or not 0 < config["lr_decay"] <= 1:
        raise ConfigError(f"config: lr_decay={config['lr_decay']!r} is out of range: expected a number in (0, 1]")
    try:  # a loss term the model cannot produce (UniverSeg has no alignment branch)
        check_alignment_weight(config["model"]["name"], config["alignment_loss_weight"])
    except ValueError as error:
        raise ConfigError(f"config: {error}") from None
    weights = config["class_weights"]
    if (not isinstance(weights, (list, tuple)) or len(weights) != N_CLASSES
            or not all(_is_number(weight) and weight >= 0 for weight in weights)):
        raise ConfigError(f"config: class_weights={weights!r}: expected {N_CLASSES} numbers >= 0 "
                          f"[background, foreground]")
    _check_validation_scans(config)
    _check_image_size(config)


def _check_semi_supervised_evaluation(config: dict) -> None:
    """Dataset (ACDC, a 2D image dataset or a volume dataset), fold, counts, precision, metrics and their rules."""
    _check_counts(config, {"eval_batch_size": 1, "n_validation_scans": 1})
    _check_choice(config, "metric_rules", METRIC_RULES)
    _check_choice(config, "scored_slices", SCORED_SLICES)
    _check_choice(config, "postprocessing", POSTPROCESSING)
    check_precision(config["precision"])
    check_metric_names(config["metrics"])
    if config["dataset"] == ACDC_NAME:
        if config["eval_fold"] != 0:
            raise ConfigError(f"config: eval_fold={config['eval_fold']!r}: ACDC has one split (SSL4MIS's lists), "
                              f"fold 0")
        try:
            if config["labelled_patients"] != ALL_LABELLED:
                labelled_slice_count(config["labelled_patients"])
        except ValueError as error:
            raise ConfigError(f"config: {error}") from None
        return
    if is_image_dataset(config["dataset"]):
        _check_image_dataset(config)
        return
    spec = get_spec(config["dataset"])
    try:
        semi_supervised_fold(spec, config["eval_fold"], config["labelled_scans"], config["n_validation_scans"])
    except ValueError as error:
        raise ConfigError(f"config: {error}") from None


def _check_image_dataset(config: dict) -> None:
    """A 2D image dataset's split (eval_fold) and labelled share (semi_percent)."""
    n_splits = IMAGE_DATASET_SPECS[config["dataset"]].n_splits
    if not _is_integer(config["eval_fold"]) or not 0 <= config["eval_fold"] < n_splits:
        raise ConfigError(f"config: eval_fold={config['eval_fold']!r}: {config['dataset']} has {n_splits} splits, "
                          f"folds 0..{n_splits - 1}")
    if not _is_number(config["semi_percent"]) or not 0 < config["semi_percent"] <= 1:
        raise ConfigError(f"config: semi_percent={config['semi_percent']!r} is out of range: expected a share in (0, 1]")


def _check_semi_supervised_training(config: dict) -> None:
    """Counts, batch shares, optimiser and schedule of a semi-supervised run (single process)."""
    _check_counts(config, {key: TRAINING_COUNTS[key] for key in
                           ("n_steps", "batch_size", "log_every", "checkpoint_every", "validate_every", "num_workers")})
    _check_counts(config, {"labelled_batch_size": 1, "original_n_steps": 1})
    _check_choice(config, "optimizer", OPTIMIZERS)
    _check_choice(config, "schedule_clock", SCHEDULE_CLOCKS)
    _check_lr_schedule(config)
    for key in ("weight_decay", "momentum"):
        if not _is_number(config[key]) or config[key] < 0:
            raise ConfigError(f"config: {key}={config[key]!r} is out of range: expected a number >= 0")
    if not _is_number(config["lr"]) or not config["lr"] > 0:
        raise ConfigError(f"config: lr={config['lr']!r} is out of range: expected a number > 0")
    _check_group_optimizers(config["group_optimizers"])
    name, labelled, batch = config["model"]["name"], config["labelled_batch_size"], config["batch_size"]
    if not uses_unlabelled(name) and labelled != batch:
        raise ConfigError(f"config: labelled_batch_size={labelled} of batch_size={batch} leaves {batch - labelled} "
                          f"unlabelled slices per batch, but {name!r} trains on labelled slices only; pass "
                          f"labelled_batch_size={batch}")
    if uses_unlabelled(name) and not 1 <= labelled < batch:
        raise ConfigError(f"config: labelled_batch_size={labelled} is out of range for {name!r}: expected 1.."
                          f"{batch - 1} (batch_size {batch} less at least one unlabelled slice)")
    multiple = image_size_multiple(name, config["model_options"])
    size = config["image_size"]
    if not _is_integer(size) or size < multiple or size % multiple:
        raise ConfigError(f"config: image_size={size!r} is out of range: {name} needs a positive multiple of "
                          f"{multiple} (its U-Net pools four times)")
    _check_choice(config, "unlabelled_source", UNLABELLED_SOURCES)
    if config["unlabelled_source"] != REAL and (not uses_unlabelled(name) or config["generated_dir"] is None):
        raise ConfigError(f"config: unlabelled_source={config['unlabelled_source']!r} needs a method that uses "
                          f"unlabelled images and generated_dir=<a folder of scripts/generate_unlabelled.py>")
    if launched_ranks().distributed:
        raise ConfigError("the semi-supervised track trains in one process; run train.py without torchrun")


def _check_group_optimizers(groups: dict) -> None:
    """{parameter group: {setting: value}}, settings of GROUP_SETTINGS with the run's ranges."""
    if not isinstance(groups, dict) or not all(isinstance(settings, dict) for settings in groups.values()):
        raise ConfigError(f"config: group_optimizers={groups!r}: expected {{group: {{setting: value}}}}")
    for group, settings in groups.items():
        unknown = sorted(set(settings) - set(GROUP_SETTINGS))
        if unknown:
            raise ConfigError(f"config: group_optimizers[{group!r}] sets {unknown}; a group may set {GROUP_SETTINGS}")
        if settings.get("optimizer", OPTIMIZERS[0]) not in OPTIMIZERS:
            raise ConfigError(f"config: group_optimizers[{group!r}]['optimizer']={settings['optimizer']!r}: "
                              f"expected one of {OPTIMIZERS}")
        for key, value in settings.items():
            if key != "optimizer" and (not _is_number(value) or value < 0 or (key == "lr" and value == 0)):
                raise ConfigError(f"config: group_optimizers[{group!r}][{key!r}]={value!r} is out of range: expected "
                                  f"a number {'> 0' if key == 'lr' else '>= 0'}")


def _check_lr_schedule(config: dict) -> None:
    _check_choice(config, "lr_schedule", LR_SCHEDULES)
    if not _is_number(config["poly_power"]) or config["poly_power"] <= 0:
        raise ConfigError(f"config: poly_power={config['poly_power']!r} is out of range: expected a number > 0")


def _check_validation_scans(config: dict) -> None:
    if config["validate_every"] == 0:
        return
    spec = get_spec(config["dataset"])
    n_training_scans = len(fold_split(spec, config["eval_fold"], config["n_shots"], config["support_choice"]).train_ids)
    value = config["n_validation_scans"]
    if not _is_integer(value) or not 1 <= value <= n_training_scans:
        raise ConfigError(
            f"config: n_validation_scans={value!r} is out of range: expected 1..{n_training_scans} (the training "
            f"scans of {spec.name} fold {config['eval_fold']}) while validate_every={config['validate_every']}; "
            f"validate_every=0 trains without validation")


def _check_image_size(config: dict) -> None:
    """image_size must give the model a feature grid its pooling windows fit in (None: files' own size)."""
    model = config["model"]
    smallest_grid = minimum_feature_size(model["name"], config["model_options"])
    smallest_size = model["output_stride"] * smallest_grid
    size = config["image_size"]
    if size is not None and (not _is_integer(size) or size < smallest_size):
        raise ConfigError(
            f"config: image_size={size!r} is out of range: expected None or an integer >= {smallest_size} "
            f"(output_stride {model['output_stride']} x the {smallest_grid} x {smallest_grid} feature grid that "
            f"{model['name']} needs)")
    multiple = image_size_multiple(model["name"], config["model_options"])
    if size is not None and size % multiple:
        raise ConfigError(f"config: image_size={size!r} is out of range: {model['name']} needs a multiple of "
                          f"{multiple} (its encoder halves the image between stages)")


def _check_counts(config: dict, minimums: dict[str, int]) -> None:
    for key, minimum in minimums.items():
        value = config[key]
        if not _is_integer(value) or value < minimum:
            meaning = f" ({COUNT_MEANINGS[key]})" if key in COUNT_MEANINGS else ""
            raise ConfigError(f"config: {key}={value!r} is out of range: expected an integer >= {minimum}{meaning}")


def _check_choice(config: dict, key: str, choices: tuple[str, ...]) -> None:
    if config[key] not in choices:
        raise ConfigError(f"config: {key}={config[key]!r}: expected one of {choices}")


def _is_integer(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
