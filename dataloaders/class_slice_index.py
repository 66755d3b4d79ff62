"""Class-slice index: for every organ and scan, the slices where the organ is present.

PROTOCOL.md, "Derived files" (SSL-ALPNet's `classmap_1.json`): `{organ name: {scan id: [z, ...]}}`,
used to draw training and support slices of a class without reading every label volume.
JSON object keys are strings, so scan ids are written as strings and read back as ints.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from dataloaders.specs import DatasetSpec
from utils.io import DataError, read_json, write_json

CLASS_SLICE_INDEX_NAME = "class_slice_index.json"

ClassSliceIndex = dict[str, dict[int, list[int]]]


def build_class_slice_index(scans_labels: Mapping[int, np.ndarray], spec: DatasetSpec) -> ClassSliceIndex:
    """{organ name: {scan id: sorted slice indices}} from label-id volumes (Z, H, W) per scan id."""
    index: ClassSliceIndex = {name: {} for name in spec.organs.values()}
    for scan_id, labels in scans_labels.items():
        slices = np.asarray(labels).reshape(len(labels), -1)
        for label, name in spec.organs.items():
            index[name][int(scan_id)] = np.nonzero((slices == label).any(axis=1))[0].tolist()
    return index


def write_class_slice_index(index: ClassSliceIndex, path: str | os.PathLike) -> None:
    write_json({name: {str(scan_id): slices for scan_id, slices in per_scan.items()} for name, per_scan in index.items()}, path)


def read_class_slice_index(path: str | os.PathLike) -> ClassSliceIndex:
    data = read_json(path)
    try:
        return {
            str(name): {int(scan_id): [int(z) for z in slices] for scan_id, slices in per_scan.items()}
            for name, per_scan in data.items()
        }
    except (AttributeError, TypeError, ValueError):
        raise DataError(f"{path}: not a class-slice index ({{organ: {{scan id: [z, ...]}}}})") from None
