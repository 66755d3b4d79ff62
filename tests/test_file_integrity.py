"""Damaged inputs are refused and failed writes are reported (issue 13: NaN voxels, flipped bits,
full disks, interrupted saves)."""
from __future__ import annotations

import errno
import gzip
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from sacred.observers import FileStorageObserver

import train as train_script  # noqa: F401  (registers the "train" command)
from config import ex
from conftest import tiny_config
from utils import io as file_io
from utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils.io import DataError, OutputError, atomic_write, read_array, remove_stale_temporary_files, write_png


def write_volume(path: Path, array: np.ndarray) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), useCompression=path.name.endswith(".gz"))
    return path


def smooth_volume() -> np.ndarray:
    return np.linspace(0.0, 100.0, 4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8)


@pytest.mark.parametrize("name", ["image.nii.gz", "image.nii"])
def test_nan_and_infinite_voxels_are_refused_with_the_file_and_count(tmp_path, name):
    volume = smooth_volume()
    volume[1, 2, 3] = np.nan
    volume[2, 0, 0:2] = [np.inf, -np.inf]
    path = write_volume(tmp_path / name, volume)
    assert not np.isnan(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).any()  # why the raw check exists
    with pytest.raises(DataError, match=r"3 of 256 voxels are not finite \(1 NaN, 2 infinite\)") as error:
        read_array(path)
    assert name in str(error.value)


def test_float_label_with_an_infinite_value_is_refused(tmp_path):
    labels = np.zeros((4, 8, 8), dtype=np.float64)
    labels[0, 0, 0] = np.inf
    with pytest.raises(DataError, match=r"label\.nii\.gz: 1 of 256 voxels are not finite"):
        read_array(write_volume(tmp_path / "label.nii.gz", labels))


@pytest.mark.parametrize("name", ["image.nii.gz", "image.nii"])
def test_header_scaling_that_makes_voxels_infinite_is_refused_at_the_read(tmp_path, name):
    stored = np.arange(4 * 8 * 8, dtype=np.int16).reshape(4, 8, 8)
    header_and_voxels = bytearray(write_volume(tmp_path / "plain.nii", stored).read_bytes())
    header_and_voxels[112:120] = np.array([1e38, 0.0], dtype="<f4").tobytes()  # scl_slope, scl_inter
    path = tmp_path / name
    path.write_bytes(gzip.compress(bytes(header_and_voxels)) if name.endswith(".gz") else bytes(header_and_voxels))
    assert np.isinf(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).sum() == 252  # what SimpleITK makes of it
    with pytest.raises(DataError, match=r"scl_slope 1e\+38, scl_inter 0\) makes 252 of 256 voxels infinite") as error:
        read_array(path)
    assert name in str(error.value)
    header_and_voxels[112:120] = np.array([2.0, 1.0], dtype="<f4").tobytes()  # ordinary scaling reads as before
    (tmp_path / "scaled.nii").write_bytes(bytes(header_and_voxels))
    assert np.array_equal(read_array(tmp_path / "scaled.nii"), stored * 2.0 + 1.0)


def test_finite_float_volume_reads_back_exactly(tmp_path):
    volume = smooth_volume()
    assert np.array_equal(read_array(write_volume(tmp_path / "image.nii.gz", volume)), volume)


def test_one_flipped_bit_in_a_nii_gz_is_detected(tmp_path):
    path = write_volume(tmp_path / "image.nii.gz", smooth_volume())
    compressed = bytearray(path.read_bytes())
    position = len(compressed) // 2  # inside the deflate stream, past the 10-byte gzip header
    compressed[position] ^= 0x10
    path.write_bytes(bytes(compressed))
    with pytest.raises(DataError, match="image.nii.gz: corrupt or truncated .nii.gz") as error:
        read_array(path)
    assert "gzip check failed" in str(error.value)


def test_a_changed_voxel_with_a_valid_deflate_stream_fails_the_crc(tmp_path):
    # a bit flip that still inflates (stored block) changes a voxel: only the CRC tells
    path = write_volume(tmp_path / "image.nii", smooth_volume())
    member = bytearray(gzip.compress(path.read_bytes(), compresslevel=0))  # deflate "stored" blocks
    gzip_header, block_header, nifti_header = 10, 5, 352
    member[gzip_header + block_header + nifti_header + 10] ^= 0x01  # one byte of one voxel
    (tmp_path / "flipped.nii.gz").write_bytes(bytes(member))
    with pytest.raises(DataError, match="CRC check failed"):
        read_array(tmp_path / "flipped.nii.gz")


def tiny_training_state():
    model = torch.nn.Linear(64, 32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(2, 64)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10)
    return dict(model=model, optimizer=optimizer, scheduler=scheduler, step=7, config={"model": "tiny"})


def test_checkpoint_round_trip_verifies_its_checksum(tmp_path):
    state = tiny_training_state()
    save_checkpoint(tmp_path / "last.pth", **state)
    loaded = load_checkpoint(tmp_path / "last.pth")
    assert loaded["step"] == 7 and torch.equal(loaded["model"]["weight"], state["model"].weight)


