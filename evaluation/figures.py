"""Figures of results as small PNG files: learning curves, Dice distributions, prediction overlays.

- `plot_learning_curves`: validation Dice (organs' mean, %) against the training step, the mean
  over folds as a line and ± one standard deviation as a band, one colour per method (the curves
  of experiment/curves.py);
- `plot_support_sizes`: Dice (organs' mean, %) against the number of support slices N, the mean
  over folds as a line and ± one standard deviation as a band, one colour per method;
- `plot_dice_distributions`: per organ (in label order), one box per method over every query scan
  of every fold (the per-scan Dice of the evaluation summaries);
- `plot_overlays`: one row per chosen query slice: support slice with its mask, query slice,
  prediction, ground truth (masks tinted on the grey image).
- `plot_image_rows`: rows of grey images in [0, 1] on one fixed intensity scale, one labelled row
  per source (real training images beside generated ones, scripts/generate_unlabelled.py).

Sizes are in inches at `DPI` dots per inch, chosen so that every file stays well under 300 KB.
matplotlib runs with its non-interactive Agg backend: nothing opens a window.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from evaluation.scoring import mean_and_std  # noqa: E402
from experiment.curves import Curve  # noqa: E402
from utils.io import atomic_path  # noqa: E402

DPI = 100
CURVES_SIZE = (6.4, 4.0)  # inches: 640 x 400 pixels
DISTRIBUTION_HEIGHT = 4.0
DISTRIBUTION_WIDTH_PER_ORGAN = 1.9
OVERLAY_CELL = 2.0  # inches per image of the overlay grid
OVERLAY_COLUMNS = ("support + mask", "query", "prediction", "ground truth")
MASK_COLOUR = (1.0, 0.2, 0.2)
MASK_OPACITY = 0.5
BAND_OPACITY = 0.2
PERCENT = 100


def _save(figure, path: Path) -> Path:
    path = Path(path)
    try:
        with atomic_path(path, suffix=path.suffix) as tmp_path:
            figure.savefig(tmp_path, dpi=DPI)
    finally:
        plt.close(figure)
    return path


def _legend_beside(figure) -> None:
    """The methods' legend to the right of the plot, where it covers no curve or box."""
    figure.legend(loc="outside right upper", fontsize="small")


def _fold_count(n_folds: int) -> str:
    return f"{n_folds} fold" + ("" if n_folds == 1 else "s")


def _mean_line_and_band(axes, positions: Sequence[float], values: Sequence[Sequence[float]], label: str,
                        markersize: float | None = None) -> None:
    """At each position, the mean of its values (fractions, drawn in %) as a line and ± one std as a band."""
    statistics = [mean_and_std(list(at_position)) for at_position in values]
    mean = PERCENT * np.array([value for value, _ in statistics])
    std = PERCENT * np.array([spread for _, spread in statistics])
    line, = axes.plot(positions, mean, marker="o", markersize=markersize, label=label)
    axes.fill_between(positions, mean - std, mean + std, color=line.get_color(), alpha=BAND_OPACITY, linewidth=0)


def plot_learning_curves(curves: Mapping[str, Mapping[int, Curve]], path: Path) -> Path:
    """curves: {method: {fold: {validation step: organs' mean Dice}}} -> PNG at `path`."""
    figure, axes = plt.subplots(figsize=CURVES_SIZE, layout="constrained")
    for method, folds in curves.items():
        steps = sorted({step for curve in folds.values() for step in curve})
        _mean_line_and_band(axes, steps, [[curve[step] for curve in folds.values() if step in curve] for step in steps],
                            f"{method} ({_fold_count(len(folds))})", markersize=3)
    axes.set_xlabel("training step")
    axes.set_ylabel("validation Dice (%), mean ± std over folds")
    axes.grid(alpha=0.3)
    _legend_beside(figure)
    return _save(figure, path)


def plot_support_sizes(dice: Mapping[str, Mapping[int, Sequence[float]]], path: Path) -> Path:
    """dice: {method: {N: [organs' mean Dice of each fold]}} -> PNG at `path`, N on a log2 axis."""
    figure, axes = plt.subplots(figsize=CURVES_SIZE, layout="constrained")
    for method, per_size in dice.items():
        sizes = sorted(per_size)
        _mean_line_and_band(axes, sizes, [list(per_size[size]) for size in sizes],
                            f"{method} ({_fold_count(len(per_size[sizes[0]]))})")
    all_sizes = sorted({size for per_size in dice.values() for size in per_size})
    axes.set_xscale("log", base=2)
    axes.set_xticks(all_sizes, [str(size) for size in all_sizes])
    axes.set_xlabel("support slices per support scan and chunk (N)")
    axes.set_ylabel("Dice (%), organs' mean: mean ± std over folds")
    axes.grid(alpha=0.3)
    _legend_beside(figure)
    return _save(figure, path)


