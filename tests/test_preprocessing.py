"""Preprocessing from the raw downloads (docs/PROTOCOL.md): small synthetic CHAOS / Synapse / MS-CMRSeg
inputs go through each script's `main`, and the outputs are checked against the protocol."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from preprocessing.cases import CONVERSION_RECORDS_NAME
from preprocessing.resampling import as_label_image, crop_or_pad_xy, resample_to_spacing
from scripts import prepare_chaos, prepare_cmr, prepare_sabs
from utils.io import DataError, read_json

REPO_ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# Synthetic raw inputs

CHAOS_SHAPE = (6, 64, 80)  # Z, H, W
CHAOS_SPACING = (1.5, 1.5, 8.0)  # x, y, z mm
CHAOS_ORIGIN = (-50.0, -40.0, 0.0)
OUTLIER_VALUE = 30000
PLATEAU_VALUE = 2000
# Organ blocks of the synthetic masks: grey level, slice, rows, cols.
CHAOS_BLOCKS = {
    1: (63, 2, slice(10, 26), slice(5, 21)),
    2: (120, 3, slice(30, 40), slice(10, 20)),
    3: (190, 3, slice(30, 40), slice(55, 65)),
    4: (250, 1, slice(20, 30), slice(60, 75)),
}


def mr_intensities(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A ramp, a bright plateau over every slice (2.8% of voxels) and a few extreme outliers, so
    that the 99.5th percentile is the plateau value and clipping is visible in the maximum."""
    depth, height, width = shape
    rng = np.random.default_rng(seed)
    volume = np.broadcast_to(np.arange(width, dtype=np.int32) * 10, shape).copy() + rng.integers(0, 5, shape)
    volume[:, height // 2 - 6 : height // 2 + 6, width // 2 - 6 : width // 2 + 6] = PLATEAU_VALUE
    outliers = rng.choice(np.flatnonzero(volume != PLATEAU_VALUE), size=30, replace=False)
    volume.flat[outliers] = OUTLIER_VALUE
    return volume


def write_dicom_series(
    folder: Path, volume: np.ndarray, names: list[str], instance_numbers: list[int], spacing=CHAOS_SPACING, origin=CHAOS_ORIGIN
) -> None:
    """Axial slice k of `volume` (Z, H, W) at z = origin + k * spacing, stored as `names[k]`."""
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k, (name, number) in enumerate(zip(names, instance_numbers)):
        slice_image = sitk.GetImageFromArray(volume[k].astype(np.int16))
        slice_image.SetSpacing(spacing[:2])
        tags = {
            "0008|0060": "MR",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
            "0008|0018": f"1.2.826.0.1.3680043.2.1125.9.{number}",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.2",
            "0020|0013": str(number),
            "0020|0032": f"{origin[0]}\\{origin[1]}\\{origin[2] + k * spacing[2]}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{spacing[1]}\\{spacing[0]}",
            "0018|0050": str(spacing[2]),
        }
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / name))
        writer.Execute(slice_image)


def chaos_grey_masks() -> np.ndarray:
    masks = np.zeros(CHAOS_SHAPE, dtype=np.uint8)
    for grey, z, rows, cols in CHAOS_BLOCKS.values():
        masks[z, rows, cols] = grey
    return masks


def make_chaos_raw(root: Path, pid: str = "1", dicom_names: str = "IMG-0002-{:05d}.dcm") -> Path:
    """CHAOS-like `MR/<pid>/T2SPIR`: instance numbers run against z (as geometry and names
    disagree in real series), masks named like the CHAOS PNGs `IMG-0002-<instance>.png`."""
    depth = CHAOS_SHAPE[0]
    numbers = [depth - k for k in range(depth)]
    series = root / "MR" / pid / "T2SPIR"
    write_dicom_series(series / "DICOM_anon", mr_intensities(CHAOS_SHAPE, seed=int(pid)), [dicom_names.format(n) for n in numbers], numbers)
    (series / "Ground").mkdir()
    for k, (mask, number) in enumerate(zip(chaos_grey_masks(), numbers)):
        sitk.WriteImage(sitk.GetImageFromArray(mask), str(series / "Ground" / f"IMG-0002-{number:05d}.png"))
    return root / "MR"


def physical_centroid(image: sitk.Image, mask: np.ndarray) -> np.ndarray:
    """Mean physical point (x, y, z) of the voxels of `mask` (Z, H, W) in `image`'s geometry."""
    z, y, x = np.nonzero(mask)
    index = np.stack([x, y, z], axis=1).mean(axis=0)
    return np.array(image.TransformContinuousIndexToPhysicalPoint(index.tolist()))


