"""A checkpoint is read once, its damage named with the file, and the digest recorded is that of
the bytes loaded (issue 33: "the recorded checkpoint is the scored one", "readable errors")."""
from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from experiment.provenance import evaluation_provenance
from utils.checkpoint import FILE_SHA256_KEY, CheckpointError, load_checkpoint, save_checkpoint
from utils.io import file_sha256


def write_tiny_checkpoint(path: Path, step: int = 7) -> Path:
    model = torch.nn.Linear(8, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10)
    save_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler, step=step, config={"model": "tiny"})
    return path


def pickle_member(archive_bytes: bytes) -> zipfile.ZipInfo:
    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as archive:
        return next(info for info in archive.infolist() if info.filename.endswith("data.pkl"))


def member_data_offset(archive_bytes: bytes, info: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes start: after its local header (whose extra field torch pads)."""
    name_length = int.from_bytes(archive_bytes[info.header_offset + 26: info.header_offset + 28], "little")
    extra_length = int.from_bytes(archive_bytes[info.header_offset + 28: info.header_offset + 30], "little")
    return info.header_offset + 30 + name_length + extra_length


def test_load_returns_the_sha256_of_the_bytes_it_loaded(tmp_path):
    path = write_tiny_checkpoint(tmp_path / "last.pth")
    state = load_checkpoint(path)
    assert state[FILE_SHA256_KEY] == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)
    assert state["step"] == 7


def test_provenance_records_the_digest_it_is_given_not_the_file_read_again(tmp_path):
    path = write_tiny_checkpoint(tmp_path / "last.pth", step=7)
    scored = load_checkpoint(path)
    write_tiny_checkpoint(path, step=9)  # a training still running replaces last.pth after the load
    evaluated = {"dataset": "DEMO", "setting": 1, "label_group": 0, "eval_fold": 0, "n_support_slices": 1,
                 "allow_config_mismatch": False}
    provenance = evaluation_provenance(path, scored["step"], {"model": {"name": "psmnet"}}, evaluated, {},
                                       checkpoint_sha256=scored[FILE_SHA256_KEY])
    assert provenance["step"] == 7
    assert provenance["checkpoint_sha256"] == scored[FILE_SHA256_KEY] != file_sha256(path)


def test_a_flipped_bit_in_the_pickled_part_fails_the_crc_before_unpickling(tmp_path):
    path = write_tiny_checkpoint(tmp_path / "last.pth")
    archive_bytes = bytearray(path.read_bytes())
    info = pickle_member(bytes(archive_bytes))
    archive_bytes[member_data_offset(bytes(archive_bytes), info) + info.file_size // 2] ^= 0x04
    path.write_bytes(bytes(archive_bytes))
    with pytest.raises(CheckpointError, match=r"last\.pth: corrupt checkpoint \(archive/data\.pkl fails its CRC-32"):
        load_checkpoint(path)


DAMAGED_PICKLES = {  # pickled bytes and what torch.load raises on them, without the file's name
    "UnpicklingError": b"\x80\x05\x95garbage",
    "MemoryError": b"\x80\x04\x8e" + (2**62).to_bytes(8, "little"),  # a 4 EiB bytes object
    "TypeError": b"\x80\x02cbuiltins\nint\n(X\x01\x00\x00\x00aX\x01\x00\x00\x00bK\x01tR.",
    "AssertionError": b"\x80\x02(X\x03\x00\x00\x00fooK\x01tQ.",  # a persistent id torch does not know
}


@pytest.mark.parametrize("raised", sorted(DAMAGED_PICKLES))
def test_damaged_pickle_with_a_valid_crc_raises_a_checkpoint_error_naming_the_file(tmp_path, raised):
    pickled = DAMAGED_PICKLES[raised]
    path = write_tiny_checkpoint(tmp_path / "last.pth")
    with zipfile.ZipFile(path) as original:
        members = {info.filename: original.read(info) for info in original.infolist()}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as rewritten:
        for name, data in members.items():
            rewritten.writestr(name, pickled if name.endswith("data.pkl") else data)
    with pytest.raises(Exception) as raw:
        torch.load(path, weights_only=False)
    assert type(raw.value).__name__ == raised and "last.pth" not in str(raw.value)
    with pytest.raises(CheckpointError, match=rf"last\.pth: cannot be read as a checkpoint \({raised}"):
        load_checkpoint(path)


def test_bytes_that_are_no_checkpoint_name_the_file(tmp_path):
    path = tmp_path / "last.pth"
    path.write_bytes(pickle.dumps({"not": "a zip"})[:5])
    with pytest.raises(CheckpointError, match=r"last\.pth: cannot be read as a checkpoint"):
        load_checkpoint(path)
