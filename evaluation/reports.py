"""What an evaluation writes and how evaluations are tabulated: every registered metric, everywhere.

One evaluation folder (experiment/layout.py names it) holds one evaluation, never outputs of two:
`begin_evaluation` removes an earlier one's files before a new one writes any, `write_evaluation`
writes summary.json last, listing under `files` every other file of the evaluation, and removes
from predictions/ and overlays/ whatever it does not list. A folder whose summary.json is missing
holds an interrupted evaluation. It holds:

- `summary.json`: what was evaluated (dataset, fold, setting, checkpoint, step), the metrics, and
  per organ the mean of every metric over the query scans, how many scans left it undefined
  (`undefined`, e.g. HD95 of an empty prediction), and the per-scan values and voxel counts;
  `mean_dice` is the organs' mean Dice, the protocol's headline number. Undefined values are
  written as NaN. `skipped_scans` names, per organ, the query scans in which the organ appears in
  no slice (they have no score for it) and `n_skipped_scans` counts them; test.py adds where the
  scores come from (experiment/provenance.py: checkpoint path, SHA-256 and step, model, training
  config, any `allow_config_mismatch`).
- `scores.csv`: one row per (organ, query scan) with every metric and the voxel counts.
- `table.md`: Dice per query scan and the organ means of every metric, and a note on skipped scans.
- `predictions/`, `overlays/` (test.py, when asked for): NIfTI predictions and PNG panels.

Fold tables (scripts/summarize_folds.py) read the summaries of a method's folds: per organ and
fold the mean over that fold's query scans, then mean ± std over the folds, organs as columns in
label order and the organs' mean per fold in the last column, as the papers lay them out; a second
table lists each fold's organs' mean, so a reversal between folds is not hidden by the mean.
Support-size tables (scripts/summarize_support_sizes.py) set the organs' mean against the number
of support slices N that test.py was given; paired tables (scripts/compare_rows.py) subtract one
method's organs' mean from another's fold by fold.
"""
from __future__ import annotations

import csv
import logging
import math
import shutil
from pathlib import Path
from typing import Mapping, Sequence

from evaluation.metrics import METRICS, MILLIMETRES
from evaluation.scoring import Evaluation, mean_and_std
from utils.io import atomic_write, write_json, write_text

SUMMARY_NAME = "summary.json"
SCORES_NAME = "scores.csv"
TABLE_NAME = "table.md"
SKIPPED_KEY = "skipped_scans"
FILES_KEY = "files"  # in summary.json: the evaluation's other files, relative to its folder
DISTANCE_UNIT_KEY = "distance_unit"  # in summary.json where distances are not in mm (ACDC: voxels)
PREDICTIONS_FOLDER = "predictions"
OVERLAYS_FOLDER = "overlays"
OUTPUT_FOLDERS = (PREDICTIONS_FOLDER, OVERLAYS_FOLDER)

logger = logging.getLogger(__name__)
COUNT_NAMES = ("true_positives", "false_positives", "false_negatives")
HEADLINE_METRIC = "dice"


def summarize(evaluation: Evaluation, description: Mapping[str, object],
              skipped: Mapping[str, Sequence[int]] | None = None) -> dict:
    """The summary.json content: `description` (dataset, fold, checkpoint, ...) plus the scores, and
    `skipped` ({organ: query scans without it}, which have no score for it) with their count."""
    organs = {}
    for organ in evaluation.organs:
        organ_scores = [score for score in evaluation.scores if score.organ == organ]
        values = {metric: [score.values[metric] for score in organ_scores] for metric in evaluation.metric_names}
        organs[organ] = {
            "label": organ_scores[0].label,
            **{metric: mean_and_std(metric_values)[0] for metric, metric_values in values.items()},
            "undefined": {metric: sum(math.isnan(value) for value in metric_values)
                          for metric, metric_values in values.items()},
            "scans": {str(score.scan_id): {**score.values, **_counts(score)} for score in organ_scores},
        }
    return {
        **description,
        "metrics": list(evaluation.metric_names),
        "organs": organs,
        "mean_dice": mean_and_std(list(evaluation.organ_means(HEADLINE_METRIC).values()))[0],
        SKIPPED_KEY: {organ: list(scan_ids) for organ, scan_ids in (skipped or {}).items()},
        "n_skipped_scans": sum(len(scan_ids) for scan_ids in (skipped or {}).values()),
    }


