"""Reading and writing files with clear errors and atomic writes.

Every file the project writes goes through a temporary file in the same folder followed by
`os.replace` (`atomic_write` for writers that take an open file, `atomic_path` for writers that
take a name), so an interrupted script never leaves a half-written volume, table or checkpoint
behind, and re-running it is safe. A write that fails names the file it was writing and says when
the device is full; the temporary file of a failed write is removed at once, and that of a killed
process by the next write of the same file or by `remove_stale_temporary_files`.

Reading a NIfTI file verifies it first: a .nii.gz is decompressed in full by the gzip module,
which checks the stream's CRC-32 and length (one flipped bit is refused), and the voxels of a
floating-point file are checked for NaN and infinities in the stored array, because SimpleITK
reads both as 0; a file whose header scaling (scl_slope, scl_inter) overflows its voxels to
infinity is refused too.
"""
from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator

import cv2
import numpy as np
import SimpleITK as sitk

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """A data file is missing, unreadable or inconsistent; the message names the file."""


class OutputError(OSError):
    """An output file could not be written; the message names the file and the cause."""


# ------------------------------------------------------------------------------------------------
# Atomic writes
# ------------------------------------------------------------------------------------------------

# Temporary files are `.<name>.tmp<pid>-<random><suffix>`: the pid tells a killed writer's file
# from that of a process still writing.
_TEMPORARY_NAME = re.compile(r"^\.(?P<target>.+)\.tmp(?P<pid>\d+)-")
# Below this much free space a failed write is reported as a full device.
LOW_FREE_SPACE_BYTES = 16 * 2**20
DEVICE_FULL_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))  # full disk, quota exceeded


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}.tmp{os.getpid()}-"


def process_is_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporary_files(folder: str | os.PathLike, target_name: str | None = None) -> list[Path]:
    """Remove the temporary files of writes into `folder` whose process has ended (killed while
    saving); only those of `target_name` when given. Returns the removed paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for candidate in folder.glob(f".{target_name}.tmp*" if target_name else ".*.tmp*"):
        match = _TEMPORARY_NAME.match(candidate.name)
        if match and not process_is_alive(int(match["pid"])) and candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
            logger.info("removed %s, left by an interrupted write of %s", candidate, folder / match["target"])
    return removed


def _write_failure(path: Path, error: BaseException) -> OutputError:
    """The error to raise when writing `path` failed with `error`, naming the file and the cause."""
    full = isinstance(error, OSError) and error.errno in DEVICE_FULL_ERRNOS
    free = shutil.disk_usage(path.parent).free if path.parent.is_dir() else None
    if full or (free is not None and free < LOW_FREE_SPACE_BYTES):
        cause = f"no space left on device ({free // 2**20 if free is not None else '?'} MiB free)"
    else:
        cause = str(error) or type(error).__name__
    failure = OutputError(f"{path}: cannot be written: {cause}")
    failure.errno = getattr(error, "errno", None)
    return failure


def _new_temporary(path: Path, suffix: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporary_files(path.parent, path.name)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=suffix)
    os.close(handle)
    return Path(tmp_name)


def _publish(tmp_path: Path, path: Path) -> None:
    os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp creates 0600 files
    os.replace(tmp_path, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; move it onto `path` only if the block succeeds.

    For writers that take a file name (SimpleITK, OpenCV, matplotlib); `suffix` keeps the
    extension they pick a format from. Any failure becomes an `OutputError` naming `path`.
    """
    path = Path(path)
    tmp_path = _new_temporary(path, suffix)
    try:
        yield tmp_path
        _publish(tmp_path, path)
    except (OSError, RuntimeError) as error:
        raise _write_failure(path, error) from error
    finally:
        tmp_path.unlink(missing_ok=True)