def input_block_centroid(label: int) -> np.ndarray:
    _, z, rows, cols = CHAOS_BLOCKS[label]
    centre_col, centre_row = (cols.start + cols.stop - 1) / 2, (rows.start + rows.stop - 1) / 2
    return np.array(CHAOS_ORIGIN) + np.array([centre_col, centre_row, z]) * np.array(CHAOS_SPACING)


def mtimes(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def chaos_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("chaos")
    raw = make_chaos_raw(root)
    out = root / "out"
    assert prepare_chaos.main(["--raw", str(raw), "--out", str(out)]) == 0
    return raw, out


# ---------------------------------------------------------------------------------------------
# Library pieces


@pytest.mark.filterwarnings("error")  # np.rint of uint8 is float16, in which 65535 overflows: no warning, no cast
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_label_image_keeps_integer_labels_of_any_stored_type_as_uint16(dtype):
    stored = np.array([[[0, 1, 13]]], dtype=dtype)
    label = as_label_image(sitk.GetImageFromArray(stored), "label.nii.gz")
    assert label.GetPixelID() == sitk.sitkUInt16
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), [[[0, 1, 13]]])


@pytest.mark.parametrize("stored, message", [
    (np.array([[[0, 1.5]]], dtype=np.float32), r"label.nii.gz: label volume holds non-integer values, e.g. 1.5"),
    (np.array([[[-1, 2]]], dtype=np.int32), r"label.nii.gz: label values must lie in 0..65535, found -1..2"),
    (np.array([[[0, 70000]]], dtype=np.float32), r"label.nii.gz: label values must lie in 0..65535, found 0..70000"),
])
def test_label_image_refuses_fractional_negative_and_too_large_values_naming_the_file(stored, message):
    with pytest.raises(DataError, match=message):
        as_label_image(sitk.GetImageFromArray(stored), "label.nii.gz")


def test_crop_or_pad_copies_exact_values_pads_outside_and_keeps_physical_positions():
    array = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 3.0, 5.0))
    image.SetOrigin((10.0, 20.0, 30.0))
    cropped = crop_or_pad_xy(image, start_xy=(-1, 1), size_xy=(3, 3), is_label=False, pad_value=-7.0)
    out = sitk.GetArrayFromImage(cropped)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[:, :, 0], -7.0)  # column -1 lies outside: padded
    np.testing.assert_allclose(out[:, :, 1:], array[:, 1:4, 0:2], atol=1e-4)
    np.testing.assert_allclose(cropped.GetOrigin(), (10.0 - 2.0, 20.0 + 3.0, 30.0))
    assert cropped.GetSpacing() == image.GetSpacing()


def test_resample_to_spacing_keeps_the_field_of_view_and_label_values():
    label = sitk.GetImageFromArray(np.repeat(np.array([0, 200, 500, 600], dtype=np.uint16), 10).reshape(1, 1, 40))
    label.SetSpacing((1.0, 1.0, 1.0))
    resampled = resample_to_spacing(label, (2.5, None, None), is_label=True)
    values = sitk.GetArrayFromImage(resampled)[0, 0]
    assert resampled.GetSize() == (16, 1, 1) and resampled.GetSpacing() == (2.5, 1.0, 1.0)
    np.testing.assert_array_equal(np.unique(values, return_counts=True)[1], [4, 4, 4, 4])
    assert resampled.GetOrigin()[0] == pytest.approx(-0.5 + 1.25)  # same left edge, half a new voxel in


# ---------------------------------------------------------------------------------------------
# CHAOS


def test_chaos_grey_levels_map_to_organ_labels_with_inclusive_ranges(tmp_path):
    grey = np.zeros((10, 10), dtype=np.uint8)
    grey[0, :3] = (55, 70, 62)
    grey[1, :4] = (110, 135, 110, 135)
    grey[2, :5] = (175, 200, 180, 190, 199)
    grey[3, :2] = (240, 255)
    labels = prepare_chaos.labels_from_grey(grey, tmp_path / "mask.png")
    assert [int(np.sum(labels == value)) for value in range(5)] == [86, 3, 4, 5, 2]
    np.testing.assert_array_equal(labels[:4, 0], [1, 2, 3, 4])


