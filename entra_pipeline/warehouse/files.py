"""Files beside the published database: cross-process locks, scratch folders on the same disk, and
owner-only permissions for everything that holds personal data (files 0600, folders 0700)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
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


def folder_problem(published: Path) -> str | None:
    """Why a run could not write `published` (the DuckDB file) and the files beside it, or None:
    its folder, or the nearest folder that exists when it is missing (it is created then), must
    be a folder this process can create a file in. Tried with a probe file, removed at once."""
    folder = published.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file, not a folder: name a duckdb_path in a folder"
    try:
        handle, probe = tempfile.mkstemp(prefix=".entra-pipeline-probe-", dir=folder)
    except OSError as error:
        return f"cannot create files in {folder} ({error.strerror}): name a writable folder"
    os.close(handle)
    os.unlink(probe)
    return None


def make_private(path: Path) -> None:
    """Owner-only permissions on a file the pipeline wrote (it may hold personal data)."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, PRIVATE_FILE)


def spill_directory(database: Path) -> Path:
    """Where DuckDB writes what does not fit its memory limit while it works on `database`
    (temporary tables and sorts of personal data): `<database>.tmp`, owner-only. DuckDB's own
    default is that folder too, but created 0755 with 0644 files in it."""
    folder = _spill_path(database)
    private_directories(folder)
    os.chmod(folder, PRIVATE_DIRECTORY)  # one a DuckDB of before made 0755, too
    return folder


def remove_spill_directory(database: Path) -> None:
    """Remove `spill_directory(database)` and what DuckDB left in it (after its last connection)."""
    shutil.rmtree(_spill_path(database), ignore_errors=True)


def _spill_path(database: Path) -> Path:
    return database.with_name(f"{database.name}.tmp")


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


class OwnerLock:
    """A file held locked for as long as its owner (a run's process) lives: the kernel drops the
    lock when the process dies, however it dies (kill -9 included), so a free lock on an owner
    file means its run is gone."""

    def __init__(self, path: Path) -> None:
        self.path = path
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise
        self._descriptor: int | None = descriptor

    def release(self) -> None:
        """Unlock and remove the owner file (the run ended and cleaned up after itself)."""
        if self._descriptor is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._descriptor)  # closing drops the lock
        self._descriptor = None


def owner_is_gone(path: Path) -> bool:
    """Whether nobody holds the owner lock at `path` (its process ended without releasing it)."""
    try:
        descriptor = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False  # released meanwhile: the owner cleaned up itself
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(descriptor)
    return True


# linux/fs.h: _IOW(0x94, 9, int), "clone a file's extents" (ioctl_ficlone(2)).
_FICLONE = 0x40049409


def copy_file(source: Path, target: Path) -> bool:
    """Copy `source` over `target` (created owner-only); True when the filesystem cloned it.

    On a filesystem with reflinks (XFS, the RHEL default since 8; btrfs; ZFS 2.2+; bcachefs) the
    copy is a clone: it shares the source's blocks, takes no time or space whatever the size,
    and DuckDB's writes to it then take new blocks only for what changes. Elsewhere (ext4,
    tmpfs, another filesystem) the kernel copies the bytes (sendfile), as shutil does."""
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        os.fchmod(descriptor, PRIVATE_FILE)  # a target that existed keeps its mode otherwise
        with open(source, "rb") as reading:
            fcntl.ioctl(descriptor, _FICLONE, reading.fileno())
        return True
    except OSError:  # EOPNOTSUPP, EXDEV, EINVAL, ENOTTY: no reflinks here
        pass
    finally:
        os.close(descriptor)
    shutil.copyfile(source, target)  # into the owner-only file made above
    return False