def skipped_scans_note(summary: Mapping[str, object]) -> str:
    """One line under the score table naming the (organ, query scan) pairs left out because the
    organ is absent from the scan; empty when there are none."""
    skipped = summary.get(SKIPPED_KEY) or {}
    if not skipped:
        return ""
    pairs = "; ".join(f"{organ}: scan(s) {', '.join(str(scan_id) for scan_id in scan_ids)}"
                      for organ, scan_ids in skipped.items())
    return (f"Skipped {summary['n_skipped_scans']} query scan(s) of an organ absent from them, not scored "
            f"(docs/PROTOCOL.md, \"Organs absent from a query scan\"): {pairs}")


def _counts(score) -> dict[str, int]:
    return {name: getattr(score.counts, name) for name in COUNT_NAMES}


def begin_evaluation(folder: Path) -> None:
    """Remove what an earlier evaluation wrote into `folder`, summary.json first (a folder left by an
    interrupted evaluation then holds no summary that describes files of another)."""
    for name in (SUMMARY_NAME, SCORES_NAME, TABLE_NAME):
        (folder / name).unlink(missing_ok=True)
    for name in OUTPUT_FOLDERS:
        if (folder / name).is_dir():
            shutil.rmtree(folder / name)
            logger.info("%s: removed the %s/ of an earlier evaluation", folder, name)


def write_evaluation(evaluation: Evaluation, summary: dict, folder: Path, outputs: Sequence[Path] = ()) -> None:
    """Write scores.csv, table.md and then summary.json into `folder`, each atomically.

    outputs: the files this evaluation wrote into predictions/ and overlays/ before; summary.json
    lists them and scores.csv and table.md under `files`, and any other file in those folders
    (an earlier evaluation's) is removed.
    """
    folder = Path(folder)
    kept = {Path(path).resolve() for path in outputs}
    for name in OUTPUT_FOLDERS:
        stale = [path for path in sorted((folder / name).rglob("*")) if path.is_file() and path.resolve() not in kept]
        for path in stale:
            path.unlink()
        if stale:
            logger.info("%s: removed %d file(s) of an earlier evaluation from %s/", folder, len(stale), name)
    with atomic_write(folder / SCORES_NAME) as handle:
        writer = csv.writer(handle)
        writer.writerow(["organ", "label", "scan_id", *evaluation.metric_names, *COUNT_NAMES])
        for score in evaluation.scores:
            writer.writerow([score.organ, score.label, score.scan_id,
                             *(score.values[metric] for metric in evaluation.metric_names),
                             *_counts(score).values()])
    table = format_score_table(evaluation, distance_unit=summary.get(DISTANCE_UNIT_KEY, MILLIMETRES))
    write_text("\n\n".join(filter(None, [table, skipped_scans_note(summary)])) + "\n",
               folder / TABLE_NAME)
    files = [SCORES_NAME, TABLE_NAME, *(Path(path).resolve().relative_to(folder.resolve()).as_posix() for path in outputs)]
    write_json({**summary, FILES_KEY: sorted(files)}, folder / SUMMARY_NAME)


def metric_unit(metric: str, distance_unit: str = MILLIMETRES) -> str:
    """The unit a table prints `metric` in: a distance in the evaluated data's `distance_unit` (mm, or
    voxels for data that stores no spacing: ACDC), any other metric in its registered unit."""
    unit = METRICS[metric].unit
    return distance_unit if unit == MILLIMETRES else unit


def format_value(value: float, metric: str) -> str:
    """A metric value as tables print it: fractions as percentages, distances in mm; n/a for NaN."""
    return "n/a" if math.isnan(value) else f"{METRICS[metric].scale * value:.2f}"


