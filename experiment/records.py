"""A run's record: what its tables and learning curves are made from, without its weights, kept
with the results (docs/records/) so that they outlive the run folder.

    <records_root>/<run_name>/
        evaluation_fold<k>*/   each evaluation's summary.json, scores.csv and table.md
                               (not its predictions/ or overlays/)
        tensorboard/           the run's scalars: losses, learning rate, validation Dice, with
                               their steps and wall times (not the image panels)
        sacred/<id>/           config.json and run.json of every train.py / test.py call (run.json
                               has the host, the start and stop times; not cout.txt, which is
                               mostly progress bars)
        extended_from.json     where the run was continued from another (experiment/extension.py)

A record has the run folder's layout (experiment/layout.py), so scripts/summarize_folds.py,
compare_rows.py and summarize_curves.py read `<records_root>/<prefix>` as they read
`runs/<prefix>`, and `tensorboard --logdir <records_root>` shows the curves. The provenance the
fold tables check (training config, checkpoint SHA-256, step) is inside each summary.json.

Recording a run again adds only what is new (another evaluation, a later Sacred call) and refuses
to change anything already recorded, before writing anything, so that one run's record never
overwrites another's. A run without an evaluation has nothing to record and is refused, unless its
training failed (its last train.py call's status FAILED, e.g. a diverged model) and that failure is
asked for: then its Sacred calls (run.json holds the traceback) and its curves up to the failure
are the result, and they are recorded.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from evaluation.reports import SCORES_NAME, SUMMARY_NAME, TABLE_NAME
from experiment.curves import read_scalar_events, read_scalars
from experiment.extension import EXTENSION_RECORD_NAME
from experiment.layout import EVALUATION_PREFIX, TENSORBOARD_FOLDER, RunLayout

EVALUATION_FILES = (SUMMARY_NAME, SCORES_NAME, TABLE_NAME)
SACRED_FILES = ("config.json", "run.json")


class RecordError(ValueError):
    """A run cannot be recorded as asked."""


@dataclass(frozen=True)
class Recorded:
    """What recording one run did."""

    record: RunLayout
    added: list[Path]  # paths relative to the record folder (tensorboard/ as one entry)
    unchanged: int  # files (and the tensorboard scalars) already recorded with the same content


def recorded_files(run: RunLayout) -> list[Path]:
    """The files of `run` that its record copies as they are, relative to the run folder."""
    folder = run.folder
    evaluations = [path / name for path in sorted(folder.glob(f"{EVALUATION_PREFIX}*")) if path.is_dir()
                   for name in EVALUATION_FILES if (path / name).is_file()]
    sacred = [path / name for path in sorted(run.sacred.glob("*")) if path.is_dir()
              for name in SACRED_FILES if (path / name).is_file()]
    extension = [folder / EXTENSION_RECORD_NAME] if (folder / EXTENSION_RECORD_NAME).is_file() else []
    return [path.relative_to(folder) for path in evaluations + sacred + extension]


def is_evaluated(run: RunLayout) -> bool:
    """Whether `run` has an evaluation (test.py's summary) to record."""
    return any(run.folder.glob(f"{EVALUATION_PREFIX}*/{SUMMARY_NAME}"))


def _write_scalars(source: Path, target: Path) -> None:
    """`source`'s tensorboard scalars, steps and wall times as logged, into a new event folder `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as scratch:
        with SummaryWriter(log_dir=scratch) as writer:
            for tag, events in read_scalar_events(source).items():
                for event in events:
                    writer.add_scalar(tag, event.value, event.step, walltime=event.wall_time)
        shutil.copytree(scratch, target)


def record_run(run: RunLayout, records_root: Path, failed_training: bool = False) -> Recorded:
    """Record `run` as `<records_root>/<its folder name>`, adding what the record lacks; a
    RecordError naming the file when the run has no evaluation (and, with `failed_training`, did
    not fail either) or differs from what is recorded."""
    if not is_evaluated(run) and not (failed_training and run.training_failed()):
        raise RecordError(f"{run.folder}: no evaluation to record (expected {EVALUATION_PREFIX}<k>/{SUMMARY_NAME}; "
                          f"run test.py on it first" + ("" if failed_training else
                                                         "; a failed training is recorded with --failed") + ")")
    files = recorded_files(run)
    record = RunLayout(records_root / run.folder.name)
    new = []
    for path in files:
        target = record.folder / path
        if not target.exists():
            new.append(path)
        elif target.read_bytes() != (run.folder / path).read_bytes():
            raise RecordError(f"{target}: differs from {run.folder / path}; a record is never changed (was "
                              f"{run.folder} trained or evaluated again? record it under another root)")
    tensorboard_is_new = run.tensorboard.is_dir() and not record.tensorboard.exists()
    if run.tensorboard.is_dir() and not tensorboard_is_new:
        if read_scalars(record.tensorboard) != read_scalars(run.tensorboard):
            raise RecordError(f"{record.tensorboard}: its scalars differ from those of {run.tensorboard}; a record "
                              f"is never changed (did {run.folder} train on? record it under another root)")
    for path in new:
        (record.folder / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run.folder / path, record.folder / path)
    unchanged = len(files) - len(new) + int(run.tensorboard.is_dir() and not tensorboard_is_new)
    if tensorboard_is_new:
        _write_scalars(run.tensorboard, record.tensorboard)
        new.append(Path(TENSORBOARD_FOLDER))
    return Recorded(record, new, unchanged)
