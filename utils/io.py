"""Reading and writing files with clear errors and atomic writes.

Every file the project writes goes through a temporary file in the same folder followed by
`os.replace`, so an interrupted script never leaves a half-written volume, index or checkpoint
behind, and re-running it is safe.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import SimpleITK as sitk


class DataError(ValueError):
    """A data file is missing, unreadable or inconsistent; the message names the file."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; move it onto `path` only if the block succeeds.

    `suffix` keeps the extension that writers such as SimpleITK use to pick a format.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    tmp_path = Path(tmp_name)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp creates 0600 files
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def nifti_suffix(path: str | os.PathLike) -> str:
    name = Path(path).name
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


NIFTI1_HEADER_BYTES = 348


def _expected_nifti1_bytes(header: bytes) -> int | None:
    """Total uncompressed size a NIfTI-1 header announces (vox_offset + voxel bytes), if NIfTI-1."""
    if len(header) < NIFTI1_HEADER_BYTES:
        return None
    for order in "<>":
        if np.frombuffer(header[:4], dtype=f"{order}i4")[0] == NIFTI1_HEADER_BYTES:
            dims = np.frombuffer(header[40:56], dtype=f"{order}i2")
            bits_per_voxel = int(np.frombuffer(header[72:74], dtype=f"{order}i2")[0])
            voxel_offset = int(np.frombuffer(header[108:112], dtype=f"{order}f4")[0])
            n_voxels = int(np.prod(dims[1 : 1 + dims[0]].astype(np.int64)))
            return voxel_offset + n_voxels * bits_per_voxel // 8
    return None


def _check_nifti_complete(path: Path) -> None:
    """Reject truncated NIfTI files, which SimpleITK would read as silently zero-filled volumes.

    For .nii.gz the gzip trailer stores the uncompressed size (mod 2**32); a truncated stream ends
    in compressed bytes instead, so comparing it with the size the header announces is cheap.
    """
    name = path.name
    if name.endswith(".nii.gz"):
        try:
            with gzip.open(path, "rb") as stream:
                header = stream.read(NIFTI1_HEADER_BYTES)
        except (OSError, EOFError) as error:
            raise DataError(f"{path}: not a valid gzip file ({error})") from None
        expected = _expected_nifti1_bytes(header)
        with path.open("rb") as raw:
            raw.seek(-4, os.SEEK_END)
            stored_size = int.from_bytes(raw.read(4), "little")
        if expected is not None and stored_size != expected % 2**32:
            raise DataError(f"{path}: truncated or corrupt .nii.gz (gzip stream does not end where the header says)")
    elif name.endswith(".nii"):
        with path.open("rb") as raw:
            expected = _expected_nifti1_bytes(raw.read(NIFTI1_HEADER_BYTES))
        if expected is not None and path.stat().st_size < expected:
            raise DataError(f"{path}: truncated .nii file ({path.stat().st_size} of {expected} bytes)")


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read a medical image, turning missing, truncated or corrupt files into a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    _check_nifti_complete(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise DataError(f"{path}: cannot be read as an image (corrupt or truncated?): {first_line}") from None


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Voxel array of an image file, (Z, Y, X) for volumes."""
    image = read_image(path)
    try:
        return sitk.GetArrayFromImage(image)
    except RuntimeError as error:
        raise DataError(f"{path}: voxel data cannot be decoded (corrupt or truncated?): {error}") from None


def write_image(image: sitk.Image, path: str | os.PathLike) -> None:
    """Write an image atomically (compressed when the name ends in .gz)."""
    with atomic_path(path, suffix=nifti_suffix(path)) as tmp_path:
        sitk.WriteImage(image, str(tmp_path), useCompression=str(path).endswith(".gz"))


def write_array_like(array: np.ndarray, reference: sitk.Image, path: str | os.PathLike) -> None:
    """Write `array` (Z, Y, X) with the geometry (spacing, origin, direction) of `reference`."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    write_image(image, path)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None


def write_json(data: Any, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".json") as tmp_path:
        tmp_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
