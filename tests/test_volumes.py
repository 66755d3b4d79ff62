"""Loading scans: validation errors that name the file, remapping, normalisation, resizing, cache."""
from __future__ import annotations

import dataclasses
import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from dataloaders import volumes
from dataloaders.dataset_metadata import intensity_statistics, write_dataset_metadata
from dataloaders.folds import FoldSplit
from dataloaders.specs import get_spec
from dataloaders.volumes import default_derived_dir, load_scans, resolve_data_root
from experiment.assembly import FoldData
from utils.io import DataError, read_array, read_json

CHAOST2_DIR = Path(os.environ.get("FSMIS_CHAOST2_DIR", Path(__file__).resolve().parents[2] / "shared/data/CHAOST2"))
SHAPE = (4, 16, 16)
SPACING = (1.25, 1.25, 7.7)
TWO_SCANS = dataclasses.replace(get_spec("DEMO"), scan_ids=(1, 2))


def write_volume(path: Path, array: np.ndarray, spacing=SPACING, origin=(0.0, 0.0, 0.0)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path), useCompression=True)


def hand_made_labels(dtype=np.float64) -> np.ndarray:
    labels = np.zeros(SHAPE, dtype=dtype)
    labels[1, 2:6, 2:6] = 1
    labels[2, 8:12, 3:7] = 2
    labels[2, 8:12, 9:13] = 3
    labels[3, 1:4, 10:14] = 4
    return labels


def make_dataset(folder: Path, scan_ids=(1, 2)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for scan_id in scan_ids:
        write_volume(folder / f"image_{scan_id}.nii.gz", rng.uniform(0, 500, SHAPE).round())
        write_volume(folder / f"label_{scan_id}.nii.gz", hand_made_labels())
    return folder


@pytest.fixture(autouse=True)
def empty_cache():
    volumes.clear_scan_cache()
    yield
    volumes.clear_scan_cache()


def test_loads_zscored_images_and_integer_labels(tmp_path):
    scans = load_scans(make_dataset(tmp_path / "DEMO"), TWO_SCANS)
    assert list(scans) == [1, 2]
    scan = scans[2]
    assert scan.image.shape == SHAPE and scan.image.dtype == np.float32
    assert abs(float(scan.image.mean())) < 1e-5 and abs(float(scan.image.std()) - 1.0) < 1e-4
    assert scan.labels.dtype == np.int64 and np.array_equal(scan.labels, hand_made_labels(np.int64))
    assert scan.native_labels is scan.labels and scan.superpixels is None
    assert scan.spacing == pytest.approx(SPACING) and len(scan.direction) == 9


def test_cmr_stored_values_are_remapped(tmp_path):
    folder = tmp_path / "CMR"
    folder.mkdir()
    stored = hand_made_labels()
    stored[stored == 1], stored[stored == 2], stored[stored == 3], stored[stored == 4] = 200, 500, 600, 0
    write_volume(folder / "image_1.nii.gz", np.arange(np.prod(SHAPE), dtype=np.float64).reshape(SHAPE))
    write_volume(folder / "label_1.nii.gz", stored)
    labels = load_scans(folder, get_spec("CMR"), [1])[1].labels
    expected = hand_made_labels(np.int64)
    expected[expected == 4] = 0
    assert np.array_equal(labels, expected)


def test_ct_is_normalised_with_the_statistics_it_is_given(tmp_path):
    folder = make_dataset(tmp_path / "SABS", scan_ids=(0,))
    sabs = get_spec("SABS")
    with pytest.raises(ValueError, match="training scans"):
        load_scans(folder, sabs, [0])
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "image_0.nii.gz")))
    image = load_scans(folder, sabs, [0], intensity_statistics=(100.0, 50.0))[0].image
    np.testing.assert_allclose(image, (raw - 100.0) / 50.0, rtol=1e-6)


def test_ct_statistics_come_from_the_fold_training_scans_only(tmp_path):
    sabs = dataclasses.replace(get_spec("SABS"), scan_ids=(0, 1, 2, 3))
    folder = make_dataset(tmp_path / "SABS", scan_ids=sabs.scan_ids)
    data = FoldData(sabs, folder, folder, FoldSplit(query_ids=(3,), support_ids=(2,), train_ids=(0, 1)), None)
    with pytest.raises(DataError, match="make_pseudolabels"):
        data.load((3,))
    write_dataset_metadata(folder, sabs, folder)
    mean, std = data.intensity_statistics()
    training_voxels = np.concatenate([read_array(folder / f"image_{i}.nii.gz").ravel() for i in (0, 1)]).astype(np.float64)
    assert (mean, std) == (pytest.approx(training_voxels.mean(), rel=1e-12), pytest.approx(training_voxels.std(), rel=1e-12))

    all_scans_mean = read_json(folder / "dataset.json")["intensity_mean"]
    query = (read_array(folder / "image_3.nii.gz") * 10 + 1000).astype(np.float32)
    write_volume(folder / "image_3.nii.gz", query)
    write_dataset_metadata(folder, sabs, folder)
    assert read_json(folder / "dataset.json")["intensity_mean"] != pytest.approx(all_scans_mean)
    assert data.intensity_statistics() == (mean, std)
    np.testing.assert_allclose(data.load((3,))[3].image, (query - mean) / std, rtol=1e-5)


