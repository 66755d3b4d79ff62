"""Extending finished runs to more steps without touching them.

A run trained for n steps is continued to m > n steps in a new run folder: its last checkpoint
(weights, optimiser, schedule, step, random states) and its tensorboard curves are copied there,
and train.py resumes the copy exactly (only `n_steps`, `model_label` and other bookkeeping keys
may change on resume, experiment/provenance.py). The original run and its evaluations stay as they
are, so a table can hold both budgets; `extended_from.json` in the new folder records which run
(a sibling folder), step and checkpoint the copy started from. The source run is locked while it
is copied (utils/run_lock.py: a run that train.py is writing is refused), and a run that stopped
before its n_steps is refused unless `allow_unfinished`.

    <prefix>_fold<k>  ->  <prefix>_<suffix>_fold<k>   (e.g. ..._psmnet_fold2 -> ..._psmnet_steps6000_fold2)

With run names from `model_label` (experiment/layout.py), the extended runs are the sweep row
`... <model> model_label=<label>_<suffix> n_steps=<m>`.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass

from experiment.layout import FOLD_SUFFIX, RunLayout
from utils.checkpoint import FILE_SHA256_KEY, load_checkpoint
from utils.io import file_sha256, read_json, write_json
from utils.run_lock import RunLock

EXTENSION_RECORD_NAME = "extended_from.json"


class ExtensionError(ValueError):
    """A run cannot be extended as asked."""


@dataclass(frozen=True)
class Extension:
    """One run continued in a new folder from its last checkpoint."""

    source: RunLayout
    target: RunLayout
    step: int  # the step of the copied checkpoint, where the extended run resumes
    model_label: str  # the `model_label` whose default run names are the target's (<source label>_<suffix>)
    copied: bool  # False: the target had already been extended from this source (nothing was copied again)


def extended_name(run_folder_name: str, suffix: str) -> str:
    """`<prefix>_fold<k>` -> `<prefix>_<suffix>_fold<k>`."""
    if not suffix or "/" in suffix:
        raise ExtensionError(f"suffix {suffix!r}: give a non-empty name without '/', e.g. steps6000")
    match = FOLD_SUFFIX.search(run_folder_name)
    if match is None:
        raise ExtensionError(f"{run_folder_name}: not a run folder named <prefix>_fold<k>")
    return f"{run_folder_name[:match.start()]}_{suffix}{match.group(0)}"


def extension_source(target: RunLayout) -> str | None:
    """The run a folder was extended from, as its record names it; None without a record."""
    record = target.folder / EXTENSION_RECORD_NAME
    return read_json(record)["source_run"] if record.is_file() else None  # a sibling folder's name


def extend_run(source: RunLayout, suffix: str, allow_unfinished: bool = False) -> Extension:
    """Copy `source`'s last checkpoint, initial weights and tensorboard curves to the run folder
    `extended_name(source, suffix)` beside it, with a record of where they came from.

    A target already extended from this source is left as it is (it may have trained on since), so
    that extending a row again only adds its new folds; any other existing target is refused, as is
    a source without a readable last checkpoint, a source another process holds the lock of
    (`utils.run_lock.RunLockError`: still training), and, unless `allow_unfinished`, a source whose
    last checkpoint stopped before the run's n_steps (interrupted, diverged)."""
    target = RunLayout(source.folder.parent / extended_name(source.folder.name, suffix))
    if not source.last_checkpoint.is_file():
        load_checkpoint(source.last_checkpoint)  # raises the CheckpointError that names the missing file
    with RunLock(source.folder, f"extend_runs.py, copying it to {target.folder.name}"):
        return _copy_run(source, target, suffix, allow_unfinished)


def _copy_run(source: RunLayout, target: RunLayout, suffix: str, allow_unfinished: bool) -> Extension:
    state = load_checkpoint(source.last_checkpoint)  # refuses a corrupt checkpoint, naming it
    trained = state["config"]
    label = f"{trained.get('model_label') or trained['model']['name']}_{suffix}"
    if state["step"] < trained["n_steps"] and not allow_unfinished:
        raise ExtensionError(f"{source.last_checkpoint}: the run stopped at step {state['step']} of its n_steps="
                             f"{trained['n_steps']} (interrupted or failed); resume it with train.py first, or pass "
                             f"--allow-unfinished to extend it from step {state['step']}")
    if target.folder.exists():
        if extension_source(target) != source.folder.name:
            raise ExtensionError(f"{target.folder} exists and was not extended from {source.folder}: it may hold "
                                 f"another run; remove it or choose another suffix")
        return Extension(source, target, state["step"], label, copied=False)
    target.folder.mkdir()  # not exist_ok: another extension creating it at the same time fails here
    try:
        with RunLock(target.folder, f"extend_runs.py, copying {source.folder.name} into it"):
            _copy_files(source, target, state)
    except BaseException:
        shutil.rmtree(target.folder, ignore_errors=True)  # a half-made copy is no run
        raise
    return Extension(source, target, state["step"], label, copied=True)


def _copy_files(source: RunLayout, target: RunLayout, state: dict) -> None:
    target.last_checkpoint.parent.mkdir(parents=True)
    shutil.copy2(source.last_checkpoint, target.last_checkpoint)
    if file_sha256(target.last_checkpoint) != state[FILE_SHA256_KEY]:  # replaced between the read and the copy
        raise ExtensionError(f"{source.last_checkpoint} changed while it was copied (is the run still training?); "
                             f"nothing was extended, try again when it has finished")
    if source.initial_checkpoint.is_file():
        shutil.copy2(source.initial_checkpoint, target.initial_checkpoint)
    if source.tensorboard.is_dir():
        shutil.copytree(source.tensorboard, target.tensorboard)
    write_json({"source_run": source.folder.name, "source_step": state["step"],
                "source_checkpoint_sha256": state[FILE_SHA256_KEY]},
               target.folder / EXTENSION_RECORD_NAME)