def plot_dice_distributions(dice: Mapping[str, Mapping[str, Sequence[float]]], organs: Sequence[str],
                            path: Path) -> Path:
    """dice: {method: {organ: [Dice of every query scan of every fold]}}; organs: column order."""
    methods = list(dice)
    width = 0.8 / max(len(methods), 1)
    figure, axes = plt.subplots(figsize=(max(DISTRIBUTION_WIDTH_PER_ORGAN * len(organs), CURVES_SIZE[0]),
                                         DISTRIBUTION_HEIGHT), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if len(methods) > len(colours):  # one colour per method: the default cycle has 10
        colours = list(plt.get_cmap("tab20").colors)
    for index, method in enumerate(methods):
        positions = np.arange(len(organs)) + (index - (len(methods) - 1) / 2) * width
        values = [[PERCENT * value for value in dice[method].get(organ, []) if not np.isnan(value)] for organ in organs]
        boxes = axes.boxplot(values, positions=positions, widths=0.9 * width, patch_artist=True,
                             manage_ticks=False, flierprops={"markersize": 3})
        for box in boxes["boxes"]:
            box.set_facecolor(colours[index % len(colours)])
            box.set_alpha(0.7)
        axes.plot([], [], color=colours[index % len(colours)], linewidth=6, alpha=0.7, label=method)
    axes.set_xticks(np.arange(len(organs)), [organ.replace("_", " ") for organ in organs])
    axes.set_ylabel("Dice (%) per query scan, all folds")
    axes.set_ylim(0, PERCENT)
    axes.grid(axis="y", alpha=0.3)
    _legend_beside(figure)
    return _save(figure, path)


@dataclass(frozen=True)
class OverlayRow:
    """One row of the overlay grid: (H, W) grey images and binary masks, and its title."""

    title: str  # shown on two lines at most beside the row: a cell is OVERLAY_CELL inches high
    support_image: np.ndarray
    support_mask: np.ndarray
    query_image: np.ndarray
    prediction: np.ndarray
    truth: np.ndarray


def _tinted(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """(H, W) grey -> (H, W, 3) in [0, 1], min-max scaled, `mask` (resized to fit) tinted."""
    image = np.asarray(image, dtype=np.float64)
    unit = (image - image.min()) / max(float(np.ptp(image)), np.finfo(np.float64).eps)
    rgb = np.repeat(unit[..., None], 3, axis=-1)
    if mask is None:
        return rgb
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape:  # labels at file resolution, images at the model's
        rows = np.arange(image.shape[0]) * mask.shape[0] // image.shape[0]
        columns = np.arange(image.shape[1]) * mask.shape[1] // image.shape[1]
        mask = mask[np.ix_(rows, columns)]
    alpha = mask[..., None] * MASK_OPACITY
    return rgb * (1 - alpha) + np.asarray(MASK_COLOUR) * alpha


def plot_overlays(rows: Sequence[OverlayRow], path: Path) -> Path:
    """A grid of len(rows) x 4 images: support + mask | query | prediction | ground truth."""
    figure, axes = plt.subplots(len(rows), len(OVERLAY_COLUMNS), squeeze=False, layout="constrained",
                                figsize=(OVERLAY_CELL * len(OVERLAY_COLUMNS), OVERLAY_CELL * len(rows)))
    for row_axes, row in zip(axes, rows):
        images = (_tinted(row.support_image, row.support_mask), _tinted(row.query_image, None),
                  _tinted(row.query_image, row.prediction), _tinted(row.query_image, row.truth))
        for axis, image in zip(row_axes, images):
            axis.imshow(image, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
        row_axes[0].set_ylabel(row.title, fontsize="small")
    for axis, title in zip(axes[0], OVERLAY_COLUMNS):
        axis.set_title(title, fontsize="small")
    return _save(figure, path)


def plot_image_rows(rows: Mapping[str, Sequence[np.ndarray]], path: Path) -> Path:
    """One row of (H, W) images in [0, 1] per entry of `rows`, its key as the row's label; every
    image on the same grey scale (0 black, 1 white), so that intensities compare across rows."""
    n_columns = max(len(images) for images in rows.values())
    figure, axes = plt.subplots(len(rows), n_columns, squeeze=False, layout="constrained",
                                figsize=(OVERLAY_CELL * n_columns, OVERLAY_CELL * len(rows)))
    for row_axes, (label, images) in zip(axes, rows.items()):
        for axis in row_axes:
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_frame_on(False)
        for axis, image in zip(row_axes, images):
            axis.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        row_axes[0].set_ylabel(label, fontsize="small")
    return _save(figure, path)
