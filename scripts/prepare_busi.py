"""Convert BUSI (breast ultrasound, Al-Dhabyani et al. 2020) into the 2D image layout of the
semi-supervised track (dataloaders/image_datasets.py).

The source is either
- MGCC's layout (`images/<case>.png`, `masks/0/<case>.png` with 0/255 lesions, split files
  `busi_train<k>.txt` / `busi_val<k>.txt`, as MGCC's README and split.py describe it), whose split
  files are kept; or
- the public download (`benign/`, `malignant/`, `normal/` folders of `<case>.png` with one or more
  `<case>_mask*.png`): the masks of a case are merged (union), the normal cases are left out as
  MGCC's 647, and three splits of 70 % / 30 % are drawn with NumPy from SPLIT_SEEDS (split.py's
  seeds; its scikit-learn shuffle is not reproduced) and written down in dataset.json.

Every image becomes 8-bit grey (OpenCV's luminance of the BGR file: BUSI's PNGs are mostly grey
stored in three channels, some with coloured marks), every mask 0 (background) / 1 (lesion), at the
image's own size. Usage:

    python scripts/prepare_busi.py --source <MGCC layout or download folder> --out <data_root>/BUSI
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from anywhere

from dataloaders.image_datasets import (IMAGE_DATASET_SPECS, IMAGES_DIR, MASKS_DIR, METADATA_FILE,  # noqa: E402
                                        image_path, mask_path, split_list_names)
from utils.io import DataError, write_json, write_png, write_text  # noqa: E402

SPEC = IMAGE_DATASET_SPECS["BUSI"]
MGCC_MASKS_DIR = Path("masks") / "0"  # MGCC's masks/0/<case>.png
MGCC_SPLIT_FILES = ("busi_train{}.txt", "busi_val{}.txt")
LESION_CATEGORIES = ("benign", "malignant")  # MGCC's 647 cases; `normal` has no lesion
MASK_NAME = re.compile(r"^(?P<case>.+)_mask(_\d+)?\.png$")
SPLIT_SEEDS = (41, 64, 1337)  # split.py's random_state per split
VALIDATION_SHARE = 0.3  # split.py's test_size
FOREGROUND_THRESHOLD = 127  # 8-bit masks: 255 lesion, 0 background (anti-aliased edges rounded)


def mgcc_cases(source: Path) -> dict[str, tuple[Path, list[Path]]]:
    """{case: (image, [mask])} of MGCC's layout."""
    cases = {}
    for image in sorted((source / IMAGES_DIR).glob("*.png")):
        mask = source / MGCC_MASKS_DIR / image.name
        if not mask.is_file():
            raise DataError(f"{image}: no mask {mask}")
        cases[image.stem] = (image, [mask])
    return cases


def download_cases(source: Path) -> dict[str, tuple[Path, list[Path]]]:
    """{case: (image, [masks])} of the public download's benign and malignant folders."""
    cases = {}
    for category in LESION_CATEGORIES:
        folder = source / category
        if not folder.is_dir():
            raise DataError(f"{source}: no {category}/ folder; expected BUSI's download (benign/, malignant/) or "
                            f"MGCC's layout (images/, masks/0/)")
        masks: dict[str, list[Path]] = {}
        for path in sorted(folder.glob("*.png")):
            match = MASK_NAME.match(path.name)
            if match:
                masks.setdefault(match.group("case"), []).append(path)
        for path in sorted(folder.glob("*.png")):
            if not MASK_NAME.match(path.name):
                if path.stem not in masks:
                    raise DataError(f"{path}: no mask {path.stem}_mask.png beside it")
                cases[path.stem] = (path, masks[path.stem])
    return cases


def read_grey(path: Path) -> np.ndarray:
    """(H, W) uint8: a grey PNG as stored, a colour one by OpenCV's luminance."""
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise DataError(f"{path}: cannot be read as an 8-bit image")
    if array.ndim == 3:
        array = cv2.cvtColor(array[..., :3], cv2.COLOR_BGR2GRAY)
    return array