class _RecordingFile(io.RawIOBase):
    """An unbuffered file written with os.write that remembers the first OSError: torch.save
    replaces it by a RuntimeError without the cause ("unexpected pos")."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.descriptor = os.open(path, os.O_WRONLY | os.O_TRUNC)
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            return os.write(self.descriptor, data)
        except OSError as error:
            self.error = self.error or error
            raise

    def flush(self) -> None:
        """Force the written bytes to disk (a full device may only say so here)."""
        if not self.closed:
            try:
                os.fsync(self.descriptor)
            except OSError as error:
                self.error = self.error or error
                raise

    def close(self) -> None:
        if not self.closed:
            try:
                super().close()
            finally:
                os.close(self.descriptor)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file next to `path` for writing ("w" text, "wb" binary); when the block
    succeeds it is flushed to disk and moved onto `path`. Any failure becomes an `OutputError`
    naming `path` (and saying "no space left on device" when that is the cause)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp_path = _new_temporary(path, "".join(path.suffixes))
    raw = _RecordingFile(tmp_path)
    buffered = io.BufferedWriter(raw)
    handle = buffered if mode == "wb" else io.TextIOWrapper(buffered, encoding="utf-8", newline="")
    try:
        try:
            yield handle
            handle.flush()
            raw.flush()
        finally:
            with contextlib.suppress(OSError, ValueError):
                handle.close()  # after a failed write the buffer may not flush again
        if raw.error is not None:  # a writer that swallowed the error must not publish a partial file
            raise raw.error
        _publish(tmp_path, path)
    except (OSError, RuntimeError) as error:
        raise _write_failure(path, raw.error or error) from error
    finally:
        with contextlib.suppress(OSError):
            raw.close()
        tmp_path.unlink(missing_ok=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_write(path) as handle:
        handle.write(text)


def write_json(data: Any, path: str | os.PathLike) -> None:
    write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", path)


def write_png(bgr: np.ndarray, path: str | os.PathLike) -> None:
    """Write an (H, W, 3) uint8 BGR image (OpenCV's order) as PNG, atomically."""
    with atomic_path(path, suffix=".png") as tmp_path:
        try:
            written = cv2.imwrite(str(tmp_path), bgr)
        except cv2.error as error:
            raise OutputError(f"OpenCV could not write a PNG of shape {bgr.shape}: {error}") from None
        if not written:
            raise OutputError(f"OpenCV could not write a PNG of shape {bgr.shape} and dtype {bgr.dtype}")


def nifti_suffix(path: str | os.PathLike) -> str:
    name = Path(path).name
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def write_image(image: sitk.Image, path: str | os.PathLike) -> None:
    """Write an image atomically (compressed when the name ends in .gz)."""
    with atomic_path(path, suffix=nifti_suffix(path)) as tmp_path:
        sitk.WriteImage(image, str(tmp_path), useCompression=str(path).endswith(".gz"))


def write_array_like(array: np.ndarray, reference: sitk.Image, path: str | os.PathLike) -> None:
    """Write `array` (Z, Y, X) with the geometry (spacing, origin, direction) of `reference`."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    write_image(image, path)


# ------------------------------------------------------------------------------------------------
# Verified reads
# ------------------------------------------------------------------------------------------------

NIFTI1_HEADER_BYTES = 348
# NIfTI-1 datatype codes of floating-point voxels, and their numpy types (without byte order).
NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}


@dataclass(frozen=True)
class NiftiLayout:
    """Where a NIfTI file's voxels are: byte order ("<" or ">"), datatype code, bits per voxel,
    offset of the first voxel and number of voxels; and the scaling a reader applies to them
    (value = scl_slope * stored + scl_inter, none when scl_slope is 0 or not finite)."""

    byte_order: str
    datatype: int
    bits_per_voxel: int
    voxel_offset: int
    n_voxels: int
    scl_slope: float = 0.0
    scl_inter: float = 0.0

    @property
    def scaled(self) -> bool:
        """Whether readers (SimpleITK, nibabel) rescale the stored voxels."""
        return (np.isfinite(self.scl_slope) and self.scl_slope != 0
                and (self.scl_slope != 1 or self.scl_inter != 0))


def nifti_layout(header: bytes) -> NiftiLayout | None:
    """The layout a NIfTI-1 header announces, or None when `header` is not one (SimpleITK's NIfTI
    reader knows NIfTI-1 only)."""
    if len(header) < NIFTI1_HEADER_BYTES:
        return None
    for order in "<>":
        if int(np.frombuffer(header[:4], dtype=f"{order}i4")[0]) == NIFTI1_HEADER_BYTES:
            dims = np.frombuffer(header[40:56], dtype=f"{order}i2").astype(np.int64)
            datatype, bits_per_voxel = (int(value) for value in np.frombuffer(header[70:74], dtype=f"{order}i2"))
            voxel_offset = int(np.frombuffer(header[108:112], dtype=f"{order}f4")[0])
            n_voxels = int(np.prod(dims[1 : 1 + int(dims[0])]))
            scl_slope, scl_inter = (float(value) for value in np.frombuffer(header[112:120], dtype=f"{order}f4"))
            return NiftiLayout(order, datatype, bits_per_voxel, voxel_offset, n_voxels, scl_slope, scl_inter)
    return None


def _stored_nifti_bytes(path: Path) -> bytes | None:
    """The uncompressed bytes of a .nii / .nii.gz file, the gzip CRC and length verified; None
    for other formats."""
    name = path.name
    if name.endswith(".nii.gz"):
        try:
            return gzip.decompress(path.read_bytes())
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{path}: corrupt or truncated .nii.gz (gzip check failed: {error})") from None
    if name.endswith(".nii"):
        return path.read_bytes()
    return None


def _check_stored_voxels(path: Path, stored: bytes) -> NiftiLayout | None:
    """Refuse a NIfTI file shorter than its header announces, or with NaN / infinite voxels;
    returns its layout (None for files that are not NIfTI-1)."""
    layout = nifti_layout(stored[:NIFTI1_HEADER_BYTES])
    if layout is None:
        return None
    expected = layout.voxel_offset + layout.n_voxels * layout.bits_per_voxel // 8
    if len(stored) < expected:
        raise DataError(f"{path}: truncated NIfTI file ({len(stored)} of {expected} bytes)")
    if layout.datatype in NIFTI_FLOAT_TYPES:
        voxels = np.frombuffer(stored, dtype=f"{layout.byte_order}{NIFTI_FLOAT_TYPES[layout.datatype]}",
                               count=layout.n_voxels, offset=layout.voxel_offset)
        _check_finite(path, voxels)
    return layout


def _check_finite(path: Path, voxels: np.ndarray) -> None:
    if not np.issubdtype(voxels.dtype, np.floating):
        return
    n_nan = int(np.isnan(voxels).sum())
    n_infinite = int(np.isinf(voxels).sum())
    if n_nan or n_infinite:
        raise DataError(f"{path}: {n_nan + n_infinite} of {voxels.size} voxels are not finite "
                        f"({n_nan} NaN, {n_infinite} infinite)")


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read a medical image, turning missing, truncated, corrupt or non-finite files into a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    stored = _stored_nifti_bytes(path)
    layout = _check_stored_voxels(path, stored) if stored is not None else None
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise DataError(f"{path}: cannot be read as an image (corrupt or truncated?): {first_line}") from None
    if stored is None:
        _check_finite(path, image_voxels(image, path))
    elif layout is not None and layout.scaled:
        _check_scaled_voxels(path, image_voxels(image, path), layout)
    return image


def _check_scaled_voxels(path: Path, voxels: np.ndarray, layout: NiftiLayout) -> None:
    """Refuse a file whose header scaling turns finite stored voxels into infinite ones."""
    n_infinite = int(np.isinf(voxels).sum()) if np.issubdtype(voxels.dtype, np.floating) else 0
    if n_infinite:
        raise DataError(f"{path}: its header scaling (scl_slope {layout.scl_slope:g}, scl_inter "
                        f"{layout.scl_inter:g}) makes {n_infinite} of {voxels.size} voxels infinite")


def image_voxels(image: sitk.Image, path: str | os.PathLike) -> np.ndarray:
    """(Z, Y, X) voxel array of an image already read from `path`."""
    try:
        return sitk.GetArrayFromImage(image)
    except RuntimeError as error:
        raise DataError(f"{path}: voxel data cannot be decoded (corrupt or truncated?): {error}") from None


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Voxel array of an image file, (Z, Y, X) for volumes."""
    return image_voxels(read_image(path), path)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
