"""Superpixel pseudolabels, slices of each organ and derived-file writing (docs/PROTOCOL.md "Derived files")."""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from dataloaders.derived_files import ensure_derived_files
from dataloaders.slice_selection import slices_containing
from dataloaders.specs import get_spec
from dataloaders.superpixels import FELZENSZWALB_MIN_SIZE, body_mask_2d, body_threshold, superpixels_2d
from utils.io import DataError, read_array, read_image, read_json, write_json

CHAOST2_DIR = Path(os.environ.get("FSMIS_CHAOST2_DIR", Path(__file__).resolve().parents[2] / "shared/data/CHAOST2"))
DEMO = get_spec("DEMO")
METHOD = "2d"  # per-slice Felzenszwalb


def synthetic_body(n_slices: int = 2, size: int = 96, seed: int = 0) -> np.ndarray:
    """(Z, H, W): a textured disc of 'tissue' (four intensity quadrants) on an empty background."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - size / 2
    disc = x**2 + y**2 < (0.4 * size) ** 2
    quadrants = 200.0 + 150.0 * (x > 0) + 300.0 * (y > 0)
    plane = np.where(disc, quadrants, 0.0)
    return np.stack([plane + rng.normal(0, 5, plane.shape) * disc for _ in range(n_slices)])


def check_superpixel_rules(volume: np.ndarray, superpixels: np.ndarray) -> None:
    threshold = body_threshold(volume)
    for plane, ids in zip(volume, superpixels):
        body = body_mask_2d(plane, threshold)
        assert not ids[~body].any(), "superpixel ids outside the body"
        present = np.unique(ids[body])
        assert present.tolist() == list(range(1, len(present) + 1)), "ids are not 1..n in the slice"
        touches_border = np.unique(ids[ndimage.binary_dilation(~body) & body])
        for segment in set(present.tolist()) - set(touches_border.tolist()):
            assert (ids == segment).sum() >= FELZENSZWALB_MIN_SIZE


def test_body_threshold_is_a_fraction_of_the_scan_range():
    volume = np.concatenate([np.zeros(50), np.full(50, 1000.0)]).reshape(1, 10, 10)
    assert body_threshold(volume, fraction=0.1, percentile=99.0) == pytest.approx(100.0)


def test_body_mask_keeps_the_largest_component_with_holes_filled():
    plane = np.zeros((20, 20))
    plane[2:12, 2:12] = 10.0
    plane[5:8, 5:8] = 0.0  # a hole
    plane[15:18, 15:18] = 10.0  # a smaller island
    mask = body_mask_2d(plane, threshold=5.0)
    expected = np.zeros((20, 20), dtype=bool)
    expected[2:12, 2:12] = True
    assert np.array_equal(mask, expected)
    assert not body_mask_2d(np.zeros((4, 4)), 1.0).any()


def test_synthetic_superpixels_restart_per_slice_and_stay_in_the_body():
    volume = synthetic_body()
    superpixels = superpixels_2d(volume)
    assert superpixels.dtype == np.int32 and superpixels.shape == volume.shape
    assert superpixels[0].max() >= 4  # the four quadrants are separate superpixels
    assert superpixels[0, 0, 0] == 0 and superpixels[1].min() == 0
    check_superpixel_rules(volume, superpixels)


@pytest.mark.skipif(not CHAOST2_DIR.is_dir(), reason=f"CHAOST2 not found at {CHAOST2_DIR} (set FSMIS_CHAOST2_DIR)")
def test_real_chaost2_slices_follow_the_superpixel_rules():
    volume = read_array(CHAOST2_DIR / "image_1.nii.gz")
    chosen = volume[[12, 20]]
    superpixels = superpixels_2d(chosen)
    assert all(10 <= ids.max() <= 60 for ids in superpixels)
    check_superpixel_rules(chosen, superpixels)


def test_slices_of_each_organ_are_found_in_the_label_volumes():
    # what SSL-ALPNet's class-slice index (classmap_1.json) stores, read from the labels themselves
    rng = np.random.default_rng(3)
    scans = {5: rng.integers(0, 5, (6, 8, 8)) * (rng.random((6, 1, 1)) < 0.5), 9: np.zeros((3, 8, 8), dtype=np.int64)}
    scans[9][1, 2, 2] = 4
    for label in DEMO.organs:
        for labels in scans.values():
            assert slices_containing(labels, label).tolist() == np.unique(np.nonzero(labels == label)[0]).tolist()
    assert slices_containing(scans[9], 4).tolist() == [1] and slices_containing(scans[9], 1).tolist() == []


def write_tiny_dataset(folder: Path, scan_ids=(1, 2)) -> None:
    folder.mkdir(parents=True)
    for scan_id in scan_ids:
        volume = synthetic_body(n_slices=3, size=48, seed=scan_id)
        labels = np.zeros(volume.shape, dtype=np.uint8)
        labels[scan_id, 10:20, 10:20] = 1
        labels[0, 30:34, 30:34] = 4
        write_tiny_volume(volume, folder / f"image_{scan_id}.nii.gz")
        write_tiny_volume(labels, folder / f"label_{scan_id}.nii.gz")


def write_tiny_volume(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.25, 1.25, 7.7))
    image.SetOrigin((-5.0, 3.0, 1.0))
    sitk.WriteImage(image, str(path), useCompression=True)


def test_ensure_derived_files_writes_everything_once(tmp_path):
    spec = dataclasses.replace(DEMO, scan_ids=(1, 2))
    dataset_dir, derived_dir = tmp_path / "DEMO", tmp_path / "derived"
    write_tiny_dataset(dataset_dir)
    done: list[int] = []
    assert ensure_derived_files(dataset_dir, spec, derived_dir, method=METHOD, on_scan_done=done.append) == derived_dir
    assert sorted(done) == [1, 2]

    superpixel_file = derived_dir / "superpixels_2.nii.gz"
    image, written = read_image(dataset_dir / "image_2.nii.gz"), read_image(superpixel_file)
    assert written.GetOrigin() == image.GetOrigin() and written.GetSpacing() == image.GetSpacing()
    assert np.array_equal(read_array(superpixel_file), superpixels_2d(read_array(dataset_dir / "image_2.nii.gz")))
    assert sorted(path.name for path in derived_dir.iterdir()) == ["dataset.json", "derived_files.json",
                                                                   "superpixels_1.nii.gz", "superpixels_2.nii.gz"]
    metadata = read_json(derived_dir / "dataset.json")
    voxels = np.concatenate([read_array(dataset_dir / f"image_{i}.nii.gz").ravel() for i in (1, 2)])
    assert metadata["scan_ids"] == [1, 2] and metadata["scans"]["1"]["shape"] == [3, 48, 48]
    assert metadata["intensity_mean"] == pytest.approx(voxels.mean()) and metadata["intensity_std"] == pytest.approx(voxels.std())

    stamps = {path.name: path.stat().st_mtime_ns for path in derived_dir.iterdir()}
    ensure_derived_files(dataset_dir, spec, derived_dir, method=METHOD)
    assert {path.name: path.stat().st_mtime_ns for path in derived_dir.iterdir()} == stamps

    newer = (dataset_dir / "image_2.nii.gz").stat().st_mtime_ns + 10**9
    os.utime(dataset_dir / "image_2.nii.gz", ns=(newer, newer))  # touched, same content: still current
    ensure_derived_files(dataset_dir, spec, derived_dir, method=METHOD)
    assert {path.name: path.stat().st_mtime_ns for path in derived_dir.iterdir()} == stamps

    (dataset_dir / "image_2.nii.gz").write_bytes(b"")  # a changed input is read again (and refused)
    with pytest.raises(DataError, match="image_2.nii.gz"):
        ensure_derived_files(dataset_dir, spec, derived_dir, method=METHOD)


def test_input_replaced_by_an_older_file_with_other_content_recomputes_its_derived_files(tmp_path):
    spec = dataclasses.replace(DEMO, scan_ids=(1, 2))
    dataset_dir, derived_dir = tmp_path / "DEMO", tmp_path / "derived"
    write_tiny_dataset(dataset_dir)
    ensure_derived_files(dataset_dir, spec, derived_dir, method=METHOD)
    first = {path.name: path.stat().st_mtime_ns for path in derived_dir.iterdir()}

    other_image = tmp_path / "other_image.nii.gz"
    write_tiny_volume(synthetic_body(n_slices=3, size=48, seed=7), other_image)
    older = (dataset_dir / "image_2.nii.gz").stat().st_mtime_ns - 10**10
    os.utime(other_image, ns=(older, older))
    shutil.copy2(other_image, dataset_dir / "image_2.nii.gz")  # what `cp -p` does: the old timestamp comes along
    assert (dataset_dir / "image_2.nii.gz").stat().st_mtime_ns < first["superpixels_2.nii.gz"]
    ensure_derived_files(dataset_dir, spec, derived_dir, method=METHOD)

    new_image = read_array(dataset_dir / "image_2.nii.gz")
    assert np.array_equal(read_array(derived_dir / "superpixels_2.nii.gz"), superpixels_2d(new_image))
    assert (derived_dir / "superpixels_1.nii.gz").stat().st_mtime_ns == first["superpixels_1.nii.gz"]
    metadata = read_json(derived_dir / "dataset.json")
    assert metadata["scans"]["2"]["intensity_mean"] == pytest.approx(new_image.astype(np.float64).mean())


@pytest.mark.parametrize("damage", ["truncate", "flip_bit"])
def test_damaged_superpixel_file_is_recomputed_with_a_log_line(tmp_path, caplog, damage):
    spec = dataclasses.replace(DEMO, scan_ids=(1, 2))
    dataset_dir, derived_dir = tmp_path / "DEMO", tmp_path / "derived"
    write_tiny_dataset(dataset_dir)
    ensure_derived_files(dataset_dir, spec, derived_dir, method=METHOD)
    superpixel_file = derived_dir / "superpixels_1.nii.gz"
    intact = superpixel_file.read_bytes()
    damaged = bytearray(intact[: len(intact) // 2] if damage == "truncate" else intact)
    if damage == "flip_bit":
        damaged[len(damaged) // 2] ^= 0x01
    superpixel_file.write_bytes(bytes(damaged))
    with caplog.at_level(logging.WARNING, logger="dataloaders.derived_files"):
        ensure_derived_files(dataset_dir, spec, derived_dir, method=METHOD)
    assert "superpixels_1.nii.gz: computing it (damaged or truncated" in caplog.text
    assert np.array_equal(read_array(superpixel_file), superpixels_2d(read_array(dataset_dir / "image_1.nii.gz")))


def test_parallel_workers_write_the_same_superpixels(tmp_path):
    spec = dataclasses.replace(DEMO, scan_ids=(1, 2))
    write_tiny_dataset(tmp_path / "DEMO")
    ensure_derived_files(tmp_path / "DEMO", spec, tmp_path / "serial", method=METHOD, workers=1)
    ensure_derived_files(tmp_path / "DEMO", spec, tmp_path / "parallel", method=METHOD, workers=2)
    for name in ("superpixels_1.nii.gz", "superpixels_2.nii.gz", "dataset.json"):
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "parallel" / name).read_bytes()


def test_dataset_json_keeps_what_preprocessing_recorded(tmp_path):
    spec = dataclasses.replace(DEMO, scan_ids=(1, 2))
    dataset_dir = tmp_path / "DEMO"
    write_tiny_dataset(dataset_dir)
    write_json({"source_images": {"1": "raw/img0001.nii.gz"}, "intensity_mean": -1.0}, dataset_dir / "dataset.json")
    ensure_derived_files(dataset_dir, spec, dataset_dir, method=METHOD)
    metadata = read_json(dataset_dir / "dataset.json")
    assert metadata["source_images"] == {"1": "raw/img0001.nii.gz"}
    assert metadata["intensity_mean"] > 0 and metadata["scan_ids"] == [1, 2]