def test_one_flipped_bit_in_checkpoint_weights_is_detected(tmp_path):
    path = tmp_path / "last.pth"
    state = tiny_training_state()
    save_checkpoint(path, **state)
    with zipfile.ZipFile(path) as archive:
        weight_names = [info for info in archive.infolist() if "/data/" in info.filename]
        largest = max(weight_names, key=lambda info: info.file_size)  # the 32 x 64 weight
        data_start = largest.header_offset + 30 + len(largest.filename.encode()) + len(largest.extra)
    payload = bytearray(path.read_bytes())
    payload[data_start + largest.file_size // 2] ^= 0x40  # an exponent bit of one weight
    path.write_bytes(bytes(payload))
    changed = torch.load(path, weights_only=False)["model"]["weight"]
    assert (changed != state["model"].weight).sum() == 1  # torch itself loads the damaged weight
    with pytest.raises(CheckpointError, match="last.pth: corrupt checkpoint"):
        load_checkpoint(path)


def test_checkpoint_without_checksum_loads_with_a_warning(tmp_path, caplog):
    path = tmp_path / "old.pth"
    save_checkpoint(path, **tiny_training_state())
    payload = torch.load(path, weights_only=False)
    del payload["sha256"]
    torch.save(payload, path)
    with caplog.at_level(logging.WARNING):
        assert load_checkpoint(path)["step"] == 7
    assert "old.pth" in caplog.text and "checksum" in caplog.text


def fail_after(n_calls_allowed: int):
    """A replacement for os.write that fails with ENOSPC once `n_calls_allowed` writes are done."""
    real_write, calls = os.write, []

    def write(descriptor, data):
        calls.append(len(data))
        if len(calls) > n_calls_allowed:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(descriptor, data)
    return write


def test_full_disk_during_checkpoint_save_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pth"
    state = tiny_training_state()
    save_checkpoint(path, **state)
    before = path.read_bytes()
    monkeypatch.setattr(file_io.os, "write", fail_after(1))
    with pytest.raises(OutputError, match=r"checkpoints/last.pth: cannot be written: no space left on device"):
        save_checkpoint(path, **{**state, "step": 8})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(entry.name for entry in path.parent.iterdir()) == ["last.pth"]  # no temporary file left


def test_full_disk_while_writing_a_table_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(file_io.os, "write", fail_after(0))
    with pytest.raises(OutputError, match="table.md: cannot be written: no space left on device"):
        file_io.write_text("| organ | Dice |\n", tmp_path / "table.md")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_temporary_file_of_a_killed_save_is_removed_on_the_next_start(tmp_path):
    # a child process opens a checkpoint for writing and is killed before finishing
    child = subprocess.run(
        [sys.executable, "-c",
         "import os, sys; from utils.io import atomic_write\n"
         f"with atomic_write({str(tmp_path / 'last.pth')!r}, 'wb') as handle:\n"
         "    handle.write(b'half a checkpoint'); handle.flush(); os._exit(9)"],
        cwd=Path(__file__).resolve().parents[1], check=False)
    assert child.returncode == 9
    left = [entry.name for entry in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".last.pth.tmp")
    with atomic_write(tmp_path / "other.json") as handle:  # a live writer's file stays while it writes
        assert remove_stale_temporary_files(tmp_path) == [tmp_path / left[0]]
        assert len(list(tmp_path.glob(".other.json.tmp*"))) == 1
        handle.write("{}")
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["other.json"]


def test_png_that_opencv_fails_to_write_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(file_io.cv2, "imwrite", lambda name, image: False)  # what a full disk gives
    with pytest.raises(OutputError, match="overlay.png: cannot be written: OpenCV could not write"):
        write_png(np.zeros((4, 4, 3), dtype=np.uint8), tmp_path / "overlay.png")
    assert list(tmp_path.iterdir()) == []


def test_png_is_written_with_opencv_colour_order(tmp_path):
    bgr = np.zeros((4, 4, 3), dtype=np.uint8)
    bgr[..., 2] = 200
    write_png(bgr, tmp_path / "overlay.png")
    assert np.array_equal(file_io.cv2.imread(str(tmp_path / "overlay.png")), bgr)


def test_a_write_error_that_the_writer_swallows_still_fails_the_save(tmp_path, monkeypatch):
    monkeypatch.setattr(file_io.os, "write", fail_after(0))
    with pytest.raises(OutputError, match="scores.csv: cannot be written: no space left on device"):
        with atomic_write(tmp_path / "scores.csv", "wb") as handle:
            try:
                handle.write(b"organ,dice\n")
                handle.flush()
            except OSError:
                pass  # a careless writer
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_no_space_reported_by_fsync_fails_the_save(tmp_path, monkeypatch):
    def no_space(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(file_io.os, "fsync", no_space)
    with pytest.raises(OutputError, match="summary.json: cannot be written: no space left on device"):
        file_io.write_json({"dice": 0.8}, tmp_path / "summary.json")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_under_sacreds_record_does_not_stop_training(demo_root, tmp_path, monkeypatch):
    failed_calls = []

    def no_space(self, **event):
        failed_calls.append(event)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(FileStorageObserver, "heartbeat_event", no_space)
    monkeypatch.setattr(FileStorageObserver, "completed_event", no_space)
    config = tiny_config(demo_root, tmp_path, n_steps=4, run_name="full_disk")
    ex.run("train", config_updates=config, named_configs=["demo", "cpu"], options={"--loglevel": "CRITICAL"})
    assert len(failed_calls) >= 2  # the final heartbeat and the completion were refused
    assert load_checkpoint(tmp_path / "full_disk" / "checkpoints" / "last.pth")["step"] == 4
