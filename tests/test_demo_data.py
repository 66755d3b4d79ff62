"""Synthetic DEMO dataset: deterministic, CHAOST2-like layout, all four organs where they belong."""
from __future__ import annotations

import numpy as np
import pytest

from dataloaders.demo_data import DEFAULT_SLICES, SLICE_COUNT_JITTER, write_demo_dataset
from dataloaders.specs import get_spec
from dataloaders.volumes import clear_scan_cache, load_scans
from scripts.make_demo_data import main as make_demo_data
from utils.io import read_array, read_image

SIZE = 64
N_SCANS = 2
MIN_CONFUSABLE_SHARE = 0.1


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo") / "DEMO"
    write_demo_dataset(folder, n_scans=N_SCANS, seed=0, size=SIZE)
    return folder


def test_same_seed_gives_the_same_bytes(demo_dir, tmp_path):
    assert make_demo_data(["--out", str(tmp_path / "again"), "--scans", str(N_SCANS), "--seed", "0", "--size", str(SIZE)]) == 0
    for path in sorted(demo_dir.iterdir()):
        assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes(), path.name
    write_demo_dataset(tmp_path / "other", n_scans=1, seed=1, size=SIZE)
    assert (tmp_path / "other" / "image_1.nii.gz").read_bytes() != (demo_dir / "image_1.nii.gz").read_bytes()


def test_files_have_the_chaost2_layout_and_geometry(demo_dir):
    assert sorted(path.name for path in demo_dir.iterdir()) == ["image_1.nii.gz", "image_2.nii.gz", "label_1.nii.gz", "label_2.nii.gz"]
    for scan_id in range(1, N_SCANS + 1):
        image = read_image(demo_dir / f"image_{scan_id}.nii.gz")
        assert image.GetSpacing() == pytest.approx((1.25, 1.25, 7.7))
        z, h, w = read_array(demo_dir / f"image_{scan_id}.nii.gz").shape
        assert (h, w) == (SIZE, SIZE) and abs(z - DEFAULT_SLICES) <= SLICE_COUNT_JITTER
        intensities = read_array(demo_dir / f"image_{scan_id}.nii.gz")
        assert intensities.min() >= 0 and np.array_equal(intensities, np.round(intensities))


def test_every_scan_has_all_four_organs_in_radiological_places(demo_dir):
    clear_scan_cache()
    scans = load_scans(demo_dir, get_spec("DEMO"), list(range(1, N_SCANS + 1)))
    for scan in scans.values():
        labels = scan.labels
        assert np.unique(labels).tolist() == [0, 1, 2, 3, 4]
        columns = {label: np.nonzero(labels == label)[2].mean() for label in (1, 2, 3, 4)}
        rows = {label: np.nonzero(labels == label)[1].mean() for label in (1, 2, 3, 4)}
        assert columns[1] < SIZE / 2 and columns[2] < SIZE / 2  # patient's right on the image left
        assert columns[3] > SIZE / 2 and columns[4] > SIZE / 2
        assert rows[2] > rows[1] and rows[3] > rows[1]  # kidneys posterior to the liver
        assert (labels == 1).sum() > max((labels == label).sum() for label in (2, 3, 4))


def test_no_organ_is_isolated_by_its_intensities_alone(demo_dir):
    """Voxels outside an organ whose intensity lies in the organ's central band (10th-90th
    percentile), pooled over the scans, amount to at least MIN_CONFUSABLE_SHARE of its volume."""
    images = [read_array(demo_dir / f"image_{scan_id}.nii.gz") for scan_id in range(1, N_SCANS + 1)]
    labels = [read_array(demo_dir / f"label_{scan_id}.nii.gz") for scan_id in range(1, N_SCANS + 1)]
    for label in (1, 2, 3, 4):
        confusable, organ_voxels = 0, 0
        for image, label_map in zip(images, labels):
            low, high = np.percentile(image[label_map == label], [10, 90])
            confusable += int(((image >= low) & (image <= high) & (label_map != label)).sum())
            organ_voxels += int((label_map == label).sum())
        assert confusable / organ_voxels >= MIN_CONFUSABLE_SHARE, f"organ {label} separable by intensity alone"
