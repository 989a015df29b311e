"""Files beside the published database: cross-process locks and scratch folders on the same disk."""

from __future__ import annotations

import contextlib
import fcntl
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive_lock(guarded: Path) -> Iterator[None]:
    """Hold the exclusive advisory lock of `guarded` across processes: the file `<name>.lock`
    beside it (created if missing)."""
    lock_path = guarded.with_name(f"{guarded.name}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def scratch_folder(beside: Path, prefix: str) -> Iterator[Path]:
    """A private folder in the directory of `beside` (same disk as the database), removed after."""
    parent = beside.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=parent) as folder:
        yield Path(folder)
