"""The run folder: where everything one run produces lives, defined in this one place.

    <runs_root>/<run_name>/
        checkpoints/last.pth        the newest training state (written every checkpoint_every steps)
        checkpoints/initial.pth     the untrained weights, the baseline a trained model must beat
        checkpoints/best.pth        semi-supervised track: the weights of the best validation mean Dice
        checkpoints/<other>.pth     any other checkpoint copied there by hand
        tensorboard/                training losses, learning rate, validation Dice, image panels
        sacred/<id>/                Sacred's record of every train.py / test.py call (config, log, result)
        evaluation_fold<k>/         test.py on the protocol's checkpoint (last.pth; semi-supervised: best.pth):
                                    summary.json, scores.csv, table.md,
                                    predictions/ and overlays/ when asked for
        evaluation_fold<k>_<name>/  test.py on checkpoints/<name>.pth (e.g. _initial)
        evaluation_fold<k>[_<name>]_support<N>/  the same with n_support_slices = N > 1
        evaluation_fold<k>[_<name>][_support<N>]_nparts<P>_zmargin<M>/  ... and evaluation options other
                                    than the protocol's (`EVALUATION_SUFFIXES`: n_parts, z_margin,
                                    support_choice, metric_rules, other data than trained on)
        extended_from.json          a run continued from another's last checkpoint (experiment/extension.py)

An evaluation always lives in the run folder of the checkpoint it scored (`RunLayout.of_checkpoint`),
so that one run's scores never land in another's.

`run_name` defaults to `<dataset>_setting<s>[_group<g>]_<model label>_fold<k>` (few-shot) or
`<dataset>_<model label>_labelled<n>_fold<k>` (semi-supervised; ACDC has the one fold 0, SSL4MIS's
split), so the five folds of one method share the prefix that the fold tables and learning curves
take as a row.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from dataloaders.acdc import ACDC_NAME
from dataloaders.generated_images import REAL
from dataloaders.image_datasets import is_image_dataset
from models import SEMI_SUPERVISED
from utils.io import read_json

CHECKPOINT_FOLDER = "checkpoints"
LAST_CHECKPOINT_NAME = "last.pth"
INITIAL_CHECKPOINT_NAME = "initial.pth"
BEST_CHECKPOINT_NAME = "best.pth"  # semi-supervised track: the weights of the best validation Dice
TENSORBOARD_FOLDER = "tensorboard"
SACRED_FOLDER = "sacred"
EVALUATION_PREFIX = "evaluation_fold"
SUPPORT_SIZE_SUFFIX = "_support"  # + N: evaluations with N support slices per scan and chunk
PROTOCOL_SUPPORT_SLICES = 1  # the protocol's support: its evaluations carry no support-size suffix
# the evaluation options that, away from the protocol's values, name an evaluation folder of their
# own (experiment/provenance.py `protocol_departures`), in the order of the folder name
EVALUATION_SUFFIXES = {"n_parts": "_nparts", "z_margin": "_zmargin", "support_choice": "_choice",
                       "metric_rules": "_rules", "scored_slices": "_slices",
                       "postprocessing": "_post", "data_sha256": "_data"}
FOLD_SUFFIX = re.compile(r"_fold(\d+)$")
FAILED_STATUS = "FAILED"  # the status in Sacred's run.json of a call that raised
TRAIN_COMMAND = "train"  # Sacred's command name of train.py's calls


def check_run_name(name: object, key: str = "run_name") -> str:
    """`name` when it is one folder name, so that `runs_root / name` stays inside runs_root; a
    ValueError otherwise (a path such as `../x` or `/tmp/x`, `.`, `..`, empty)."""
    if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name
            or (os.altsep is not None and os.altsep in name) or Path(name).is_absolute()):
        raise ValueError(f"{key}={name!r}: expected one folder name inside runs_root (no '/', not '.' or '..')")
    return name


def run_name(config: dict) -> str:
    """The run's folder name: explicit `run_name`, else one that says what was trained; either is
    one folder name inside runs_root (`check_run_name`)."""
    if config.get("run_name"):
        return check_run_name(config["run_name"])
    model_label = check_run_name(config.get("model_label") or config["model"]["name"], "model_label")
    if config.get("track") == SEMI_SUPERVISED:
        labelled = config["labelled_patients"] if config["dataset"] == ACDC_NAME else config["labelled_scans"]
        if is_image_dataset(config["dataset"]):
            labelled = config["semi_percent"]
        # unlabelled images other than the dataset's own (generated ones, MGCC) name the run apart
        source = config.get("unlabelled_source", REAL)
        unlabelled = "" if source == REAL else f"_unlabelled_{source}"
        return f"{config['dataset']}_{model_label}{unlabelled}_labelled{labelled}_fold{config['eval_fold']}"
    group = f"_group{config['label_group']}" if config["setting"] == 2 else ""
    return f"{config['dataset']}_setting{config['setting']}{group}_{model_label}_fold{config['eval_fold']}"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder."""

    folder: Path

    @classmethod
    def of(cls, config: dict) -> "RunLayout":
        """The run folder of a composed config: runs_root/run_name."""
        return cls(Path(config["runs_root"]) / run_name(config))

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> "RunLayout | None":
        """The run a checkpoint belongs to (`<run>/checkpoints/<name>.pth`); None for a file elsewhere."""
        checkpoint = Path(checkpoint)
        if checkpoint.parent.name != CHECKPOINT_FOLDER:
            return None
        return cls(checkpoint.parent.parent)

    @property
    def last_checkpoint(self) -> Path:
        return self.folder / CHECKPOINT_FOLDER / LAST_CHECKPOINT_NAME

    @property
    def best_checkpoint(self) -> Path:
        return self.folder / CHECKPOINT_FOLDER / BEST_CHECKPOINT_NAME

    @property
    def initial_checkpoint(self) -> Path:
        return self.folder / CHECKPOINT_FOLDER / INITIAL_CHECKPOINT_NAME

    @property
    def tensorboard(self) -> Path:
        return self.folder / TENSORBOARD_FOLDER

    @property
    def sacred(self) -> Path:
        return self.folder / SACRED_FOLDER

    def training_failed(self) -> bool:
        """Whether the run's last train.py call failed (Sacred's status FAILED), e.g. a diverged model."""
        calls = sorted((path for path in self.sacred.glob("*/run.json") if path.parent.name.isdigit()),
                       key=lambda path: int(path.parent.name))
        trainings = [record for record in map(read_json, calls) if record.get("command") == TRAIN_COMMAND]
        return bool(trainings) and trainings[-1].get("status") == FAILED_STATUS

    def evaluation(self, fold: int, checkpoint: Path | None = None,
                   n_support_slices: int = PROTOCOL_SUPPORT_SLICES,
                   protocol_checkpoint: str = LAST_CHECKPOINT_NAME,
                   departures: dict[str, object] | None = None) -> Path:
        """evaluation_fold<k> for the protocol's weights (checkpoint None or `protocol_checkpoint`:
        last.pth for the few-shot track, best.pth for the semi-supervised one), else
        evaluation_fold<k>_<checkpoint file stem>; + _support<N> for N support slices other than
        the protocol's one; + e.g. _nparts1_zmargin3 for `departures`, the evaluation options
        ({key of EVALUATION_SUFFIXES: value}) that differ from the protocol's."""
        protocol = checkpoint is None or Path(checkpoint).name == protocol_checkpoint
        suffix = "" if protocol else f"_{Path(checkpoint).stem}"
        if n_support_slices != PROTOCOL_SUPPORT_SLICES:
            suffix += f"{SUPPORT_SIZE_SUFFIX}{n_support_slices}"
        unknown = set(departures or {}) - set(EVALUATION_SUFFIXES)
        if unknown:
            raise ValueError(f"evaluation options {sorted(unknown)} have no folder suffix (EVALUATION_SUFFIXES)")
        suffix += "".join(f"{label}{check_run_name(str(departures[key]), key)}"
                          for key, label in EVALUATION_SUFFIXES.items() if key in (departures or {}))
        return self.folder / f"{EVALUATION_PREFIX}{fold}{suffix}"


def fold_runs(prefix: str | Path) -> dict[int, RunLayout]:
    """{fold: run} of the run folders named `<prefix>_fold<k>`, by fold."""
    prefix = Path(prefix)
    runs = {}
    for folder in prefix.parent.glob(f"{prefix.name}_fold*"):
        match = FOLD_SUFFIX.search(folder.name)
        if match and folder.name == f"{prefix.name}_fold{match.group(1)}":
            runs[int(match.group(1))] = RunLayout(folder)
    return dict(sorted(runs.items()))


def row_name(row: str) -> str:
    """The table name of a row of run prefixes joined by '+' (Setting 2: one per organ group)."""
    return " + ".join(Path(prefix).name for prefix in row.split("+"))