def test_chaos_grey_value_outside_every_range_names_the_png(tmp_path):
    png = tmp_path / "IMG-0002-00003.png"
    with pytest.raises(DataError, match="IMG-0002-00003.png.*90"):
        prepare_chaos.labels_from_grey(np.array([[0, 63, 90]], dtype=np.uint8), png)


def test_chaos_outputs_have_protocol_spacing_size_orientation_and_z_extent(chaos_run):
    _, out = chaos_run
    assert sorted(path.name for path in out.iterdir()) == sorted([CONVERSION_RECORDS_NAME, "image_1.nii.gz", "label_1.nii.gz"])
    image = sitk.ReadImage(str(out / "image_1.nii.gz"))
    label = sitk.ReadImage(str(out / "label_1.nii.gz"))
    np.testing.assert_allclose(image.GetSpacing(), (1.25, 1.25, 7.70), rtol=1e-6)
    assert image.GetSize()[:2] == (256, 256)
    assert abs(image.GetSize()[2] * 7.70 - CHAOS_SHAPE[0] * CHAOS_SPACING[2]) <= 7.70 / 2
    np.testing.assert_allclose(image.GetDirection(), (1, 0, 0, 0, -1, 0, 0, 0, 1), atol=1e-9)  # LAS
    for attribute in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(label, attribute)() == getattr(image, attribute)()


def test_chaos_masks_land_on_their_dicom_slice_and_position(chaos_run):
    """Instance numbers run against z, so stacking the PNGs by name would misplace every organ."""
    _, out = chaos_run
    label = sitk.ReadImage(str(out / "label_1.nii.gz"))
    values = sitk.GetArrayFromImage(label)
    assert set(np.unique(values)) == {0, 1, 2, 3, 4}
    for organ in CHAOS_BLOCKS:
        centroid = physical_centroid(label, values == organ)
        expected = input_block_centroid(organ)
        np.testing.assert_allclose(centroid[:2], expected[:2], atol=1.25)
        assert abs(centroid[2] - expected[2]) < CHAOS_SPACING[2] / 2


def test_chaos_clips_intensities_at_the_99_5th_percentile(chaos_run):
    raw, out = chaos_run
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(raw / "1" / "T2SPIR" / "DICOM_anon")))
    expected_ceiling = np.percentile(sitk.GetArrayFromImage(reader.Execute()), 99.5)
    assert expected_ceiling == PLATEAU_VALUE  # the outliers above it are what the clip removes
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(out / "image_1.nii.gz"))).max() == pytest.approx(expected_ceiling, rel=1e-5)


def test_chaos_pairs_masks_by_instance_number_when_file_names_differ(tmp_path, chaos_run):
    raw = make_chaos_raw(tmp_path, dicom_names="slice_{:03d}.dcm")
    prepare_chaos.main(["--raw", str(raw), "--out", str(tmp_path / "out")])
    renamed = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "label_1.nii.gz")))
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(chaos_run[1] / "label_1.nii.gz")))
    np.testing.assert_array_equal(renamed, reference)


def test_chaos_converts_again_only_when_input_content_changes_not_its_timestamp(tmp_path):
    raw = make_chaos_raw(tmp_path)
    out = tmp_path / "out"
    prepare_chaos.main(["--raw", str(raw), "--out", str(out)])
    first = mtimes(out)
    assert set(first) == {"image_1.nii.gz", "label_1.nii.gz", CONVERSION_RECORDS_NAME}
    prepare_chaos.main(["--raw", str(raw), "--out", str(out)])
    assert mtimes(out) == first

    png = sorted((raw / "1" / "T2SPIR" / "Ground").iterdir())[0]  # the slice at the top of z (instance numbers run against z)
    later = max(first.values()) / 1e9 + 10
    os.utime(png, (later, later))  # newer, same content: nothing to convert
    prepare_chaos.main(["--raw", str(raw), "--out", str(out)])
    assert mtimes(out) == first

    before = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "label_1.nii.gz")))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(png)))
    mask[:4, :4] = prepare_chaos.CHAOS_GREY_RANGES[4][0]  # a corner of spleen: new content, older timestamp
    sitk.WriteImage(sitk.GetImageFromArray(mask), str(png))
    os.utime(png, (1, 1))
    prepare_chaos.main(["--raw", str(raw), "--out", str(out)])
    after = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "label_1.nii.gz")))
    assert all(mtimes(out)[name] != first[name] for name in first)
    assert (after == 4).sum() > (before == 4).sum()


