"""One writer per folder: a lock file created atomically, released on exit.

A run folder has one writer at a time (docs/DESIGN.md, "Runs on disk"): train.py, the copy that
scripts/extend_runs.py makes of it, test.py writing an evaluation folder. Each holds
`RunLock(folder, purpose)` while it writes: `<folder>/.lock`, created with O_CREAT | O_EXCL (of
two processes, exactly one creates it), holding the holder's pid, host, purpose and start time
as JSON. A second writer is refused with a `RunLockError` naming that holder. A lock left by a
process that no longer exists on this host (killed, out of memory) is taken over with a warning;
a lock held from another host is never taken over (its pid means nothing here).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from utils.io import process_is_alive

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
STALE_SUFFIX = ".stale"  # + the taker's pid: a stale lock moved aside while it is taken over


class RunLockError(RuntimeError):
    """A folder is being written by another process (or its lock cannot be read)."""


def lock_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / LOCK_NAME


def lock_holder(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The record of the process holding `folder`'s lock ({pid, host, purpose, started}); None when
    the folder is not locked. An unreadable lock file gives {"unreadable": <its text>}."""
    path = lock_path(folder)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return {"unreadable": text}
    return record if isinstance(record, dict) else {"unreadable": text}


def describe_holder(holder: dict[str, Any]) -> str:
    if "unreadable" in holder:
        return f"an unreadable lock ({holder['unreadable'][:80]!r})"
    return (f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('purpose')}, "
            f"since {holder.get('started')})")


def holder_is_stale(holder: dict[str, Any]) -> bool:
    """Whether the holder is a process of this host that has ended."""
    return (holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int)
            and not process_is_alive(holder["pid"]))


class RunLock:
    """`with RunLock(folder, "train.py"):` holds `<folder>/.lock` for the block (the folder is
    created if needed). Raises `RunLockError` naming the holder when another live process holds it."""

    def __init__(self, folder: str | os.PathLike, purpose: str) -> None:
        self.folder = Path(folder)
        self.purpose = purpose
        self.path = lock_path(folder)
        self.record: dict[str, Any] | None = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        text = json.dumps(record, sort_keys=True) + "\n"
        while True:
            try:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder_text = self._holder_text()
                if holder_text is None:
                    continue  # released between our attempt and the read: try again
                self._refuse_or_take_over(holder_text)
                continue
            try:
                os.write(descriptor, text.encode())
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            self.record = record
            logger.debug("%s: locked for %s", self.folder, self.purpose)
            return

    def _holder_text(self) -> str | None:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return None

    def _refuse_or_take_over(self, holder_text: str) -> None:
        try:
            holder = json.loads(holder_text)
        except json.JSONDecodeError:
            holder = {"unreadable": holder_text}
        if not isinstance(holder, dict):
            holder = {"unreadable": holder_text}
        if not holder_is_stale(holder):
            raise RunLockError(
                f"{self.folder} is in use by {describe_holder(holder)}; {self.purpose} would write into it too. "
                f"Wait for it to finish; if no such process is using the folder, remove {self.path}")
        logger.warning("%s: taking over the lock left by %s, which has ended", self.folder, describe_holder(holder))
        aside = self.path.with_name(f"{LOCK_NAME}{STALE_SUFFIX}{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another process took it over first: compete for the new lock
        try:
            if aside.read_text() != holder_text:  # moved a lock made meanwhile by another taker: give it back
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
        finally:
            aside.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        if self.record is None:
            return
        if lock_holder(self.folder) == self.record:
            self.path.unlink(missing_ok=True)
        self.record = None
