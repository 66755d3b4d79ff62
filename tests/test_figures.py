"""scripts/make_figures.py on a tiny demo run: every figure is a PNG of the intended size, small."""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.image
import pytest

import test as test_script  # noqa: F401  (registers the "test" command)
import train as train_script  # noqa: F401  (registers the "train" main)
from config import ex
from dataloaders.demo_data import write_demo_dataset
from dataloaders.specs import get_spec
from evaluation import figures
from evaluation.figures import CURVES_SIZE, DISTRIBUTION_HEIGHT, DPI, OVERLAY_CELL, OVERLAY_COLUMNS
from utils.io import read_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from make_figures import dice_distributions, learning_curves, overlays  # noqa: E402

MAX_PNG_BYTES = 300 * 1024
TINY = dict(image_size=64, n_steps=2, log_every=1, checkpoint_every=2, validate_every=1, n_validation_scans=1,
            min_superpixel_area=16, model=dict(encoder="resnet18"))
METHODS = ("psmnet", "alpnet")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Fold 0 of PSMnet and SSL-ALPNet on 64 px demo data, trained 2 steps and tested."""
    root = tmp_path_factory.mktemp("figures")
    write_demo_dataset(root / "data" / "DEMO", n_scans=len(get_spec("DEMO").scan_ids), seed=0, size=64)
    config = dict(TINY, data_root=str(root / "data"), runs_root=str(root / "runs"))
    for method in METHODS:
        for command in ("train", "test"):
            ex.run(command, config_updates=config, named_configs=["demo", "cpu", method], options={"--loglevel": "ERROR"})
    return root / "runs"


def pixel_size(path: Path) -> tuple[int, int]:
    height, width = matplotlib.image.imread(path).shape[:2]
    return width, height


def test_learning_curves_and_dice_distributions_are_small_pngs(runs, tmp_path):
    rows = [str(runs / f"DEMO_setting1_{method}") for method in METHODS]
    curves = learning_curves(rows, tmp_path / "curves.png")
    assert pixel_size(curves) == (round(CURVES_SIZE[0] * DPI), round(CURVES_SIZE[1] * DPI))
    dice = dice_distributions(rows, tmp_path / "dice.png", labels=["PSMnet", "SSL-ALPNet"])
    with pytest.raises(SystemExit, match="1 label.*for 2 row"):
        dice_distributions(rows, tmp_path / "none.png", labels=["PSMnet"])
    assert pixel_size(dice)[1] == round(DISTRIBUTION_HEIGHT * DPI)
    for path in (curves, dice):
        assert 0 < path.stat().st_size < MAX_PNG_BYTES


def test_the_legend_lies_beside_the_plot_and_covers_no_box(monkeypatch, tmp_path):
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda figure, path: drawn.append(figure) or path)
    dice = {method: {"liver": [0.9, 0.5, 0.7], "spleen": [0.2, 0.95]} for method in ("a long method name", "b")}
    figures.plot_dice_distributions(dice, ["liver", "spleen"], tmp_path / "dice.png")
    curves = {"a long method name": {0: {200: 0.5, 400: 0.99}}, "b": {0: {200: 0.1, 400: 0.2}, 1: {200: 0.3}}}
    figures.plot_learning_curves(curves, tmp_path / "curves.png")
    figures.plot_support_sizes({"a long method name": {1: [0.5], 8: [0.6]}}, tmp_path / "support.png")
    for figure in drawn:
        figure.canvas.draw()
        legend, = figure.legends
        renderer = figure.canvas.get_renderer()
        legend_box, axes_box = legend.get_window_extent(renderer), figure.axes[0].get_window_extent(renderer)
        assert legend_box.x0 >= axes_box.x1 and legend_box.x1 <= figure.bbox.x1
        assert [text.get_text() for text in legend.get_texts()][0].startswith("a long method name")
    curve_labels = [text.get_text() for text in drawn[1].legends[0].get_texts()]
    assert curve_labels == ["a long method name (1 fold)", "b (2 folds)"]


def test_overlay_grid_has_one_row_per_chosen_slice(runs, tmp_path):
    run = runs / "DEMO_setting1_psmnet_fold0"
    default = overlays(run, "liver", None, None, tmp_path / "parts.png")  # the middle slice of each of 3 parts
    assert pixel_size(default) == (round(OVERLAY_CELL * len(OVERLAY_COLUMNS) * DPI), round(OVERLAY_CELL * 3 * DPI))
    assert default.stat().st_size < MAX_PNG_BYTES
    first_query = min(int(scan) for scan in read_json(run / "evaluation_fold0" / "summary.json")["organs"]["liver"]["scans"])
    with pytest.raises(SystemExit, match="outside liver's z-range"):
        overlays(run, "liver", first_query, [10_000], tmp_path / "none.png")
    with pytest.raises(SystemExit, match="not a query scan"):
        overlays(run, "liver", 10_000, None, tmp_path / "none.png")


def test_support_size_figure_draws_fold_means_and_spread_on_a_log2_axis(monkeypatch, tmp_path):
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda figure, path: drawn.append(figure) or path)
    figures.plot_support_sizes({"PSMnet": {1: [0.4, 0.6], 2: [0.5, 0.5], 8: [0.9, 0.7]}}, tmp_path / "support.png")
    axes = drawn[0].axes[0]
    line, = axes.get_lines()
    assert line.get_xdata().tolist() == [1, 2, 8]
    assert line.get_ydata() == pytest.approx([50.0, 50.0, 80.0])
    band, = axes.collections  # mean ± std: 40-60, 50-50, 70-90
    vertices = band.get_paths()[0].vertices
    assert vertices[:, 1].min() == pytest.approx(40.0) and vertices[:, 1].max() == pytest.approx(90.0)
    assert axes.get_xscale() == "log"
    assert [tick.get_text() for tick in axes.get_xticklabels()] == ["1", "2", "8"]
    assert drawn[0].legends[0].get_texts()[0].get_text() == "PSMnet (2 folds)"