def test_one_absurd_voxel_refuses_the_scan_instead_of_blanking_it(tmp_path):
    folder = make_dataset(tmp_path / "DEMO")
    image = read_array(folder / "image_2.nii.gz").astype(np.float32)
    image[1, 3, 3] = 1e20  # finite in float32, but its square overflows a float32 variance
    write_volume(folder / "image_2.nii.gz", image)
    with pytest.raises(DataError, match=r"image_2\.nii\.gz: 1 of 1024 voxels have an absolute intensity above 1e\+06"):
        load_scans(folder, TWO_SCANS)
    with pytest.raises(DataError, match=r"image_2\.nii\.gz: 1 of 1024"):
        write_dataset_metadata(folder, TWO_SCANS, folder)
    image[1, 3, 3] = 1e6  # the bound itself is a valid intensity
    write_volume(folder / "image_2.nii.gz", image)
    normalised = load_scans(folder, TWO_SCANS)[2].image
    assert np.isfinite(normalised).all() and float(normalised.std()) == pytest.approx(1.0, abs=1e-4)
    assert np.unique(normalised).size > 100  # not collapsed to (almost) one value


def test_non_finite_normalisation_statistics_are_refused(tmp_path):
    folder = make_dataset(tmp_path / "SABS", scan_ids=(0,))
    with pytest.raises(DataError, match=r"image_0\.nii\.gz: normalisation statistics are not finite"):
        load_scans(folder, get_spec("SABS"), [0], intensity_statistics=(0.0, float("inf")))


def test_non_finite_intensity_record_in_dataset_json_is_refused(tmp_path):
    sabs = dataclasses.replace(get_spec("SABS"), scan_ids=(0, 1))
    folder = make_dataset(tmp_path / "SABS", scan_ids=sabs.scan_ids)
    write_dataset_metadata(folder, sabs, folder)
    metadata = read_json(folder / "dataset.json")
    metadata["scans"]["1"]["intensity_std"] = float("inf")
    (folder / "dataset.json").write_text(json.dumps(metadata))
    with pytest.raises(DataError, match=r"dataset\.json: the intensity record of scan 1 is not finite"):
        intensity_statistics(folder, folder, (0, 1))


def test_second_load_returns_the_cached_objects_until_a_file_content_changes(tmp_path):
    folder = make_dataset(tmp_path / "DEMO")
    first = load_scans(folder, TWO_SCANS)
    assert load_scans(folder, TWO_SCANS)[1] is first[1]
    assert load_scans(folder, TWO_SCANS, image_size=8)[1] is not first[1]
    label_file = folder / "label_1.nii.gz"
    stamp = label_file.stat().st_mtime_ns + 10**9
    os.utime(label_file, ns=(stamp, stamp))  # touched, same content: the same scan
    assert load_scans(folder, TWO_SCANS)[1] is first[1]
    labels = hand_made_labels()
    labels[0, 0, 0] = 1
    write_volume(label_file, labels)
    os.utime(label_file, ns=(stamp, stamp))  # other content with the earlier time (cp -p, rsync -a)
    reloaded = load_scans(folder, TWO_SCANS)
    assert reloaded[1] is not first[1] and reloaded[1].labels[0, 0, 0] == 1
    assert reloaded[2] is first[2]
    with pytest.raises(ValueError, match="read-only"):
        first[1].image[0, 0, 0] = 1.0


def test_image_size_resizes_image_and_labels_but_not_native_labels(tmp_path):
    scan = load_scans(make_dataset(tmp_path / "DEMO"), TWO_SCANS, image_size=8)[1]
    assert scan.image.shape == (4, 8, 8) and scan.labels.shape == (4, 8, 8)
    assert np.array_equal(scan.native_labels, hand_made_labels(np.int64))
    assert np.array_equal(scan.labels, hand_made_labels(np.int64)[:, ::2, ::2])


def corrupt_label_value(folder: Path) -> None:
    labels = hand_made_labels()
    labels[0, 0, 0] = 7
    write_volume(folder / "label_2.nii.gz", labels)


