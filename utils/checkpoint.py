"""Training checkpoints that carry everything needed to resume or to evaluate.

A checkpoint holds the model, optimiser and scheduler states, the step, the random number
generator states and the full run config, so that `test.py` can rebuild the model without being
told how it was configured, and an interrupted run continues exactly where it stopped.

It also holds a SHA-256 of all of that (`payload_checksum`), verified on load: torch.save's zip
archive stores tensors without checking their CRC on load, so one flipped bit in a weight would
otherwise load silently. Checkpoints written before the checksum existed load with a warning.

`load_checkpoint` reads the file once: it checks the CRC-32 of every member of the zip archive
before anything is unpickled (a flipped bit in the pickled part would otherwise raise whatever the
unpickler trips over, UnpicklingError, AssertionError, TypeError, MemoryError, ..., without the
file's name), unpickles those same bytes, and returns their SHA-256 under `FILE_SHA256_KEY`, so
that what an evaluation records is the digest of the file it scored, not of a file read again later.
"""
from __future__ import annotations

import hashlib
import io
import logging
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.io import atomic_write

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT_VERSION = 1
CHECKSUM_KEY = "sha256"
FILE_SHA256_KEY = "file_sha256"  # added by load_checkpoint: SHA-256 of the file's bytes it loaded (not saved)


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or does not fit the requested run."""


def rng_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _update_digest(digest: "hashlib._Hash", value: Any, where: str) -> None:
    """Feed `value` (nested dicts, lists, tensors, arrays, scalars) into `digest` in a fixed order:
    dict keys sorted, each tensor as its location, dtype, shape and bytes."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{where}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        digest.update(f"{where}:{array.dtype}:{array.shape};".encode())
        digest.update(array.view(np.uint8).reshape(-1) if array.size else b"")
    elif isinstance(value, dict):
        digest.update(f"{where}:dict{len(value)};".encode())
        for key in sorted(value, key=repr):
            _update_digest(digest, value[key], f"{where}/{key!r}")
    elif isinstance(value, (list, tuple)):
        digest.update(f"{where}:sequence{len(value)};".encode())
        for index, item in enumerate(value):
            _update_digest(digest, item, f"{where}/{index}")
    else:
        digest.update(f"{where}={value!r};".encode())


def payload_checksum(payload: dict[str, Any]) -> str:
    """SHA-256 (hex) of a checkpoint's contents other than the checksum itself."""
    digest = hashlib.sha256()
    _update_digest(digest, {key: value for key, value in payload.items() if key != CHECKSUM_KEY}, "")
    return digest.hexdigest()


def save_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | dict[str, Any],
    scheduler: torch.optim.lr_scheduler.LRScheduler | dict[str, Any],
    step: int,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically: a crash while saving leaves the previous one intact, a full
    disk gives a `utils.io.OutputError` naming the file. `optimizer` and `scheduler` are objects with
    a state dict or state dicts themselves (experiment/optimisation.Optimisation.state_dicts);
    `extra` holds what else a resumed run needs (e.g. the best validation so far)."""
    payload = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "step": step,
        "config": config,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if hasattr(optimizer, "state_dict") else optimizer,
        "scheduler": scheduler.state_dict() if hasattr(scheduler, "state_dict") else scheduler,
        "rng": rng_states(),
        "extra": extra or {},
    }
    payload[CHECKSUM_KEY] = payload_checksum(payload)
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)


def _check_archive_crcs(path: Path, data: bytes) -> None:
    """Refuse a zip-format checkpoint one of whose members fails its CRC-32 (torch.load checks none).
    Bytes that are no zip archive are left to torch.load, which refuses them naming the file."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return
    try:
        damaged = archive.testzip()
    except Exception as error:  # a damaged archive directory fails in many ways (struct, zlib, EOF)
        raise CheckpointError(f"{path}: corrupt checkpoint (its zip archive cannot be read: "
                              f"{type(error).__name__}: {error}); use an earlier checkpoint or train again") from None
    if damaged is not None:
        raise CheckpointError(f"{path}: corrupt checkpoint ({damaged} fails its CRC-32 check); use an earlier "
                              "checkpoint or train again")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`, with errors that name the file.

    The file is read once; the returned dict holds, besides what was saved, `FILE_SHA256_KEY`
    ("file_sha256"): the SHA-256 (hex) of exactly the bytes the checkpoint was loaded from.
    Any failure to read or unpickle it is a `CheckpointError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (train first, or pass checkpoint=<file>)")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{path}: cannot be read ({error})") from None
    _check_archive_crcs(path, data)
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
    except Exception as error:  # damaged pickled bytes raise almost any type: UnpicklingError, TypeError, MemoryError...
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or payload.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a checkpoint of this project (format version {CHECKPOINT_FORMAT_VERSION})")
    if CHECKSUM_KEY not in payload:
        logger.warning("%s: written before checkpoints carried a checksum; its contents cannot be verified", path)
    elif payload[CHECKSUM_KEY] != payload_checksum(payload):
        raise CheckpointError(f"{path}: corrupt checkpoint (its contents do not match the SHA-256 stored when it "
                              "was saved); use an earlier checkpoint or train again")
    payload[FILE_SHA256_KEY] = hashlib.sha256(data).hexdigest()
    return payload


def load_model_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load weights strictly, explaining a mismatch instead of dumping key lists."""
    expected = model.state_dict()
    missing = [name for name in expected if name not in state_dict]
    unexpected = [name for name in state_dict if name not in expected]
    other_shape = [name for name, tensor in expected.items() if name in state_dict and state_dict[name].shape != tensor.shape]
    if missing or unexpected or other_shape:
        raise CheckpointError(
            f"{path}: weights do not fit the requested model ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(other_shape)} of another shape; first: {(missing + unexpected + other_shape)[:3]})"
        )
    model.load_state_dict(state_dict)
