"""Training batches of the semi-supervised track: labelled and unlabelled 2D slices (SSL4MIS's protocol).

SSL4MIS (`code/dataloaders/dataset.py`) draws every batch with its `TwoStreamBatchSampler`: an
epoch is one pass through a permutation of the labelled slices in groups of `labelled_batch_size`
(a remainder is dropped), each group followed by `unlabelled_batch_size` slices taken from an
endless chain of permutations of the unlabelled pool. A method without unlabelled slices trains as
`train_fully_supervised_2D.py`: shuffled labelled slices, `batch_size` per step, the last batch of
an epoch smaller when the count does not divide. Each slice is augmented by `RandomGenerator`:
with probability 1/2 a random multiple of 90 degrees and a flip along a random axis, else a
rotation by an integer angle in [-20, 20) degrees (nearest neighbour, same size), then resized to
the patch size with nearest-neighbour interpolation (`zoom(..., order=0)`, image and label).

Unlike the original, every random number comes from a generator keyed by (seed, epoch) for the
batch composition and (seed, epoch, slot) for a slice's augmentation: the batches of a step do not
depend on the number of workers or on where a run was interrupted, so a resumed run continues
with exactly the batches an uninterrupted one would have seen. Unlabelled slices never read their
labels: their label tensor is all IGNORE_LABEL.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import DataLoader, Dataset

from dataloaders.acdc import read_slice_image, read_slice_label
from utils.seeding import derive_seed, make_generator, worker_init_fn

IGNORE_LABEL = 255  # the label of an unlabelled slice (never read by a loss)
ROTATION_RANGE = (-20, 20)  # np.random.randint(-20, 20): integer degrees, upper bound excluded
RIGHT_ANGLE_TURNS = 4  # np.rot90 by k in 0..3
FLIP_AXES = 2
ROT_FLIP_PROBABILITY = 0.5  # RandomGenerator: rot + flip if random() < 0.5, else rotation
LABELLED, UNLABELLED = 0, 1  # the two streams


@dataclass(frozen=True)
class SliceSet:
    """Training slices: ids, and per slice either an h5 file (ACDC) or in-memory (H, W) arrays.

    images[i]: Path of an SSL4MIS slice file, or an (H, W) float32 array; labels[i] likewise (a Path
    or an (H, W) int64 array), None for an unlabelled set.
    """

    ids: tuple[str, ...]
    images: tuple[Path | np.ndarray, ...]
    labels: tuple[Path | np.ndarray, ...] | None
    n_classes: int

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, index: int) -> np.ndarray:
        source = self.images[index]
        return read_slice_image(source) if isinstance(source, Path) else source

    def label(self, index: int) -> np.ndarray:
        if self.labels is None:
            raise ValueError("an unlabelled slice set has no labels")
        source = self.labels[index]
        return read_slice_label(source, self.n_classes) if isinstance(source, Path) else source


def ssl4mis_augment(image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """RandomGenerator's random rot90 + flip, or rotation within 20 degrees (nearest neighbour).
    image (H, W), label (H, W) or None -> the same shapes (rot90 by an odd k swaps H and W)."""
    if rng.random() < ROT_FLIP_PROBABILITY:
        turns, axis = int(rng.integers(0, RIGHT_ANGLE_TURNS)), int(rng.integers(0, FLIP_AXES))
        image = np.flip(np.rot90(image, turns), axis=axis).copy()
        if label is not None:
            label = np.flip(np.rot90(label, turns), axis=axis).copy()
        return image, label
    angle = int(rng.integers(*ROTATION_RANGE))
    image = ndimage.rotate(image, angle, order=0, reshape=False)
    if label is not None:
        label = ndimage.rotate(label, angle, order=0, reshape=False)
    return image, label


def resize_nearest(array: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """(H, W) -> (height, width or height) with scipy's zoom of order 0, as SSL4MIS resizes images
    and labels (and label maps back to a volume's size)."""
    return ndimage.zoom(array, (height / array.shape[0], (width or height) / array.shape[1]), order=0)


class TwoStreamSlices(Dataset):
    """Augmented slices addressed by (epoch, slot, stream, index); `epoch_batches(epoch)` lists the
    keys of every batch of an epoch, labelled slices first in each."""

    def __init__(self, labelled: SliceSet, unlabelled: SliceSet | None, patch_size: int, labelled_batch_size: int,
                 unlabelled_batch_size: int, augment: bool, seed: int) -> None:
        if unlabelled_batch_size and (unlabelled is None or len(unlabelled) < unlabelled_batch_size):
            raise ValueError(f"{unlabelled_batch_size} unlabelled slices per batch need an unlabelled pool at least "
                             f"that large, got {0 if unlabelled is None else len(unlabelled)}")
        if len(labelled) < labelled_batch_size:
            raise ValueError(f"{labelled_batch_size} labelled slices per batch need at least that many labelled "
                             f"slices, got {len(labelled)}")
        self.streams = (labelled, unlabelled)
        self.patch_size, self.augment, self.seed = patch_size, augment, seed
        self.labelled_batch_size, self.unlabelled_batch_size = labelled_batch_size, unlabelled_batch_size

    @property
    def steps_per_epoch(self) -> int:
        n_labelled = len(self.streams[LABELLED])
        if self.unlabelled_batch_size:  # TwoStreamBatchSampler.__len__
            return n_labelled // self.labelled_batch_size
        return math.ceil(n_labelled / self.labelled_batch_size)  # DataLoader(shuffle=True, drop_last=False)

    def epoch_batches(self, epoch: int) -> list[list[tuple[int, int, int, int]]]:
        """The keys (epoch, slot, stream, slice index) of every batch of `epoch`, in order."""
        rng = np.random.default_rng(derive_seed(self.seed, epoch))
        labelled_order = rng.permutation(len(self.streams[LABELLED]))
        batches = []
        unlabelled_order = self._endless_permutations(rng) if self.unlabelled_batch_size else None
        for step in range(self.steps_per_epoch):
            indices = [(LABELLED, int(index)) for index in
                       labelled_order[step * self.labelled_batch_size:(step + 1) * self.labelled_batch_size]]
            if unlabelled_order is not None:
                indices += [(UNLABELLED, int(index)) for index in
                            itertools.islice(unlabelled_order, self.unlabelled_batch_size)]
            first_slot = step * (self.labelled_batch_size + self.unlabelled_batch_size)
            batches.append([(epoch, first_slot + position, stream, index)
                            for position, (stream, index) in enumerate(indices)])
        return batches

    def _endless_permutations(self, rng: np.random.Generator) -> Iterator[int]:
        while True:
            yield from rng.permutation(len(self.streams[UNLABELLED]))

    def __len__(self) -> int:
        return sum(len(stream) for stream in self.streams if stream is not None)

    def __getitem__(self, key: tuple[int, int, int, int]) -> dict[str, torch.Tensor]:
        """-> image (1, P, P) float32, label (P, P) int64 (IGNORE_LABEL everywhere for an unlabelled slice)."""
        epoch, slot, stream, index = key
        slices = self.streams[stream]
        image = slices.image(index)
        label = slices.label(index) if stream == LABELLED else None
        if self.augment:
            image, label = ssl4mis_augment(image, label, np.random.default_rng(derive_seed(self.seed, epoch, slot)))
        image = resize_nearest(image, self.patch_size).astype(np.float32)
        label = (resize_nearest(label, self.patch_size).astype(np.int64) if label is not None
                 else np.full((self.patch_size, self.patch_size), IGNORE_LABEL, dtype=np.int64))
        return {"image": torch.from_numpy(image).unsqueeze(0), "label": torch.from_numpy(label)}


def slice_batches(dataset: TwoStreamSlices, start_step: int, num_workers: int, seed: int
                  ) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches from step `start_step` on, as an uninterrupted run would draw them:
    images (B, 1, P, P), labels (B, P, P), the first `labelled_batch_size` of each labelled."""
    epoch, step_in_epoch = divmod(start_step, dataset.steps_per_epoch)
    while True:
        batches: Sequence[list] = dataset.epoch_batches(epoch)[step_in_epoch:]
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, worker_init_fn=worker_init_fn,
                            generator=make_generator(seed + epoch))
        yield from loader
        epoch, step_in_epoch = epoch + 1, 0
