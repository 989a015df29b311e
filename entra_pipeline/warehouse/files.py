"""Files beside the published database: cross-process locks, scratch folders on the same disk, and
owner-only permissions for everything that holds personal data (files 0600, folders 0700)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIRECTORY = 0o700


def private_directories(directory: Path) -> None:
    """Create `directory` and its missing parents owner-only (folders that exist are left as
    they are: the user chose them)."""
    missing = []
    for folder in (directory, *directory.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=PRIVATE_DIRECTORY)
        os.chmod(folder, PRIVATE_DIRECTORY)  # mkdir's mode is filtered by the umask


def make_private(path: Path) -> None:
    """Owner-only permissions on a file the pipeline wrote (it may hold personal data)."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, PRIVATE_FILE)


@contextlib.contextmanager
def exclusive_lock(guarded: Path) -> Iterator[None]:
    """Hold the exclusive advisory lock of `guarded` across processes: the file `<name>.lock`
    beside it (created if missing)."""
    lock_path = guarded.with_name(f"{guarded.name}.lock")
    private_directories(lock_path.parent)
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    make_private(lock_path)
    with os.fdopen(descriptor, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def scratch_folder(beside: Path, prefix: str) -> Iterator[Path]:
    """A private folder in the directory of `beside` (same disk as the database), removed after."""
    parent = beside.resolve().parent
    private_directories(parent)
    # TemporaryDirectory creates the folder 0700.
    with tempfile.TemporaryDirectory(prefix=prefix, dir=parent) as folder:
        yield Path(folder)
