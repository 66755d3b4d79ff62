"""The case loop and command line that scripts/prepare_chaos.py, prepare_sabs.py and
prepare_cmr.py share: find the cases of a download, skip those whose outputs are up to date,
convert the others (optionally in worker processes, with a tqdm bar) and write each output
atomically. The conversions themselves are in preprocessing/resampling.py.
"""
from __future__ import annotations

import argparse
import logging
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Sequence

import SimpleITK as sitk
from tqdm import tqdm

from preprocessing.resampling import adopt_image_geometry, as_label_image
from utils.io import DataError, read_image, write_image

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Case:
    """One scan to convert: where its raw image and label live (a file, or a folder such as a
    DICOM series or a stack of PNG masks) and the preprocessed id it is written under."""

    case_id: str
    image_source: Path
    label_source: Path
    out_dir: Path

    @property
    def image_output(self) -> Path:
        return self.out_dir / f"image_{self.case_id}.nii.gz"

    @property
    def label_output(self) -> Path:
        return self.out_dir / f"label_{self.case_id}.nii.gz"

    @property
    def outputs(self) -> tuple[Path, Path]:
        return self.image_output, self.label_output


def _newest_mtime(source: Path) -> float:
    if not source.exists():
        raise DataError(f"{source}: input not found")
    if source.is_dir():
        return max([source.stat().st_mtime] + [entry.stat().st_mtime for entry in source.rglob("*")])
    return source.stat().st_mtime


def is_up_to_date(case: Case) -> bool:
    """True when both outputs exist and are newer than every input file of the case."""
    if not all(path.is_file() for path in case.outputs):
        return False
    newest_input = max(_newest_mtime(case.image_source), _newest_mtime(case.label_source))
    return min(path.stat().st_mtime for path in case.outputs) >= newest_input


def pending_cases(cases: Sequence[Case], overwrite: bool, force_ids: Collection[str] = ()) -> list[Case]:
    """The cases to (re)write: all with `overwrite`, else those in `force_ids` or not up to date."""
    pending = [case for case in cases if overwrite or case.case_id in force_ids or not is_up_to_date(case)]
    skipped = len(cases) - len(pending)
    if skipped:
        logger.info("%d of %d cases up to date, skipped (use --overwrite to redo them)", skipped, len(cases))
    return pending


def read_case_volumes(case: Case) -> tuple[sitk.Image, sitk.Image]:
    """(image float32, label uint16 on exactly the image's grid) of a case stored as two files."""
    image = read_image(case.image_source)
    if image.GetDimension() != 3:
        raise DataError(f"{case.image_source}: expected a 3D volume, got {image.GetDimension()}D")
    label = as_label_image(read_image(case.label_source), case.label_source)
    return sitk.Cast(image, sitk.sitkFloat32), adopt_image_geometry(label, image, case.label_source)


def write_case(case: Case, image: sitk.Image, label: sitk.Image) -> None:
    """Write the case's image as float32 and its label as uint16, each atomically."""
    write_image(sitk.Cast(image, sitk.sitkFloat32), case.image_output)
    write_image(sitk.Cast(label, sitk.sitkUInt16), case.label_output)


def run_cases(cases: Sequence[Case], process: Callable[[Case], None], *, workers: int = 1, description: str) -> None:
    """Run `process` on every case with a tqdm bar, in `workers` processes when > 1 (then
    `process` must be picklable: a module-level function or a functools.partial of one)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    with tqdm(total=len(cases), desc=description, unit="case") as progress:
        if workers == 1 or len(cases) <= 1:
            for case in cases:
                process(case)
                progress.update()
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(process, case) for case in cases]
            for future in as_completed(futures):
                future.result()
                progress.update()


def prepare_cases(
    cases: Sequence[Case],
    process: Callable[[Case], None],
    *,
    overwrite: bool,
    workers: int = 1,
    description: str,
    force_ids: Collection[str] = (),
) -> list[Case]:
    """Run `process` on the cases that need it (see `pending_cases`); returns those cases."""
    pending = pending_cases(cases, overwrite, force_ids)
    run_cases(pending, process, workers=workers, description=description)
    if pending:
        logger.info("wrote %d cases to %s", len(pending), pending[0].out_dir)
    return pending


def case_parser(description: str, raw_help: str) -> argparse.ArgumentParser:
    """A parser with the options every prepare_* script takes: --raw, --out, --overwrite, --workers."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--raw", type=Path, required=True, help=raw_help)
    parser.add_argument("--out", type=Path, required=True, help="output folder for image_<id>.nii.gz / label_<id>.nii.gz")
    parser.add_argument("--overwrite", action="store_true", help="redo cases whose outputs are newer than their inputs")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    return parser


def configure_script_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def run_prepare_script(
    argv: Sequence[str] | None,
    *,
    description: str,
    raw_help: str,
    discover: Callable[[Path, Path], list[Case]],
    process: Callable[[Case], None],
) -> int:
    """The whole `main` of a prepare_* script without options of its own: parse the command line,
    find the cases under --raw, convert those not up to date into --out. Returns the exit code."""
    args = case_parser(description, raw_help).parse_args(argv)
    configure_script_logging()
    cases = discover(args.raw, args.out)
    prepare_cases(cases, process, overwrite=args.overwrite, workers=args.workers, description=description)
    return 0


def require_folder(path: Path, what: str) -> Path:
    """`path` if it is a folder, else a DataError naming it."""
    if not path.is_dir():
        raise DataError(f"{path}: {what} not found (not a folder)")
    return path


def require_file(path: Path, what: str) -> Path:
    """`path` if it is a file, else a DataError naming it."""
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    return path
