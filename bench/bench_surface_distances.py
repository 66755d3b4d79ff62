"""HD95 and ASSD: this project's implementation against MedPy and DeepMind's surface-distance.

For every organ of a few CHAOST2 scans (or DEMO scans when CHAOST2 is absent), the truth is the
organ's block of slices and the prediction the truth eroded by one voxel and shifted by two pixels
(a plausible segmentation error); spacing from the files. Prints the largest difference of each
package's values from ours and the time of HD95 + ASSD per organ and scan (the fastest of
`--repeats`). The packages are optional (not in requirements.txt):

    pip install medpy==0.5.2 surface-distance==0.1 absl-py
    python bench/bench_surface_distances.py --data-root ../shared/data --scans 1 2 3 5

DeepMind's package weights each distance by the area of its surface element, so its values
differ from the voxel-count definitions that MedPy and this project use; its difference is shown
for scale, not as an error.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from dataloaders.demo_data import write_demo_dataset  # noqa: E402
from dataloaders.specs import DEMO_SCAN_COUNT, get_spec  # noqa: E402
from dataloaders.volumes import load_scans  # noqa: E402
from evaluation.surface_distance import HD_PERCENTILE, average_symmetric_surface_distance, hausdorff_distance_95  # noqa: E402

DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
SHIFT_PIXELS = 2


def ours(prediction, truth, spacing):
    return hausdorff_distance_95(prediction, truth, spacing), average_symmetric_surface_distance(prediction, truth, spacing)


def medpy(prediction, truth, spacing):
    from medpy.metric import binary
    return binary.hd95(prediction, truth, spacing), binary.assd(prediction, truth, spacing)


def deepmind(prediction, truth, spacing):
    import surface_distance
    distances = surface_distance.compute_surface_distances(truth, prediction, spacing)
    to_prediction, to_truth = surface_distance.compute_average_surface_distance(distances)
    return (surface_distance.compute_robust_hausdorff(distances, HD_PERCENTILE), (to_prediction + to_truth) / 2)


IMPLEMENTATIONS = {"this project": (ours, None), "medpy 0.5.2": (medpy, "medpy"),
                   "surface-distance 0.1 (DeepMind)": (deepmind, "surface_distance")}


def cases(data_root: Path, scan_ids: list[int], scratch: Path):
    dataset = "CHAOST2"
    if not (data_root / dataset).is_dir():
        data_root, dataset, scan_ids = scratch, "DEMO", [1, 2]
        write_demo_dataset(scratch / dataset, DEMO_SCAN_COUNT)
    spec = get_spec(dataset)
    for scan_id, scan in load_scans(data_root / dataset, spec, scan_ids).items():
        spacing = tuple(reversed(scan.spacing))
        for label, organ in spec.organs.items():
            present = np.flatnonzero((scan.native_labels == label).any(axis=(1, 2)))
            truth = scan.native_labels[present[0] : present[-1] + 1] == label
            prediction = np.roll(ndimage.binary_erosion(truth), SHIFT_PIXELS, axis=2)
            yield f"{dataset} {scan_id} {organ}", prediction, truth, spacing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="folder holding CHAOST2/")
    parser.add_argument("--scans", type=int, nargs="+", default=[1, 2, 3, 5])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    available = {name: compute for name, (compute, module) in IMPLEMENTATIONS.items()
                 if module is None or importlib.util.find_spec(module) is not None}
    seconds = {name: [] for name in available}
    differences = {name: [] for name in available}
    with tempfile.TemporaryDirectory() as scratch:
        for case, prediction, truth, spacing in cases(args.data_root, args.scans, Path(scratch)):
            reference = ours(prediction, truth, spacing)
            for name, compute in available.items():
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    values = compute(prediction, truth, spacing)
                    times.append(time.perf_counter() - start)
                seconds[name].append(min(times))
                differences[name].append(max(abs(float(value) - expected) for value, expected in zip(values, reference)))
            print(f"{case}: HD95 {reference[0]:.2f} mm, ASSD {reference[1]:.2f} mm", flush=True)
    print("\n| implementation | largest difference from ours (mm) | HD95 + ASSD per organ and scan (ms, mean) |")
    print("|---|---|---|")
    for name in available:
        print(f"| {name} | {max(differences[name]):.2e} | {1000 * np.mean(seconds[name]):.1f} |")


if __name__ == "__main__":
    main()