def test_chaos_damaged_output_is_converted_again_with_a_warning(tmp_path, caplog):
    raw = make_chaos_raw(tmp_path)
    out = tmp_path / "out"
    prepare_chaos.main(["--raw", str(raw), "--out", str(out)])
    reference = (out / "label_1.nii.gz").read_bytes()
    (out / "label_1.nii.gz").write_bytes(reference[: len(reference) // 2])
    with caplog.at_level("WARNING"):
        prepare_chaos.main(["--raw", str(raw), "--out", str(out)])
    assert "case 1: converting it (damaged or truncated" in caplog.text
    assert (out / "label_1.nii.gz").read_bytes() == reference


def test_chaos_mask_count_mismatch_names_the_ground_folder(tmp_path):
    raw = make_chaos_raw(tmp_path)
    next((raw / "1" / "T2SPIR" / "Ground").iterdir()).unlink()
    with pytest.raises(DataError, match=r"Ground: 5 mask PNGs for a DICOM series of 6 slices"):
        prepare_chaos.main(["--raw", str(raw), "--out", str(tmp_path / "out")])


def test_chaos_folder_without_dicom_series_is_an_error_naming_it(tmp_path):
    raw = make_chaos_raw(tmp_path)
    series = raw / "1" / "T2SPIR" / "DICOM_anon"
    for dicom in series.iterdir():
        dicom.write_bytes(b"not a dicom file")
    with pytest.raises(DataError, match=r"DICOM_anon: no DICOM series found"):
        prepare_chaos.main(["--raw", str(raw), "--out", str(tmp_path / "out")])


# ---------------------------------------------------------------------------------------------
# SABS

SABS_SHAPE = (10, 96, 96)
SABS_SPACING = (0.8, 0.8, 3.0)
SABS_CASES = {2: 10.0, 5: 50.0, 10: 90.0}  # Synapse case number -> soft-tissue HU of its body
BODY_ROWS, BODY_COLS = slice(20, 60), slice(16, 76)  # body bounding box: 40 x 60 pixels
BONE_HU, AIR_HU, TABLE_HU = 1500.0, -1000.0, 200.0


def sabs_volumes(tissue_hu: float) -> tuple[np.ndarray, np.ndarray]:
    image = np.full(SABS_SHAPE, AIR_HU, dtype=np.float32)
    image[:, BODY_ROWS, BODY_COLS] = tissue_hu
    image[:, 30:45, 30:45] = BONE_HU
    image[:, 80:84, 4:92] = TABLE_HU  # the scanner table, apart from the body
    label = np.zeros(SABS_SHAPE, dtype=np.uint8)
    for organ in range(1, 14):
        row, col = 22 + 3 * (organ % 4), 50 + 5 * (organ // 4)
        label[2:6, row : row + 3, col : col + 4] = organ
    return image, label


def write_volume(array: np.ndarray, spacing, path: Path, direction=None) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    if direction is not None:
        image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def make_sabs_raw(root: Path) -> Path:
    raw = root / "RawData" / "Training"
    for number, tissue_hu in SABS_CASES.items():
        image, label = sabs_volumes(tissue_hu)
        write_volume(image, SABS_SPACING, raw / "img" / f"img{number:04d}.nii.gz")
        write_volume(label, SABS_SPACING, raw / "label" / f"label{number:04d}.nii.gz")
    return raw


@pytest.fixture(scope="module")
def sabs_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sabs")
    raw, out = make_sabs_raw(root), root / "out"
    assert prepare_sabs.main(["--raw", str(raw), "--out", str(out), "--workers", "2"]) == 0
    return raw, out


def test_sabs_cases_are_sorted_and_reindexed_from_zero(sabs_run):
    _, out = sabs_run
    metadata = read_json(out / "dataset.json")
    assert metadata["source_images"] == {"0": "img0002.nii.gz", "1": "img0005.nii.gz", "2": "img0010.nii.gz"}
    assert metadata["scan_ids"] == [0, 1, 2]
    for index, tissue_hu in enumerate(SABS_CASES.values()):
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"image_{index}.nii.gz")))
        assert np.median(image[:, 128, :]) == pytest.approx(tissue_hu)


