"""The evaluations behind one row of a fold table, as scripts/summarize_folds.py and
scripts/make_figures.py read them.

A row is a run-name prefix (its folds are `<prefix>_fold<k>`) or several prefixes joined by '+'
(Setting 2 trains one model per organ group). Its evaluations are the summary.json files test.py
wrote, checked to come from one model trained with one config (experiment/provenance.py), and
only from folds that every joined prefix has evaluated: a fold whose other organ group is still
training would otherwise enter a table with half of its organs. The folds left out are named in
notes, which the scripts print.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from evaluation.reports import SUMMARY_NAME
from experiment.layout import PROTOCOL_SUPPORT_SLICES, fold_runs, row_name
from experiment.provenance import FoldEvaluation, ProvenanceError, check_fold_row
from utils.io import read_json


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


def row_evaluations(row: str, n_support_slices: int = PROTOCOL_SUPPORT_SLICES,
                    folds: Collection[int] | None = None) -> RowEvaluations:
    """The evaluations (with `n_support_slices` support slices per scan and chunk) of one table
    row's complete folds, of `folds` only when given; a SystemExit naming the row when it has none
    or mixes configs."""
    found = []
    for prefix in row.split("+"):
        for fold, run in fold_runs(prefix).items():
            if folds is not None and fold not in folds:
                continue
            summary_path = run.evaluation(fold, n_support_slices=n_support_slices) / SUMMARY_NAME
            if summary_path.is_file():
                found.append(FoldEvaluation(prefix, fold, summary_path, read_json(summary_path)))
    if not found:
        raise SystemExit(f"{row}: no evaluated folds found (expected <prefix>_fold<k>/evaluation_fold<k>/{SUMMARY_NAME})")
    try:
        check_fold_row(row, found)
    except ProvenanceError as error:
        raise SystemExit(str(error)) from error
    return _complete_folds(row, found)


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