def format_score_table(evaluation: Evaluation, per_scan: bool = True, distance_unit: str = MILLIMETRES) -> str:
    """Markdown: one row per organ, Dice per query scan (unless `per_scan` is False), then the organ
    mean of every metric (distances headed with `distance_unit`)."""
    scan_ids = sorted({score.scan_id for score in evaluation.scores}) if per_scan else []
    by_key = {(score.organ, score.scan_id): score for score in evaluation.scores}
    means = {metric: evaluation.organ_means(metric) for metric in evaluation.metric_names}
    metric_headers = [f"{metric} ({metric_unit(metric, distance_unit)})" for metric in evaluation.metric_names]
    header = ["organ", *(f"scan {scan_id} dice" for scan_id in scan_ids), *metric_headers]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for organ in evaluation.organs:
        per_scan = [format_value(by_key[(organ, scan_id)].values[HEADLINE_METRIC], HEADLINE_METRIC)
                    if (organ, scan_id) in by_key else "" for scan_id in scan_ids]
        summary = [format_value(means[metric][organ], metric) for metric in evaluation.metric_names]
        lines.append("| " + " | ".join([organ, *per_scan, *summary]) + " |")
    organ_means = [mean_and_std(list(means[metric].values()))[0] for metric in evaluation.metric_names]
    lines.append("| **mean** | " + " | ".join([""] * len(scan_ids) + [format_value(value, metric) for value, metric
                                                                          in zip(organ_means, evaluation.metric_names)])
                 + " |")
    return "\n".join(lines)


def format_mean_and_std(values: list[float], metric: str) -> str:
    """"mean ± std" of the defined values in the metric's unit; n/a when none is defined."""
    mean, std = mean_and_std(values)
    if math.isnan(mean):
        return "n/a"
    return f"{format_value(mean, metric)} ± {format_value(std, metric)}"


def fold_table(rows: Mapping[str, Mapping[int, Mapping[str, Mapping]]], metric: str) -> str:
    """Markdown fold table of `metric`: one row per method, organs as columns in label order.

    rows: {method name: {fold: summary["organs"] of that fold}} (a Setting-2 method joins the
    organs of its groups' runs). A cell is the mean ± std over folds of the organ's per-fold
    mean; the last column the mean ± std over folds of the organs' mean. Summaries written
    before `metric` existed contribute nothing to its table.
    """
    labels = {organ: scores["label"] for folds in rows.values() for organs in folds.values()
              for organ, scores in organs.items()}
    organ_columns = sorted(labels, key=labels.get)
    lines = [f"| method | folds | {' | '.join(organ_columns)} | mean |", "|---|---|" + "---|" * (len(organ_columns) + 1)]
    for name, folds in rows.items():
        per_fold = _organ_values_per_fold(folds, metric)
        cells = [format_mean_and_std([values[organ] for values in per_fold.values() if organ in values], metric)
                 for organ in organ_columns]
        fold_means = list(organs_mean_per_fold(folds, metric).values())
        lines.append(f"| {name} | {len(folds)} | " + " | ".join(cells) + f" | {format_mean_and_std(fold_means, metric)} |")
    return "\n".join(lines)