def test_sabs_window_body_crop_and_grid(sabs_run):
    _, out = sabs_run
    image = sitk.ReadImage(str(out / "image_0.nii.gz"))
    values = sitk.GetArrayFromImage(image)
    assert (values.min(), values.max()) == (-125.0, 275.0)
    body_side = BODY_COLS.stop - BODY_COLS.start  # the wider side; the table is left out
    np.testing.assert_allclose(image.GetSpacing(), (body_side * 0.8 / 256, body_side * 0.8 / 256, 3.0), rtol=1e-6)
    assert image.GetSize() == (256, 256, SABS_SHAPE[0])


def test_sabs_labels_keep_all_13_organs(sabs_run):
    _, out = sabs_run
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "label_2.nii.gz")))
    assert set(np.unique(label)) == set(range(14))


def test_sabs_dataset_json_holds_the_global_mean_and_std(sabs_run):
    _, out = sabs_run
    voxels = np.concatenate([sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"image_{i}.nii.gz"))).ravel() for i in range(3)])
    metadata = read_json(out / "dataset.json")
    assert metadata["intensity_mean"] == pytest.approx(float(voxels.astype(np.float64).mean()), rel=1e-9)
    assert metadata["intensity_std"] == pytest.approx(float(voxels.astype(np.float64).std()), rel=1e-9)


def test_sabs_second_run_rewrites_nothing(sabs_run):
    raw, out = sabs_run
    before = mtimes(out)
    prepare_sabs.main(["--raw", str(raw), "--out", str(out)])
    assert mtimes(out) == before


def test_sabs_other_crop_converts_every_case_again_and_records_it(tmp_path):
    raw, out = make_sabs_raw(tmp_path), tmp_path / "out"
    prepare_sabs.main(["--raw", str(raw), "--out", str(out)])
    body_box = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "image_0.nii.gz")))
    prepare_sabs.main(["--raw", str(raw), "--out", str(out), "--fixed-border", "32"])
    fixed_border = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "image_0.nii.gz")))
    assert read_json(out / "dataset.json")["crop"] == "fixed border 32"
    assert not np.array_equal(body_box, fixed_border)  # before content records, "up to date" skipped every case
    assert read_json(out / CONVERSION_RECORDS_NAME)["image_2.nii.gz"]["recipe"].endswith("crop fixed border 32")


def test_sabs_missing_label_names_the_expected_file(tmp_path):
    raw = make_sabs_raw(tmp_path)
    (raw / "label" / "label0005.nii.gz").unlink()
    with pytest.raises(DataError, match=r"label0005.nii.gz: label of .*img0005.nii.gz not found"):
        prepare_sabs.main(["--raw", str(raw), "--out", str(tmp_path / "out")])


# ---------------------------------------------------------------------------------------------
# CMR

CMR_SHAPE = (4, 180, 200)
CMR_SPACING = (1.8, 1.8, 8.0)


def oblique_direction() -> tuple[float, ...]:
    rotation = sitk.VersorTransform((1.0, 1.0, 1.0), np.pi / 6)
    return tuple(rotation.GetMatrix())


def make_cmr_raw(root: Path) -> Path:
    raw = root / "C0"
    label = np.zeros(CMR_SHAPE, dtype=np.uint16)
    label[1:3, 80:100, 90:110] = 200
    label[1:3, 85:95, 95:105] = 500
    label[:, 60:75, 120:140] = 600
    write_volume(mr_intensities(CMR_SHAPE, seed=3).astype(np.float32), CMR_SPACING, raw / "patient1_C0.nii.gz", oblique_direction())
    write_volume(label.astype(np.float32), CMR_SPACING, raw / "patient1_C0_manual.nii.gz", oblique_direction())
    return raw


def test_cmr_keeps_z_spacing_direction_and_stored_label_values(tmp_path):
    raw, out = make_cmr_raw(tmp_path), tmp_path / "out"
    prepare_cmr.main(["--raw", str(raw), "--out", str(out)])
    image, label = sitk.ReadImage(str(out / "image_1.nii.gz")), sitk.ReadImage(str(out / "label_1.nii.gz"))
    np.testing.assert_allclose(image.GetSpacing(), (1.25, 1.25, 8.0), rtol=1e-6)
    assert image.GetSize() == (256, 256, CMR_SHAPE[0])
    np.testing.assert_allclose(image.GetDirection(), oblique_direction(), atol=1e-6)
    raw_label = sitk.ReadImage(str(raw / "patient1_C0_manual.nii.gz"))
    raw_values, values = sitk.GetArrayFromImage(raw_label), sitk.GetArrayFromImage(label)
    assert set(np.unique(values)) == {0, 200, 500, 600}
    for stored in (500, 600):  # cropping and resampling keep every structure where it was
        np.testing.assert_allclose(physical_centroid(label, values == stored), physical_centroid(raw_label, raw_values == stored), atol=1.25)
    raw_image = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "patient1_C0.nii.gz")))
    assert sitk.GetArrayFromImage(image).max() == pytest.approx(np.percentile(raw_image, 99.5), rel=1e-5)


