"""Figures of cross-validated runs as PNG files (evaluation/figures.py draws them).

    python scripts/make_figures.py curves runs/CHAOST2_setting1_psmnet runs/CHAOST2_setting1_alpnet --out curves.png
    python scripts/make_figures.py dice runs/CHAOST2_setting1_psmnet runs/CHAOST2_setting1_alpnet --out dice.png \
        --labels PSMnet SSL-ALPNet
    python scripts/make_figures.py support runs/CHAOST2_setting1_psmnet runs/CHAOST2_setting1_universeg --out n.png
    python scripts/make_figures.py overlays runs/CHAOST2_setting1_psmnet_fold0 --organ liver --scan 2 \
        --slices 10 14 18 --out overlays.png

- curves: validation Dice against the training step, mean ± std over folds, one line per row;
- support: Dice (organs' mean) against the support size N (test.py's `n_support_slices`; default
  N = 1, 2, 4, 8, `--support-sizes` others), mean ± std over the folds evaluated at every N;
- dice: per organ, the distribution of Dice over every query scan of every fold, one box per row;
- overlays: for chosen slices of one organ in one query scan of a run: support slice with its
  mask, query slice, prediction, ground truth. The run's model is rebuilt from its checkpoint and
  segments the fold's protocol test episode (experiment/assembly.py); `--slices` are slice numbers
  of the scan inside the organ's z-range (default: the middle slice of each part).

Rows are run-name prefixes as in scripts/summarize_folds.py (`+` joins Setting-2 organ groups);
`--folds` restricts curves, dice and support to those folds (e.g. those every row has finished).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from evaluation.episodes import TestEpisode  # noqa: E402  (after the path set-up)
from evaluation.figures import (OverlayRow, plot_dice_distributions, plot_learning_curves, plot_overlays,  # noqa: E402
                                plot_support_sizes)
from evaluation.reports import HEADLINE_METRIC, organs_mean_per_fold  # noqa: E402
from evaluation.prediction import predict_episode  # noqa: E402
from experiment.assembly import fold_data, load_trained_model, test_episodes  # noqa: E402
from experiment.curves import fold_curves  # noqa: E402
from experiment.fold_rows import DEFAULT_SUPPORT_SIZES, row_evaluations, support_size_evaluations  # noqa: E402
from experiment.layout import RunLayout, row_name  # noqa: E402

FIRST_SHOT = 0  # overlays show the first support scan of a k-shot episode


def method_names(rows: list[str], labels: list[str] | None) -> list[str]:
    """The legend's name of each row: `labels` in row order, else the row's run-name prefix(es)."""
    if labels is None:
        return [row_name(row) for row in rows]
    if len(labels) != len(rows):
        raise SystemExit(f"--labels: {len(labels)} label(s) for {len(rows)} row(s); give one label per row")
    return list(labels)


def learning_curves(rows: list[str], out: Path, labels: list[str] | None = None,
                    folds: list[int] | None = None) -> Path:
    curves = {name: {fold: dice for fold, (dice, _) in fold_curves(row, folds).items()}
              for name, row in zip(method_names(rows, labels), rows)}
    return plot_learning_curves(curves, out)


def dice_distributions(rows: list[str], out: Path, labels: list[str] | None = None,
                       folds: list[int] | None = None) -> Path:
    """Per-scan Dice of every organ from the summary.json of every complete fold (as
    scripts/summarize_folds.py tabulates them, experiment/fold_rows.py), organs in label order."""
    dice: dict[str, dict[str, list[float]]] = {}
    organ_labels: dict[str, int] = {}
    for name, row in zip(method_names(rows, labels), rows):
        read = row_evaluations(row, folds=folds)
        for note in read.notes:
            logging.warning("%s", note)
        per_organ: dict[str, list[float]] = {}
        for organs in read.organs_per_fold().values():
            for organ, scores in organs.items():
                organ_labels[organ] = scores["label"]
                per_organ.setdefault(organ, []).extend(scan["dice"] for scan in scores["scans"].values())
        dice[name] = per_organ
    return plot_dice_distributions(dice, sorted(organ_labels, key=organ_labels.get), out)


def support_sizes(rows: list[str], out: Path, labels: list[str] | None = None, folds: list[int] | None = None,
                  sizes: tuple[int, ...] = DEFAULT_SUPPORT_SIZES) -> Path:
    """The organs' mean Dice of every fold at every N, read as scripts/summarize_support_sizes.py
    tabulates them (experiment/fold_rows.py: every N on the same folds)."""
    dice: dict[str, dict[int, list[float]]] = {}
    for name, row in zip(method_names(rows, labels), rows):
        per_size = support_size_evaluations(row, sorted(set(sizes)), folds)
        for note in dict.fromkeys(note for read in per_size.values() for note in read.notes):
            logging.warning("%s", note)
        dice[name] = {size: list(organs_mean_per_fold(read.organs_per_fold(), HEADLINE_METRIC).values())
                      for size, read in per_size.items()}
    return plot_support_sizes(dice, out)


def overlay_rows(episode: TestEpisode, prediction: torch.Tensor, slices: list[int] | None) -> list[OverlayRow]:
    """The grid rows of `episode`: the chosen slice numbers, or the middle slice of each part."""
    z_indices = episode.z_indices.tolist()
    if slices is None:
        positions = [int(torch.nonzero(episode.part_index == part).flatten().median())
                     for part in range(episode.support_images.shape[0])]
    else:
        outside = [z for z in slices if z not in z_indices]
        if outside:
            raise SystemExit(f"slices {outside} are outside {episode.organ}'s z-range {z_indices[0]}..{z_indices[-1]} "
                             f"in scan {episode.query_scan_id}")
        positions = [z_indices.index(z) for z in slices]
    rows = []
    for position in positions:
        part = int(episode.part_index[position])
        rows.append(OverlayRow(
            title=f"{episode.organ.replace('_', ' ')}, scan {episode.query_scan_id}\nslice {z_indices[position]}, part {part}",
            support_image=episode.support_images[part, FIRST_SHOT, 0].numpy(),
            support_mask=episode.support_masks[part, FIRST_SHOT].numpy(),
            query_image=episode.query_images[position, 0].numpy(),
            prediction=prediction[position].numpy(),
            truth=episode.query_labels[position].numpy()))
    return rows


def overlays(run_dir: Path, organ: str, scan_id: int | None, slices: list[int] | None, out: Path,
             checkpoint: Path | None = None, data_root: str | None = None, derived_root: str | None = None) -> Path:
    trained = load_trained_model(checkpoint or RunLayout(run_dir).last_checkpoint)
    config = {**trained.config, "data_root": data_root or trained.config["data_root"],
              "derived_root": derived_root or trained.config["derived_root"]}
    episodes = [episode for episode in test_episodes(config, fold_data(config)) if episode.organ == organ]
    if not episodes:
        raise SystemExit(f"{run_dir}: organ {organ!r} is not tested by this run")
    chosen = [episode for episode in episodes if scan_id is None or episode.query_scan_id == scan_id]
    if not chosen:
        raise SystemExit(f"{run_dir}: scan {scan_id} is not a query scan of fold {config['eval_fold']} "
                         f"(query scans: {[episode.query_scan_id for episode in episodes]})")
    episode = chosen[0]
    prediction = predict_episode(trained.model.eval(), episode, torch.device("cpu"), config["precision"],
                                 config["eval_batch_size"])
    return plot_overlays(overlay_rows(episode, prediction, slices), out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    figures = parser.add_subparsers(dest="figure", required=True)
    for name, help_text in (("curves", "validation Dice learning curves"), ("dice", "per-organ Dice distributions"),
                            ("support", "Dice against the support size N")):
        figure = figures.add_parser(name, help=help_text)
        figure.add_argument("rows", nargs="+", help="run-name prefixes, one per method ('+' joins organ groups)")
        figure.add_argument("--out", type=Path, required=True, help="PNG file to write")
        figure.add_argument("--labels", nargs="+", help="the methods' names in the legend, one per row (default: the rows)")
        figure.add_argument("--folds", type=int, nargs="+", help="only these folds (default: all there are)")
        if name == "support":
            figure.add_argument("--support-sizes", type=int, nargs="+", default=list(DEFAULT_SUPPORT_SIZES),
                                help="the N of the evaluations (default: %(default)s)")
    overlay = figures.add_parser("overlays", help="support / query / prediction / truth of chosen slices")
    overlay.add_argument("run", type=Path, help="a run folder (with checkpoints/last.pth)")
    overlay.add_argument("--organ", required=True, help="organ name, e.g. liver")
    overlay.add_argument("--scan", type=int, default=None, help="query scan id (default: the fold's first)")
    overlay.add_argument("--slices", type=int, nargs="+", default=None, help="slice numbers (default: middle of each part)")
    overlay.add_argument("--checkpoint", type=Path, default=None, help="another checkpoint of the run")
    overlay.add_argument("--data-root", help="overrides the data_root stored in the checkpoint")
    overlay.add_argument("--derived-root", help="overrides the derived_root stored in the checkpoint")
    overlay.add_argument("--out", type=Path, required=True, help="PNG file to write")
    args = parser.parse_args()
    if args.figure == "support" and min(args.support_sizes) < 1:
        parser.error(f"--support-sizes must be >= 1, got {args.support_sizes}")
    logging.basicConfig(level=logging.WARNING)
    if args.figure == "curves":
        written = learning_curves(args.rows, args.out, args.labels, args.folds)
    elif args.figure == "dice":
        written = dice_distributions(args.rows, args.out, args.labels, args.folds)
    elif args.figure == "support":
        written = support_sizes(args.rows, args.out, args.labels, args.folds, tuple(args.support_sizes))
    else:
        written = overlays(args.run, args.organ, args.scan, args.slices, args.out, args.checkpoint, args.data_root,
                           args.derived_root)
    print(f"wrote {written} ({written.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
