"""The case loop and command line that scripts/prepare_chaos.py, prepare_sabs.py and
prepare_cmr.py share: find the cases of a download, skip those whose outputs are current,
convert the others (optionally in worker processes, with a tqdm bar) and write each output
atomically. The conversions themselves are in preprocessing/resampling.py.

A case's outputs are current while `conversions.json` in the output folder (utils/file_records.py)
says they were converted with the present recipe from the present content of every input file
(each file of a DICOM series or PNG folder), and they still hold what was written. Timestamps
decide nothing: touching an input converts nothing again, changing its content or the recipe
(e.g. prepare_sabs.py's `--fixed-border`) converts the case again, and so does a damaged output.
"""
from __future__ import annotations

import argparse
import logging
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import SimpleITK as sitk
from tqdm import tqdm

from preprocessing.resampling import adopt_image_geometry, as_label_image
from utils.file_records import DAMAGED, FileRecords
from utils.io import DataError, file_sha256, read_image, write_image

logger = logging.getLogger(__name__)

CONVERSION_RECORDS_NAME = "conversions.json"  # in the output folder: what each output was converted from


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


def _source_files(source: Path) -> list[Path]:
    if not source.exists():
        raise DataError(f"{source}: input not found")
    return sorted(path for path in source.rglob("*") if path.is_file()) if source.is_dir() else [source]


def source_hashes(case: Case) -> dict[str, str]:
    """{"image:<path>" / "label:<path>": sha256} of every input file of the case, each path
    relative to the folder holding its source (so a renamed source file is a changed input)."""
    return {f"{role}:{path.relative_to(source.parent).as_posix()}": file_sha256(path)
            for role, source in (("image", case.image_source), ("label", case.label_source))
            for path in _source_files(source)}


def stale_reason(case: Case, records: FileRecords, inputs: dict[str, str], recipe: str) -> str | None:
    """Why the case must be converted again (the first output's reason), or None when both are current."""
    return next((reason for output in case.outputs
                 if (reason := records.stale_reason(output, inputs, recipe)) is not None), None)


def pending_cases(cases: Sequence[Case], records: FileRecords, recipe: str,
                  overwrite: bool) -> list[tuple[Case, dict[str, str]]]:
    """(case, its input hashes) of the cases to (re)write: every case with `overwrite`, else those
    not current (each logged with the reason; a damaged output as a warning)."""
    pending = []
    for case in cases:
        inputs = source_hashes(case)
        reason = "--overwrite" if overwrite else stale_reason(case, records, inputs, recipe)
        if reason is not None:
            logger.log(logging.WARNING if reason == DAMAGED else logging.INFO, "case %s: converting it (%s)",
                       case.case_id, reason)
            pending.append((case, inputs))
    skipped = len(cases) - len(pending)
    if skipped:
        logger.info("%d of %d cases current, skipped (use --overwrite to redo them)", skipped, len(cases))
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


def run_cases(cases: Sequence[Case], process: Callable[[Case], None], *, workers: int = 1, description: str,
              on_done: Callable[[Case], None] = lambda case: None) -> None:
    """Run `process` on every case with a tqdm bar, in `workers` processes when > 1 (then
    `process` must be picklable: a module-level function or a functools.partial of one), and
    `on_done(case)` in this process as each case finishes."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    with tqdm(total=len(cases), desc=description, unit="case") as progress:
        if workers == 1 or len(cases) <= 1:
            for case in cases:
                process(case)
                on_done(case)
                progress.update()
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(process, case): case for case in cases}
            for future in as_completed(futures):
                future.result()
                on_done(futures[future])
                progress.update()


def prepare_cases(
    cases: Sequence[Case],
    process: Callable[[Case], None],
    *,
    overwrite: bool,
    workers: int = 1,
    description: str,
    recipe: str | None = None,
) -> list[Case]:
    """Run `process` on the cases that need it (see `pending_cases`) and record each converted
    case's inputs and `recipe` (default: `description`; name in it every option that changes the
    outputs); returns the converted cases. All cases must share one output folder."""
    if not cases:
        return []
    recipe = description if recipe is None else recipe
    out_dirs = {case.out_dir for case in cases}
    if len(out_dirs) > 1:
        raise ValueError(f"cases write to several folders {sorted(map(str, out_dirs))}; expected one")
    out_dir = out_dirs.pop()
    out_dir.mkdir(parents=True, exist_ok=True)
    records = FileRecords(out_dir / CONVERSION_RECORDS_NAME)
    pending = pending_cases(cases, records, recipe, overwrite)
    inputs = {case.case_id: hashes for case, hashes in pending}

    def record(case: Case) -> None:
        for output in case.outputs:
            records.record(output, inputs[case.case_id], recipe)

    run_cases([case for case, _ in pending], process, workers=workers, description=description, on_done=record)
    if pending:
        logger.info("wrote %d cases to %s", len(pending), out_dir)
    return [case for case, _ in pending]


def case_parser(description: str, raw_help: str) -> argparse.ArgumentParser:
    """A parser with the options every prepare_* script takes: --raw, --out, --overwrite, --workers."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--raw", type=Path, required=True, help=raw_help)
    parser.add_argument("--out", type=Path, required=True, help="output folder for image_<id>.nii.gz / label_<id>.nii.gz")
    parser.add_argument("--overwrite", action="store_true", help="convert every case again, even those recorded as current")
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
    find the cases under --raw, convert those not current into --out. Returns the exit code."""
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
