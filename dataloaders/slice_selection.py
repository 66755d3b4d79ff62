"""Which slices of a scan an episode may use (docs/PROTOCOL.md "Settings" and "Derived files").

- `slices_containing`: the class-slice index of one label (SSL-ALPNet's `classmap_<min_fg>.json`).
- `excluded_slices` / `allowed_slices`: Setting 2. Every training slice in which a test organ
  appears is removed. The protocol's rule is ANY (a slice goes when any excluded label is present);
  some later codebases remove a slice only when ALL excluded labels are present, a much weaker
  setting kept as the named option `"all"`.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

ExclusionRule = Literal["any", "all"]
EXCLUSION_RULES: tuple[str, ...] = ("any", "all")


def label_areas_per_slice(labels: np.ndarray, label: int) -> np.ndarray:
    """labels (Z, H, W) int -> (Z,) int64: number of pixels equal to `label` in each slice."""
    return (labels == label).reshape(labels.shape[0], -1).sum(axis=1)


def slices_containing(labels: np.ndarray, label: int, min_area: int = 1) -> np.ndarray:
    """labels (Z, H, W) -> sorted z indices (int64) of the slices with >= `min_area` pixels of `label`."""
    return np.flatnonzero(label_areas_per_slice(labels, label) >= min_area).astype(np.int64)


def excluded_slices(labels: np.ndarray, excluded_labels: Sequence[int],
                    rule: ExclusionRule = "any") -> np.ndarray:
    """labels (Z, H, W) -> (Z,) bool: True where Setting 2 removes the slice.

    rule "any" (protocol): any of `excluded_labels` present; "all" (weaker option): all present.
    No excluded labels -> nothing is removed.
    """
    if rule not in EXCLUSION_RULES:
        raise ValueError(f"exclusion rule must be one of {EXCLUSION_RULES}, got {rule!r}")
    n_slices = labels.shape[0]
    if len(excluded_labels) == 0:
        return np.zeros(n_slices, dtype=bool)
    present = np.stack([label_areas_per_slice(labels, label) > 0 for label in excluded_labels])
    return present.any(axis=0) if rule == "any" else present.all(axis=0)


def allowed_slices(labels: np.ndarray, excluded_labels: Sequence[int],
                   rule: ExclusionRule = "any") -> np.ndarray:
    """labels (Z, H, W) -> sorted z indices (int64) that Setting 2 keeps (all of them in Setting 1)."""
    return np.flatnonzero(~excluded_slices(labels, excluded_labels, rule)).astype(np.int64)