def binary_mask(paths: list[Path], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 in {0, 1}: the union of a case's lesion masks."""
    union = np.zeros(shape, dtype=bool)
    for path in paths:
        mask = read_grey(path)
        if mask.shape != shape:
            raise DataError(f"{path}: mask shape {mask.shape} != image shape {shape}")
        union |= mask > FOREGROUND_THRESHOLD
    return union.astype(np.uint8)


def mgcc_splits(source: Path, cases: dict) -> list[tuple[list[str], list[str]]] | None:
    """MGCC's (training, validation) case lists per split, or None when the source has none."""
    splits = []
    for split in range(1, SPEC.n_splits + 1):
        files = [source / name.format(split) for name in MGCC_SPLIT_FILES]
        if not all(path.is_file() for path in files):
            return None
        lists = [[line.strip() for line in path.read_text().splitlines() if line.strip()] for path in files]
        unknown = sorted(set(lists[0] + lists[1]) - set(cases))
        if unknown:
            raise DataError(f"{files[0].parent}: split {split} names cases without an image, e.g. {unknown[:3]}")
        splits.append((lists[0], lists[1]))
    return splits


def seeded_splits(case_ids: list[str]) -> list[tuple[list[str], list[str]]]:
    """70 % / 30 % of the sorted cases per seed of SPLIT_SEEDS (NumPy's permutation)."""
    splits = []
    for seed in SPLIT_SEEDS:
        order = [case_ids[index] for index in np.random.default_rng(seed).permutation(len(case_ids))]
        n_validation = int(np.ceil(VALIDATION_SHARE * len(order)))
        splits.append((order[n_validation:], order[:n_validation]))
    return splits


def prepare(source: Path, out: Path) -> dict:
    """Write the layout; returns dataset.json's content."""
    from_mgcc = (source / MGCC_MASKS_DIR).is_dir()
    cases = mgcc_cases(source) if from_mgcc else download_cases(source)
    if not cases:
        raise DataError(f"{source}: no cases found")
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    (out / MASKS_DIR).mkdir(parents=True, exist_ok=True)
    for case_id, (image_file, mask_files) in tqdm(sorted(cases.items()), desc="BUSI cases", dynamic_ncols=True):
        image = read_grey(image_file)
        write_png(image, image_path(out, case_id))
        write_png(binary_mask(mask_files, image.shape), mask_path(out, case_id))
    splits = mgcc_splits(source, cases) if from_mgcc else None
    split_source = "MGCC's split files (busi_train<k>.txt, busi_val<k>.txt)"
    if splits is None:
        splits = seeded_splits(sorted(cases))
        split_source = (f"seeded: numpy.random.default_rng(seed).permutation of the sorted case ids, seeds "
                        f"{list(SPLIT_SEEDS)}, the first ceil({VALIDATION_SHARE} N) validation")
    for split, (training, validation) in enumerate(splits, start=1):
        for name, case_ids in zip(split_list_names(split), (training, validation)):
            write_text("\n".join(case_ids) + "\n", out / name)
    metadata = {"name": SPEC.name, "classes": {str(label): name for label, name in SPEC.classes.items()},
                "n_cases": len(cases), "source": str(source.resolve()), "splits": split_source,
                "images": "8-bit grey (OpenCV luminance of colour files)", "masks": "0 background, 1 lesion"}
    write_json(metadata, out / METADATA_FILE)
    return metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="MGCC's BUSI layout or BUSI's download folder")
    parser.add_argument("--out", type=Path, required=True, help="the dataset folder to write, <data_root>/BUSI")
    args = parser.parse_args(argv)
    try:
        metadata = prepare(args.source, args.out)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{metadata['n_cases']} cases written to {args.out}; splits: {metadata['splits']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