def test_cmr_missing_manual_label_and_truncated_image_are_errors_naming_the_file(tmp_path):
    raw = make_cmr_raw(tmp_path)
    (raw / "patient2_C0.nii.gz").write_bytes((raw / "patient1_C0.nii.gz").read_bytes()[:200])
    with pytest.raises(DataError, match=r"patient2_C0_manual.nii.gz: manual label of .*patient2_C0.nii.gz not found"):
        prepare_cmr.main(["--raw", str(raw), "--out", str(tmp_path / "out")])
    (raw / "patient2_C0_manual.nii.gz").write_bytes((raw / "patient1_C0_manual.nii.gz").read_bytes())
    with pytest.raises(DataError, match=r"patient2_C0.nii.gz"):
        prepare_cmr.main(["--raw", str(raw), "--out", str(tmp_path / "out")])


# ---------------------------------------------------------------------------------------------
# Command line


@pytest.mark.parametrize("script", ["prepare_chaos.py", "prepare_sabs.py", "prepare_cmr.py"])
def test_script_help_runs_from_the_command_line(script):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / script), "--help"], capture_output=True, encoding="utf-8", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--raw" in result.stdout and "--overwrite" in result.stdout and "--workers" in result.stdout


# ---------------------------------------------------------------------------------------------
# Round trip through the distributed CHAOST2 files

CHAOST2_DIR = Path(os.environ.get("FSMIS_CHAOST2_DIR", Path(__file__).resolve().parents[2] / "shared/data/CHAOST2"))
GREY_OF_LABEL = {label: low for label, (low, _) in prepare_chaos.CHAOS_GREY_RANGES.items()}


@pytest.mark.skipif(not (CHAOST2_DIR / "image_1.nii.gz").is_file(), reason=f"CHAOST2 not found at {CHAOST2_DIR}")
def test_chaos_scan_written_as_dicom_and_pngs_comes_back_as_the_distributed_file(tmp_path):
    """Scan 1 re-exported the way the scanner stores it (LPS DICOM slices, masks in pixel order)
    must come back on the distributed grid, array for array: orientation and slice order agree."""
    image = sitk.ReadImage(str(CHAOST2_DIR / "image_1.nii.gz"))
    label = sitk.ReadImage(str(CHAOST2_DIR / "label_1.nii.gz"))
    scanner_image, scanner_label = sitk.DICOMOrient(image, "LPS"), sitk.DICOMOrient(label, "LPS")
    volume = sitk.GetArrayFromImage(scanner_image)
    depth = volume.shape[0]
    series = tmp_path / "MR" / "1" / "T2SPIR"
    names, numbers = [f"IMG-0001-{k + 1:05d}.dcm" for k in range(depth)], list(range(1, depth + 1))
    write_dicom_series(series / "DICOM_anon", volume, names, numbers, scanner_image.GetSpacing(), scanner_image.GetOrigin())
    (series / "Ground").mkdir()
    grey = np.zeros(volume.shape, dtype=np.uint8)
    for value, level in GREY_OF_LABEL.items():
        grey[sitk.GetArrayFromImage(scanner_label).astype(int) == value] = level
    for k in range(depth):
        sitk.WriteImage(sitk.GetImageFromArray(grey[k]), str(series / "Ground" / f"IMG-0001-{k + 1:05d}.png"))
    prepare_chaos.main(["--raw", str(tmp_path / "MR"), "--out", str(tmp_path / "out")])
    out_image = sitk.ReadImage(str(tmp_path / "out" / "image_1.nii.gz"))
    out_label = sitk.ReadImage(str(tmp_path / "out" / "label_1.nii.gz"))
    assert out_image.GetSize() == image.GetSize()
    np.testing.assert_allclose(out_image.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(out_image.GetOrigin(), image.GetOrigin(), atol=1e-2)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out_label), sitk.GetArrayFromImage(label).astype(np.uint16))
    original, result = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(out_image)
    below_ceiling = original < result.max()  # the second clip lowers only the brightest 0.5%
    np.testing.assert_allclose(result[below_ceiling], original[below_ceiling], atol=1e-2)
