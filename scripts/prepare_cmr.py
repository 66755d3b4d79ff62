"""Convert the MS-CMRSeg 2019 bSSFP (C0) scans into the CMR layout.

Implements docs/PROTOCOL.md, "Preprocessing from the raw downloads" (CMR):
`patient<N>_C0.nii.gz` with `patient<N>_C0_manual.nii.gz` -> top 0.5% of intensities clipped,
resampled in-plane to 1.25 mm keeping the z spacing, centre cropped/padded to 256 x 256, written
as `image_<N>.nii.gz` / `label_<N>.nii.gz`. Labels keep the stored values 200 (LV myocardium),
500 (LV blood pool) and 600 (right ventricle), as in the distributed preprocessed files; the
loader remaps them (`dataloaders/specs.py`). Each scan keeps its own (oblique) direction matrix.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from anywhere

from preprocessing.cases import (  # noqa: E402
    Case,
    read_case_volumes,
    require_file,
    require_folder,
    run_prepare_script,
    write_case,
)
from preprocessing.resampling import preprocess_mr  # noqa: E402
from utils.io import DataError  # noqa: E402

CMR_SPACING_MM = (1.25, 1.25, None)  # x, y; None keeps each scan's z spacing
IMAGE_NAME = re.compile(r"^patient(\d+)_C0\.nii\.gz$")
LABEL_SUFFIX = "_C0_manual.nii.gz"


def discover_cases(raw: Path, out: Path) -> list[Case]:
    """`patient<N>_C0.nii.gz` + `patient<N>_C0_manual.nii.gz` in `raw`, id N, sorted by N."""
    require_folder(raw, "MS-CMRSeg C0 folder")
    numbered = sorted((int(match.group(1)), path) for path in raw.iterdir() if (match := IMAGE_NAME.match(path.name)))
    if not numbered:
        raise DataError(f"{raw}: no patient<N>_C0.nii.gz files")
    return [
        Case(str(number), image, require_file(raw / f"patient{number}{LABEL_SUFFIX}", f"manual label of {image}"), out)
        for number, image in numbered
    ]


def process_case(case: Case) -> None:
    image, label = read_case_volumes(case)
    write_case(case, *preprocess_mr(image, label, CMR_SPACING_MM))


def main(argv: list[str] | None = None) -> int:
    return run_prepare_script(
        argv,
        description=__doc__.split("\n\n")[0],
        raw_help="folder with patient<N>_C0.nii.gz and patient<N>_C0_manual.nii.gz",
        discover=discover_cases,
        process=process_case,
    )


if __name__ == "__main__":
    sys.exit(main())
