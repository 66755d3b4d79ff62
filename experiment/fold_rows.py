"""The evaluations behind one row of a fold table, as scripts/summarize_folds.py and
scripts/make_figures.py read them.

A row is a run-name prefix (its folds are `<prefix>_fold<k>`) or several prefixes joined by '+'
(Setting 2 trains one model per organ group). Its evaluations are the summary.json files test.py
wrote, checked to come from one model trained with one config (experiment/provenance.py), and
only from folds that every joined prefix has evaluated: a fold whose other organ group is still
training would otherwise enter a table with half of its organs. The folds left out, and those
whose training failed (a diverged model has no evaluation), are named in notes, which the scripts
print. A row read at several support sizes (test.py's
`n_support_slices`) keeps the folds evaluated at every size, so that sizes are compared on the
same folds.
"""
from __future__ import annotations

import argparse
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from evaluation.metrics import MILLIMETRES
from evaluation.reports import DISTANCE_UNIT_KEY, SUMMARY_NAME
from experiment.layout import EVALUATION_SUFFIXES, PROTOCOL_SUPPORT_SLICES, RunLayout, fold_runs, row_name
from experiment.provenance import FoldEvaluation, ProvenanceError, check_fold_row
from utils.io import read_json

DEFAULT_SUPPORT_SIZES = (1, 2, 4, 8)  # the protocol's single slice, then doublings (docs/PROTOCOL.md)


@dataclass(frozen=True)
class RowEvaluations:
    """One row's checked evaluations of its complete folds, and a note per fold left out."""

    evaluations: list[FoldEvaluation]
    notes: list[str]

    def organs_per_fold(self) -> dict[int, dict[str, dict]]:
        """{fold: {organ: its scores in that fold's summary.json}}, '+'-joined runs' organs merged."""
        per_fold: dict[int, dict[str, dict]] = {}
        for evaluation in self.evaluations:
            per_fold.setdefault(evaluation.fold, {}).update(evaluation.summary["organs"])
        return dict(sorted(per_fold.items()))


def distance_unit(rows: dict[str, RowEvaluations]) -> str:
    """The one unit the distances of every row's evaluations are in (mm unless a summary says
    otherwise: ACDC's are voxels); a SystemExit naming the rows when they mix units, since a table
    of them would put voxels and millimetres in one column."""
    units = {name: {evaluation.summary.get(DISTANCE_UNIT_KEY, MILLIMETRES) for evaluation in read.evaluations}
             for name, read in rows.items()}
    found = set().union(*units.values())
    if len(found) > 1:
        listed = "; ".join(f"{name}: {', '.join(sorted(unit))}" for name, unit in units.items())
        raise SystemExit(f"the rows' distances are in different units ({listed}): tabulate them separately")
    return found.pop() if found else MILLIMETRES


def evaluation_departure(text: str) -> tuple[str, str]:
    """'key=value' of a command line: an evaluation option away from the protocol's value, whose
    evaluations test.py wrote into a folder of their own (e.g. metric_rules=project); an
    argparse.ArgumentTypeError for a key that names no such folder."""
    key, separator, value = text.partition("=")
    if not separator or key not in EVALUATION_SUFFIXES or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE with KEY one of {sorted(EVALUATION_SUFFIXES)}")
    return key, value


def row_evaluations(row: str, n_support_slices: int = PROTOCOL_SUPPORT_SLICES,
                    folds: Collection[int] | None = None, departures: dict[str, str] | None = None) -> RowEvaluations:
    """The evaluations (with `n_support_slices` support slices per scan and chunk; in the folders of
    `departures`, {evaluation option: value} away from the protocol's, when given) of one table
    row's complete folds, of `folds` only when given; a SystemExit naming the row when it has none
    or mixes configs."""
    found, failed = [], []
    for prefix in row.split("+"):
        for fold, run in fold_runs(prefix).items():
            if folds is not None and fold not in folds:
                continue
            folder = run.evaluation(fold, n_support_slices=n_support_slices, departures=departures)
            summary_path = folder / SUMMARY_NAME
            if summary_path.is_file():
                found.append(FoldEvaluation(prefix, fold, summary_path, read_json(summary_path)))
            elif run.training_failed():
                failed.append(f"{row_name(row)}: fold {fold} left out, its training failed ({run.sacred})")
    if not found:
        expected = RunLayout(Path("<prefix>_fold<k>")).evaluation(
            "<k>", n_support_slices=n_support_slices, departures=departures) / SUMMARY_NAME
        raise SystemExit(f"{row}: no evaluated folds found (expected {expected})"
                         + "".join(f"; {note}" for note in failed))
    try:
        check_fold_row(row, found)
    except ProvenanceError as error:
        raise SystemExit(str(error)) from error
    complete = _complete_folds(row, found)
    return RowEvaluations(complete.evaluations, failed + complete.notes)


def support_size_evaluations(row: str, support_sizes: Sequence[int],
                             folds: Collection[int] | None = None) -> dict[int, RowEvaluations]:
    """{N: the row's evaluations with N support slices} for each N of `support_sizes`, all on the
    folds evaluated at every N (of `folds` only when given); every N's notes name each fold left out."""
    per_size = {size: row_evaluations(row, size, folds) for size in support_sizes}
    fold_sets = {size: {evaluation.fold for evaluation in read.evaluations} for size, read in per_size.items()}
    shared = set.intersection(*fold_sets.values())
    if not shared:
        raise SystemExit(f"{row}: no fold is evaluated with every support size {list(support_sizes)} "
                         f"(folds per size: {', '.join(f'N={size}: {sorted(found)}' for size, found in fold_sets.items())})")
    notes = [f"{row_name(row)}: fold {fold} left out of the support sizes, not evaluated with N = "
             f"{', '.join(str(size) for size, found in fold_sets.items() if fold not in found)}"
             for fold in sorted(set.union(*fold_sets.values()) - shared)]
    return {size: RowEvaluations([evaluation for evaluation in read.evaluations if evaluation.fold in shared],
                                 read.notes + notes)
            for size, read in per_size.items()}


def _complete_folds(row: str, evaluations: list[FoldEvaluation]) -> RowEvaluations:
    prefixes = row.split("+")
    kept, notes = [], []
    for fold in sorted({evaluation.fold for evaluation in evaluations}):
        of_fold = [evaluation for evaluation in evaluations if evaluation.fold == fold]
        missing = [prefix for prefix in prefixes if prefix not in {evaluation.prefix for evaluation in of_fold}]
        if missing:
            notes.append(f"{row_name(row)}: fold {fold} left out, not evaluated for {', '.join(missing)}")
        else:
            kept += of_fold
    if not kept:
        raise SystemExit(f"{row}: no fold is evaluated for every one of its runs ({'; '.join(notes)})")
    return RowEvaluations(kept, notes)
