"""Dataset specifications: the one table every script and dataset class reads.

Implements the dataset table and the fold block sizes of the SSL-ALPNet evaluation protocol
(docs/PROTOCOL.md, sections "Datasets", "Cross-validation folds" and "Settings"), plus
the synthetic DEMO dataset written by `dataloaders/demo_data.py`. Code that needs a property of a
dataset reads it from its `DatasetSpec`; nothing branches on a dataset's name.
"""
from __future__ import annotations

from dataclasses import dataclass

MODALITIES = ("MR", "CT")
NORMALIZATIONS = ("per_scan_zscore", "global")

# ADNet/Q-Net 3D supervoxel minimum sizes (voxels): abdominal scans and cardiac scans.
ABDOMINAL_SUPERVOXEL_MIN_SIZE = 5000
CARDIAC_SUPERVOXEL_MIN_SIZE = 1000

# Number of synthetic scans the DEMO spec expects (`scripts/make_demo_data.py --scans`).
DEMO_SCAN_COUNT = 10


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the code needs to know about one preprocessed dataset.

    name: folder name and key in `DATASET_SPECS`.
    modality: "MR" or "CT".
    scan_ids: ids of `image_<id>.nii.gz` / `label_<id>.nii.gz`, sorted as integers.
    stored_to_label: value stored in the label files -> label id used everywhere else
        (0 -> 0 included; a stored value missing here is a data error).
    organs: label id -> organ name (background excluded).
    test_labels: label ids evaluated by the protocol.
    setting2_groups: label groups evaluated together in Setting 2 (each its own model); every
        training slice containing a label of the group is removed.
    n_folds: number of cross-validation folds.
    queries_per_fold: size of the block of query scans of each fold (circular rule).
    normalization: "per_scan_zscore" (MR) or "global" (CT, statistics from `dataset.json`).
    supervoxel_min_size: min_size of the 3D Felzenszwalb supervoxel option (ADNet/Q-Net).
    """

    name: str
    modality: str
    scan_ids: tuple[int, ...]
    stored_to_label: dict[int, int]
    organs: dict[int, str]
    test_labels: tuple[int, ...]
    setting2_groups: tuple[tuple[int, ...], ...]
    n_folds: int
    queries_per_fold: int
    normalization: str
    supervoxel_min_size: int

    @property
    def stored_values(self) -> tuple[int, ...]:
        """Values allowed in the label files, ascending."""
        return tuple(sorted(self.stored_to_label))

    @property
    def labels(self) -> tuple[int, ...]:
        """Foreground label ids, ascending."""
        return tuple(sorted(self.organs))


def _identity_labels(organs: dict[int, str]) -> dict[int, int]:
    return {0: 0, **{label: label for label in organs}}


ABDOMINAL_MRI_ORGANS = {1: "liver", 2: "right_kidney", 3: "left_kidney", 4: "spleen"}
SABS_ORGANS = {
    1: "spleen",
    2: "right_kidney",
    3: "left_kidney",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior_vena_cava",
    10: "portal_and_splenic_vein",
    11: "pancreas",
    12: "right_adrenal_gland",
    13: "left_adrenal_gland",
}
CMR_ORGANS = {1: "lv_myocardium", 2: "lv_blood_pool", 3: "right_ventricle"}
CMR_STORED_VALUES = {0: 0, 200: 1, 500: 2, 600: 3}

DATASET_SPECS: dict[str, DatasetSpec] = {
    "CHAOST2": DatasetSpec(
        name="CHAOST2",
        modality="MR",
        scan_ids=(1, 2, 3, 5, 8, 10, 13, 15, 19, 20, 21, 22, 31, 32, 33, 34, 36, 37, 38, 39),
        stored_to_label=_identity_labels(ABDOMINAL_MRI_ORGANS),
        organs=ABDOMINAL_MRI_ORGANS,
        test_labels=(1, 2, 3, 4),
        setting2_groups=((1, 4), (2, 3)),
        n_folds=5,
        queries_per_fold=4,
        normalization="per_scan_zscore",
        supervoxel_min_size=ABDOMINAL_SUPERVOXEL_MIN_SIZE,
    ),
    "SABS": DatasetSpec(
        name="SABS",
        modality="CT",
        scan_ids=tuple(range(30)),
        stored_to_label=_identity_labels(SABS_ORGANS),
        organs=SABS_ORGANS,
        test_labels=(1, 2, 3, 6),
        setting2_groups=((6, 1), (2, 3)),
        n_folds=5,
        queries_per_fold=6,
        normalization="global",
        supervoxel_min_size=ABDOMINAL_SUPERVOXEL_MIN_SIZE,
    ),
    "CMR": DatasetSpec(
        name="CMR",
        modality="MR",
        scan_ids=tuple(range(1, 36)),
        stored_to_label=CMR_STORED_VALUES,
        organs=CMR_ORGANS,
        test_labels=(1, 2, 3),
        setting2_groups=(),
        n_folds=5,
        queries_per_fold=7,
        normalization="per_scan_zscore",
        supervoxel_min_size=CARDIAC_SUPERVOXEL_MIN_SIZE,
    ),
    # Synthetic abdominal MRI (dataloaders/demo_data.py): CHAOST2's organs and label ids.
    # 10 scans in 5 folds of 2 queries: every fold has 2 queries, 1 support and 7 training
    # scans, and the query blocks partition the ids.
    "DEMO": DatasetSpec(
        name="DEMO",
        modality="MR",
        scan_ids=tuple(range(1, DEMO_SCAN_COUNT + 1)),
        stored_to_label=_identity_labels(ABDOMINAL_MRI_ORGANS),
        organs=ABDOMINAL_MRI_ORGANS,
        test_labels=(1, 2, 3, 4),
        setting2_groups=((1, 4), (2, 3)),
        n_folds=5,
        queries_per_fold=2,
        normalization="per_scan_zscore",
        supervoxel_min_size=ABDOMINAL_SUPERVOXEL_MIN_SIZE,
    ),
}


def get_spec(name: str) -> DatasetSpec:
    """The spec called `name` (case-insensitive); KeyError listing the known names otherwise."""
    spec = DATASET_SPECS.get(str(name).upper())
    if spec is None:
        raise KeyError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASET_SPECS))}")
    return spec
