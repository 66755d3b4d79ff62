"""Convert the Synapse multi-atlas abdominal CT training set into the SABS layout.

Implements docs/PROTOCOL.md, "Preprocessing from the raw downloads" (SABS), after
SSL-ALPNet's `data/SABS` notebooks: `RawData/Training/img/img<N>.nii.gz` and
`label/label<N>.nii.gz` are sorted by N and re-indexed 0..29; intensities are clipped to the
abdominal HU window [-125, 275] (kept in HU, not rescaled: the loaders z-score with the global
statistics); the body region is cropped and resampled in-plane to 256 x 256, keeping the z
spacing; `dataset.json` (written by dataloaders/dataset_metadata.py, as on first use) records the
global mean/std over all written scans, the source case of every id, the HU window and the crop.

Body crop (default): voxels above -500 HU (air is about -1000 HU, fat about -100 HU), the largest
3D connected component (the patient; the table and air pockets outside it are dropped), its
in-plane bounding box over all slices widened to a square about its centre. SSL-ALPNet instead
cuts a fixed 32-pixel border off the 512 x 512 slices: `--fixed-border 32` reproduces that.
"""
from __future__ import annotations

import functools
import logging
import re
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from anywhere

from dataloaders.dataset_metadata import write_dataset_metadata  # noqa: E402
from dataloaders.specs import get_spec  # noqa: E402
from dataloaders.volumes import DATASET_METADATA_NAME  # noqa: E402
from preprocessing.cases import (  # noqa: E402
    Case,
    case_parser,
    configure_script_logging,
    prepare_cases,
    read_case_volumes,
    require_file,
    require_folder,
    write_case,
)
from preprocessing.resampling import PREPROCESSED_SIZE_XY, body_square_xy, clip_window, resample_box  # noqa: E402
from utils.io import DataError, read_json  # noqa: E402

logger = logging.getLogger(__name__)

DATASET_NAME = "SABS"
HU_WINDOW = (-125.0, 275.0)  # abdominal window (low, high)
BODY_THRESHOLD_HU = -500.0
IMAGE_NAME = re.compile(r"^img(\d+)\.nii\.gz$")


def discover_cases(raw: Path, out: Path) -> list[Case]:
    """`<raw>/img/img<N>.nii.gz` with `<raw>/label/label<N>.nii.gz`, sorted by N, ids 0, 1, ..."""
    image_dir = require_folder(raw / "img", "Synapse image folder (RawData/Training/img)")
    numbered = sorted(
        (int(match.group(1)), path) for path in image_dir.iterdir() if (match := IMAGE_NAME.match(path.name))
    )
    if not numbered:
        raise DataError(f"{image_dir}: no img<N>.nii.gz files")
    expected = len(get_spec(DATASET_NAME).scan_ids)
    if len(numbered) != expected:
        logger.warning("%s: %d cases found, the protocol uses %d", image_dir, len(numbered), expected)
    cases = []
    for index, (_, image) in enumerate(numbered):
        label = raw / "label" / image.name.replace("img", "label", 1)
        require_file(label, f"label of {image}")
        cases.append(Case(str(index), image, label, out))
    return cases


def crop_box_xy(hu: np.ndarray, fixed_border: int | None, source: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """((x0, y0), (width, height)) of the in-plane region to keep of a CT volume `hu` (Z, H, W)."""
    if fixed_border is None:
        start, side = body_square_xy(hu, BODY_THRESHOLD_HU, source)
        return start, (side, side)
    height, width = hu.shape[1:]
    if min(height, width) <= 2 * fixed_border:
        raise DataError(f"{source}: slices of {width} x {height} are too small for a {fixed_border}-pixel border crop")
    return (fixed_border, fixed_border), (width - 2 * fixed_border, height - 2 * fixed_border)


def process_case(case: Case, fixed_border: int | None) -> None:
    image, label = read_case_volumes(case)
    (x0, y0), (width, height) = crop_box_xy(sitk.GetArrayViewFromImage(image), fixed_border, case.image_source)
    depth = image.GetSize()[2]
    start, extent, size = (x0, y0, 0), (width, height, depth), (*PREPROCESSED_SIZE_XY, depth)
    windowed = clip_window(image, *HU_WINDOW)
    image_out = resample_box(windowed, start, extent, size, is_label=False, pad_value=HU_WINDOW[0])
    label_out = resample_box(label, start, extent, size, is_label=True)
    write_case(case, image_out, label_out)


def recorded_sources(metadata_file: Path) -> dict[str, str] | None:
    """id -> source image name recorded by an earlier run, None if there is no record."""
    if not metadata_file.is_file():
        return None
    return read_json(metadata_file).get("source_images")


def main(argv: list[str] | None = None) -> int:
    parser = case_parser(__doc__.split("\n\n")[0], "Synapse RawData/Training (holds img/ and label/)")
    parser.add_argument(
        "--fixed-border", type=int, default=None, help="crop this many pixels off every side instead of the body box (SSL-ALPNet: 32)"
    )
    args = parser.parse_args(argv)
    configure_script_logging()
    cases = discover_cases(args.raw, args.out)
    sources = {case.case_id: case.image_source.name for case in cases}
    previous = recorded_sources(args.out / DATASET_METADATA_NAME)
    crop = "body box" if args.fixed_border is None else f"fixed border {args.fixed_border}"
    process = functools.partial(process_case, fixed_border=args.fixed_border)
    # an id whose source file changed (cases added or removed upstream) has other inputs, so it is converted again
    written = prepare_cases(cases, process, overwrite=args.overwrite, workers=args.workers, description="SABS CT",
                            recipe=f"SABS CT, HU window {list(HU_WINDOW)}, crop {crop}")
    if written or previous != sources:
        provenance = {"source_images": sources, "hu_window": list(HU_WINDOW), "crop": crop}
        write_dataset_metadata(args.out, get_spec(DATASET_NAME), args.out, [int(case_id) for case_id in sources],
                               provenance)
    return 0


if __name__ == "__main__":
    sys.exit(main())
