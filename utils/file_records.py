"""Records that prove a computed file is current: the SHA-256 of each input it was computed from,
how it was computed (a recipe string), and the SHA-256 of the file as written.

Used for the derived files (superpixels, `dataset.json`: dataloaders/derived_files.py) and for the
conversions of raw downloads (preprocessing/cases.py). `files_fingerprint` is the content identity
of a set of files (a dataset's: experiment/data_identity.py). Timestamps are not trusted (`cp -p`,
`rsync -a` and `tar x` give a replaced input an older time), and an output whose own content
changed (truncated, damaged) is computed again.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from utils.io import DataError, file_sha256, read_json, write_json

logger = logging.getLogger(__name__)

DAMAGED = "damaged or truncated: its content differs from what was written"


class FileRecords:
    """A JSON file `{output name: {"inputs": {input name: sha256}, "recipe": str, "sha256": str}}`
    in the outputs' folder; an unreadable one is treated as empty (everything is computed again)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict] = {}
        if self.path.is_file():
            try:
                self.records = dict(read_json(self.path))
            except (DataError, TypeError, ValueError) as error:
                logger.warning("%s: unreadable (%s); every file it records will be computed again", self.path, error)

    def stale_reason(self, output: Path, inputs: dict[str, str], recipe: str) -> str | None:
        """Why `output` must be computed again from `inputs` ({name: sha256}) with `recipe`, or None."""
        record = self.records.get(output.name)
        if not output.is_file():
            return "missing"
        if record is None:
            return "no record of the inputs it was computed from"
        if record.get("recipe") != recipe:
            return f"computed with {record.get('recipe')!r}, {recipe!r} requested"
        changed = sorted(name for name in set(inputs) | set(record.get("inputs", {}))
                         if inputs.get(name) != record.get("inputs", {}).get(name))
        if changed:
            return f"input content changed: {', '.join(changed)}"
        if file_sha256(output) != record.get("sha256"):
            return DAMAGED
        return None

    def record(self, output: Path, inputs: dict[str, str], recipe: str) -> None:
        """Record that `output`, as it is now, was computed from `inputs` with `recipe` (written at once)."""
        self.records[output.name] = {"inputs": inputs, "recipe": recipe, "sha256": file_sha256(output)}
        write_json(self.records, self.path)


MISSING_FILE = "missing"  # what a fingerprint records for a file that does not exist


def files_fingerprint(folder: Path, paths: list[Path]) -> str:
    """One SHA-256 of the content of `paths` (inside `folder`): their names relative to `folder` and
    each file's SHA-256, in sorted order, so the same files anywhere on disk give the same digest and
    a changed, added, removed or renamed file gives another. A missing file counts as `missing`."""
    digest = hashlib.sha256()
    for name in sorted(str(Path(path).relative_to(folder)) for path in paths):
        path = folder / name
        digest.update(f"{name}\0{file_sha256(path) if path.is_file() else MISSING_FILE}\n".encode())
    return digest.hexdigest()
