"""Convert the CHAOS MR T2-SPIR training set (DICOM series + PNG masks) into the CHAOST2 layout.

Implements docs/PROTOCOL.md, "Preprocessing from the raw downloads" (CHAOS), following
SSL-ALPNet's `data/CHAOST2` notebooks: each `<pid>/T2SPIR/DICOM_anon` series becomes a volume,
`<pid>/T2SPIR/Ground/*.png` a label volume (grey ranges -> 1 liver, 2 right kidney, 3 left kidney,
4 spleen), the top 0.5% of intensities are clipped, the scan is resampled to 1.25 x 1.25 x 7.70 mm
and centre cropped/padded to 256 x 256; written as `image_<pid>.nii.gz` / `label_<pid>.nii.gz`.

Slice order and orientation (see docs/PREPARING_DATA.md): the series is read with SimpleITK's
ImageSeriesReader in GDCM's geometric order (along the slice normal), and each mask PNG is put on
the slice of the DICOM file with the same name (CHAOS names both `IMG-<series>-<instance>`), or,
failing that, of the DICOM whose InstanceNumber equals the number ending the PNG name. The PNGs
are drawn in DICOM pixel order, so no flip is needed here: SSL-ALPNet flips its PNG stack along
the rows only because dcm2nii had flipped the rows of its images. Image and label are then
reoriented together to "LAS" (x to the patient's left, y to anterior, z to superior), the
orientation of the distributed preprocessed CHAOST2 files, so our arrays match theirs.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from anywhere

from preprocessing.cases import Case, require_folder, run_prepare_script, write_case  # noqa: E402
from preprocessing.resampling import preprocess_mr  # noqa: E402
from utils.io import DataError, read_array  # noqa: E402

# Grey-level ranges (inclusive) of the CHAOS MR ground-truth PNGs -> label values.
CHAOS_GREY_RANGES: dict[int, tuple[int, int]] = {
    1: (55, 70),  # liver
    2: (110, 135),  # right kidney
    3: (175, 200),  # left kidney
    4: (240, 255),  # spleen
}
CHAOS_SPACING_MM = (1.25, 1.25, 7.70)  # x, y, z
SERIES_SUBDIR = Path("T2SPIR") / "DICOM_anon"
MASK_SUBDIR = Path("T2SPIR") / "Ground"
MASK_GLOB = "*.png"
# Orientation code (SimpleITK DICOMOrient) of the distributed preprocessed CHAOST2 volumes.
OUTPUT_ORIENTATION = "LAS"
INSTANCE_NUMBER_TAG = "0020|0013"
TRAILING_NUMBER = re.compile(r"(\d+)$")


def discover_cases(raw: Path, out: Path) -> list[Case]:
    """One case per `<raw>/<pid>/T2SPIR` folder (pid = CHAOS patient id), sorted by pid."""
    require_folder(raw, "CHAOS MR folder (CHAOS_Train_Sets/Train_Sets/MR)")
    pids = sorted((child.name for child in raw.iterdir() if child.name.isdigit() and (child / "T2SPIR").is_dir()), key=int)
    if not pids:
        raise DataError(f"{raw}: no <patient id>/T2SPIR folders (expected CHAOS_Train_Sets/Train_Sets/MR)")
    return [Case(pid, raw / pid / SERIES_SUBDIR, raw / pid / MASK_SUBDIR, out) for pid in pids]


def read_series(folder: Path) -> tuple[sitk.Image, list[Path], list[int | None]]:
    """The single DICOM series in `folder` as (volume, its files in slice order, their
    InstanceNumbers or None); slice order is GDCM's geometric sort along the slice normal."""
    require_folder(folder, "DICOM series folder")
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise DataError(f"{folder}: no DICOM series found")
    if len(series_ids) > 1:
        raise DataError(f"{folder}: {len(series_ids)} DICOM series found, expected exactly one")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_ids[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        volume = reader.Execute()
    except RuntimeError as error:
        raise DataError(f"{folder}: DICOM series cannot be read (corrupt file?): {str(error).strip().splitlines()[-1]}") from None
    numbers = [
        int(reader.GetMetaData(index, INSTANCE_NUMBER_TAG)) if reader.HasMetaDataKey(index, INSTANCE_NUMBER_TAG) else None
        for index in range(len(files))
    ]
    return volume, [Path(name) for name in files], numbers


def labels_from_grey(grey: np.ndarray, source: Path) -> np.ndarray:
    """CHAOS mask grey levels (H, W) -> label values (H, W) uint8 via `CHAOS_GREY_RANGES`;
    a non-zero grey value outside every range is a DataError naming `source`."""
    labels = np.zeros(grey.shape, dtype=np.uint8)
    for label, (low, high) in CHAOS_GREY_RANGES.items():
        labels[(grey >= low) & (grey <= high)] = label
    unknown = (grey != 0) & (labels == 0)
    if np.any(unknown):
        values = np.unique(grey[unknown])
        raise DataError(f"{source}: grey values {values[:5].tolist()} lie outside every CHAOS organ range {CHAOS_GREY_RANGES}")
    return labels


def read_mask(png: Path, shape_hw: tuple[int, int]) -> np.ndarray:
    """Label slice (H, W) of one ground-truth PNG; its size must match the DICOM slices."""
    grey = read_array(png)
    if grey.ndim == 3 and np.all(grey == grey[..., :1]):
        grey = grey[..., 0]  # grey stored as identical RGB(A) channels
    if grey.shape != shape_hw:
        raise DataError(f"{png}: mask of shape {grey.shape} does not match the DICOM slices {shape_hw}")
    return labels_from_grey(grey, png)


def _trailing_number(png: Path) -> int:
    match = TRAILING_NUMBER.search(png.stem)
    if match is None:
        raise DataError(f"{png}: mask name does not end in a slice number and matches no DICOM file name")
    return int(match.group(1))


def order_masks(pngs: list[Path], dicoms: list[Path], numbers: list[int | None], ground: Path) -> list[Path]:
    """The PNGs in the order of `dicoms`: paired by file stem, else PNG number == InstanceNumber."""
    if len(pngs) != len(dicoms):
        raise DataError(f"{ground}: {len(pngs)} mask PNGs for a DICOM series of {len(dicoms)} slices")
    by_stem = {png.stem: png for png in pngs}
    if all(dicom.stem in by_stem for dicom in dicoms):
        return [by_stem[dicom.stem] for dicom in dicoms]
    by_number = {_trailing_number(png): png for png in pngs}
    missing = [number for number in numbers if number not in by_number]
    if missing:
        raise DataError(f"{ground}: no mask PNG named like the DICOM files or numbered as their InstanceNumbers {missing[:5]}")
    return [by_number[number] for number in numbers]


def load_case(case: Case) -> tuple[sitk.Image, sitk.Image]:
    """(image, uint16 label) of one patient on the DICOM grid, reoriented to LAS."""
    volume, dicoms, numbers = read_series(case.image_source)
    ground = require_folder(case.label_source, "ground-truth PNG folder")
    pngs = order_masks(sorted(ground.glob(MASK_GLOB)), dicoms, numbers, ground)
    shape_hw = (volume.GetSize()[1], volume.GetSize()[0])
    label = sitk.GetImageFromArray(np.stack([read_mask(png, shape_hw) for png in pngs]).astype(np.uint16))
    label.CopyInformation(volume)
    image = sitk.Cast(volume, sitk.sitkFloat32)
    return sitk.DICOMOrient(image, OUTPUT_ORIENTATION), sitk.DICOMOrient(label, OUTPUT_ORIENTATION)


def process_case(case: Case) -> None:
    image, label = load_case(case)
    write_case(case, *preprocess_mr(image, label, CHAOS_SPACING_MM))


def main(argv: list[str] | None = None) -> int:
    return run_prepare_script(
        argv,
        description=__doc__.split("\n\n")[0],
        raw_help="CHAOS_Train_Sets/Train_Sets/MR (holds <pid>/T2SPIR/DICOM_anon and Ground)",
        discover=discover_cases,
        process=process_case,
    )


if __name__ == "__main__":
    sys.exit(main())
