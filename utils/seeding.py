"""Reproducible randomness for training runs and episode sampling (docs/PROTOCOL.md "Training": seed 1234).

Three pieces:

- `seed_everything(seed)` seeds Python, NumPy and torch (CPU and every GPU) once at the start of a run.
- `worker_init_fn(worker_id)` gives each DataLoader worker NumPy / Python seeds derived from the
  per-worker torch seed that the DataLoader already draws from its own (seeded) generator, so two
  runs with the same seed and the same `num_workers` see the same numbers.
- `make_generator(seed)` and `episode_generator(seed, epoch, index)` build explicit
  `torch.Generator`s. The episode datasets draw every random number of episode `index` from
  `episode_generator(seed, epoch, index)`, which depends on nothing else, so an episode is the same
  whichever worker builds it and however many workers there are (0 included).
"""
from __future__ import annotations

import random

import numpy as np
import torch

NUMPY_SEED_MODULUS = 2**32  # numpy and python's random accept seeds below 2**32
TORCH_SEED_MODULUS = 2**63  # torch.Generator.manual_seed accepts 64-bit seeds; stay positive


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy's global state and torch (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed % NUMPY_SEED_MODULUS)
    torch.manual_seed(seed)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader hook: seed NumPy and `random` in worker `worker_id` from its torch seed.

    torch seeds each worker with `base_seed + worker_id`, where `base_seed` comes from the
    DataLoader's generator; NumPy and `random` are not reseeded by torch, so forked workers
    would otherwise share the parent's NumPy state.
    """
    worker_seed = torch.initial_seed() % NUMPY_SEED_MODULUS
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def make_generator(seed: int) -> torch.Generator:
    """A CPU `torch.Generator` seeded with `seed` (pass it to DataLoader(generator=...))."""
    generator = torch.Generator()
    generator.manual_seed(seed % TORCH_SEED_MODULUS)
    return generator


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (e.g. run seed, epoch, episode index).

    NumPy's SeedSequence hashes the keys, so neighbouring keys give unrelated streams.
    """
    state = np.random.SeedSequence([int(key) for key in keys]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 32 | int(state[1])) % TORCH_SEED_MODULUS)


def episode_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator every random draw of episode `index` in `epoch` of run `seed` comes from."""
    return make_generator(derive_seed(seed, epoch, index))