def corrupt_non_integral(folder: Path) -> None:
    labels = hand_made_labels()
    labels[0, 0, 0] = 1.5
    write_volume(folder / "label_2.nii.gz", labels)


def corrupt_shape(folder: Path) -> None:
    write_volume(folder / "label_2.nii.gz", np.zeros((3, 16, 16)))


def corrupt_spacing(folder: Path) -> None:
    write_volume(folder / "label_2.nii.gz", hand_made_labels(), spacing=(1.25, 1.25, 5.0))


def corrupt_origin(folder: Path) -> None:
    write_volume(folder / "label_2.nii.gz", hand_made_labels(), origin=(0.0, 3.0, 0.0))


def remove_label(folder: Path) -> None:
    (folder / "label_2.nii.gz").unlink()


def truncate_label(folder: Path) -> None:
    path = folder / "label_2.nii.gz"
    payload = gzip.compress(gzip.decompress(path.read_bytes()))
    path.write_bytes(payload[: len(payload) * 2 // 3])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (corrupt_label_value, r"unexpected label values \[7\]"),
        (corrupt_non_integral, "whole numbers"),
        (corrupt_shape, "shape"),
        (corrupt_spacing, "spacing"),
        (corrupt_origin, "origin"),
        (remove_label, "label file missing"),
        (truncate_label, "truncated|corrupt|not a valid gzip"),
    ],
)
def test_bad_label_file_gives_a_data_error_naming_it(tmp_path, damage, message):
    folder = make_dataset(tmp_path / "DEMO")
    damage(folder)
    with pytest.raises(DataError, match=message) as error:
        load_scans(folder, TWO_SCANS)
    assert "label_2.nii.gz" in str(error.value)


def test_missing_dataset_dir_says_how_to_set_it(tmp_path):
    with pytest.raises(DataError, match="FSMIS_DATA_ROOT") as error:
        load_scans(tmp_path / "nowhere", TWO_SCANS)
    assert "nowhere" in str(error.value) and "data_root" in str(error.value)


def test_missing_superpixels_say_which_script_makes_them(tmp_path):
    with pytest.raises(DataError, match="superpixels_1.nii.gz.*make_pseudolabels"):
        load_scans(make_dataset(tmp_path / "DEMO"), TWO_SCANS, with_superpixels=True)


def test_derived_dir_is_the_dataset_dir_unless_read_only(tmp_path):
    folder = make_dataset(tmp_path / "DEMO")
    assert default_derived_dir(folder) == folder
    folder.chmod(0o555)
    try:
        assert default_derived_dir(folder) == volumes.REPO_ROOT / "data" / "derived" / "DEMO"
    finally:
        folder.chmod(0o755)


def test_data_root_comes_from_config_then_environment_then_repo(monkeypatch, tmp_path):
    monkeypatch.setenv("FSMIS_DATA_ROOT", str(tmp_path / "env"))
    assert resolve_data_root(str(tmp_path / "config")) == tmp_path / "config"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("FSMIS_DATA_ROOT")
    assert resolve_data_root(None) == volumes.REPO_ROOT / "data"


@pytest.mark.skipif(not CHAOST2_DIR.is_dir(), reason=f"CHAOST2 not found at {CHAOST2_DIR} (set FSMIS_CHAOST2_DIR)")
def test_real_chaost2_scan_loads_with_all_four_organs():
    scan = load_scans(CHAOST2_DIR, get_spec("CHAOST2"), [1])[1]
    assert scan.image.shape == (37, 256, 256)
    assert np.unique(scan.labels).tolist() == [0, 1, 2, 3, 4]
    assert scan.spacing == pytest.approx((1.25, 1.25, 7.7), abs=1e-6)


class CorruptScanReader(torch.utils.data.Dataset):
    """Reads one scan file per item, as a worker would."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> np.ndarray:
        return read_array(self.path)


def test_a_data_error_in_a_loader_worker_still_ends_with_the_file_name(tmp_path):
    folder = make_dataset(tmp_path / "DEMO", scan_ids=(1,))
    compressed = bytearray((folder / "image_1.nii.gz").read_bytes())
    compressed[len(compressed) // 2] ^= 0x10
    (folder / "image_1.nii.gz").write_bytes(bytes(compressed))
    loader = torch.utils.data.DataLoader(CorruptScanReader(folder / "image_1.nii.gz"), num_workers=1)
    with pytest.raises(DataError) as error:
        next(iter(loader))
    message = str(error.value)
    assert "DataLoader worker process 0" in message  # torch re-raises the worker's error with its traceback
    assert message.strip().splitlines()[-1].startswith(f"utils.io.DataError: {folder / 'image_1.nii.gz'}: corrupt or truncated")