def fold_means_table(rows: Mapping[str, Mapping[int, Mapping[str, Mapping]]], metric: str) -> str:
    """Markdown table of the organs' mean of `metric` in each fold (the values behind the mean
    column of `fold_table`): one row per method, one column per fold any method was evaluated on,
    "-" where a method's fold is missing, so fold-to-fold reversals are seen at once."""
    means = {name: organs_mean_per_fold(folds, metric) for name, folds in rows.items()}
    fold_columns = sorted({fold for per_fold in means.values() for fold in per_fold})
    lines = ["| method | " + " | ".join(f"fold {fold}" for fold in fold_columns) + " |",
             "|---|" + "---|" * len(fold_columns)]
    for name, per_fold in means.items():
        cells = [format_value(per_fold[fold], metric) if fold in per_fold else "-" for fold in fold_columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def support_size_table(rows: Mapping[str, Mapping[int, Mapping[int, Mapping[str, Mapping]]]], metric: str) -> str:
    """Markdown table of the organs' mean of `metric` against the support size N: one row per
    method, one column per N (mean ± std over folds), and the gain from the smallest to the
    largest N (mean ± std over folds of each fold's difference, so that fold-to-fold spread common
    to every N does not hide a consistent gain).

    rows: {method name: {N: {fold: summary["organs"] of that fold's evaluation with N support
    slices}}}, every N of a method on the same folds (experiment/fold_rows.py).
    """
    sizes = sorted({size for per_size in rows.values() for size in per_size})
    gain_header = f"N = {sizes[-1]} minus N = {sizes[0]}"
    lines = ["| method | folds | " + " | ".join(f"N = {size}" for size in sizes) + f" | {gain_header} |",
             "|---|---|" + "---|" * (len(sizes) + 1)]
    for name, per_size in rows.items():
        means = {size: organs_mean_per_fold(folds, metric) for size, folds in per_size.items()}
        cells = [format_mean_and_std(list(means[size].values()), metric) if size in means else "-" for size in sizes]
        smallest, largest = means.get(sizes[0], {}), means.get(sizes[-1], {})
        gains = [largest[fold] - smallest[fold] for fold in smallest if fold in largest]
        gain = format_mean_and_std(gains, metric) if gains else "-"
        n_folds = len({fold for folds in per_size.values() for fold in folds})
        lines.append(f"| {name} | {n_folds} | " + " | ".join(cells) + f" | {gain} |")
    return "\n".join(lines)


def paired_difference_table(pairs: Mapping[tuple[str, str], tuple[Mapping[int, Mapping[str, Mapping]],
                                                                  Mapping[int, Mapping[str, Mapping]]]],
                            metric: str) -> str:
    """Markdown table of the organs' mean of `metric`, first method minus second, fold by fold.

    pairs: {(name A, name B): ({fold: A's summary["organs"]}, {fold: B's})}. Only the folds both
    methods have are compared (the fold-to-fold spread common to both then cancels); the columns
    are each fold's difference, their mean ± std, and on how many folds A is better (higher, or
    lower for a distance).
    """
    differences = {}
    for names, (folds_a, folds_b) in pairs.items():
        means_a, means_b = organs_mean_per_fold(folds_a, metric), organs_mean_per_fold(folds_b, metric)
        differences[names] = {fold: means_a[fold] - means_b[fold] for fold in sorted(means_a) if fold in means_b}
    fold_columns = sorted({fold for per_fold in differences.values() for fold in per_fold})
    lines = ["| A minus B | " + " | ".join(f"fold {fold}" for fold in fold_columns) + " | mean ± std | folds A better |",
             "|---|" + "---|" * (len(fold_columns) + 2)]
    better = (lambda difference: difference > 0) if METRICS[metric].higher_is_better else (lambda difference: difference < 0)
    for (name_a, name_b), per_fold in differences.items():
        cells = [format_value(per_fold[fold], metric) if fold in per_fold else "-" for fold in fold_columns]
        wins = [fold for fold, difference in per_fold.items() if better(difference)]
        summary = format_mean_and_std(list(per_fold.values()), metric) if per_fold else "-"
        lines.append(f"| {name_a} minus {name_b} | " + " | ".join(cells)
                     + f" | {summary} | {len(wins)} of {len(per_fold)} |")
    return "\n".join(lines)


def _organ_values_per_fold(folds: Mapping[int, Mapping[str, Mapping]], metric: str) -> dict[int, dict[str, float]]:
    """{fold: {organ: the fold's mean of `metric`}}, organs whose summary lacks the metric left out."""
    return {fold: {organ: scores[metric] for organ, scores in organs.items() if metric in scores}
            for fold, organs in folds.items()}


def organs_mean_per_fold(folds: Mapping[int, Mapping[str, Mapping]], metric: str) -> dict[int, float]:
    """{fold: the organs' mean of `metric`} over the folds whose summaries have the metric."""
    return {fold: mean_and_std(list(values.values()))[0]
            for fold, values in _organ_values_per_fold(folds, metric).items() if values}


def undefined_counts(rows: Mapping[str, Mapping[int, Mapping[str, Mapping]]], metric: str) -> dict[str, int]:
    """{method name: query scans, over all folds and organs, where `metric` was undefined}."""
    return {name: sum(scores.get("undefined", {}).get(metric, 0) for organs in folds.values()
                      for scores in organs.values())
            for name, folds in rows.items()}
