"""The work copy of the published file: a clone where the filesystem has reflinks, else a copy.

The clone is tested on a real XFS filesystem (reflink=1, the RHEL default), an image mounted on a
loop device: that needs root and mkfs.xfs (CI installs xfsprogs and runs as root); elsewhere
that test is skipped and says why.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from entra_pipeline.warehouse.files import copy_file
from entra_pipeline.warehouse.resource import Warehouse

SIZE = 64 * 2**20


def _write(path: Path, size: int = SIZE) -> bytes:
    data = os.urandom(1 << 20) * (size >> 20)
    path.write_bytes(data)
    return data


def _used(folder: Path) -> int:
    info = os.statvfs(folder)
    return (info.f_blocks - info.f_bfree) * info.f_frsize


@pytest.fixture(scope="module")
def xfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder on a freshly made XFS filesystem with reflinks."""
    if os.geteuid() != 0 or shutil.which("mkfs.xfs") is None:
        pytest.skip("an XFS loop mount needs root and mkfs.xfs (apt-get install xfsprogs)")
    base = tmp_path_factory.mktemp("xfs")
    image, mount = base / "fs.img", base / "mnt"
    mount.mkdir()
    with image.open("wb") as handle:
        handle.truncate(600 * 2**20)  # XFS's smallest filesystem is 300 MB
    made = subprocess.run(
        ["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    mounted = subprocess.run(
        ["mount", "-o", "loop", str(image), str(mount)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a loop device here: {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_copy_without_reflinks_is_a_byte_copy_readable_by_its_owner_only(
    tmp_path: Path,
) -> None:
    source, target = tmp_path / "published.duckdb", tmp_path / "work.duckdb"
    data = _write(source, 4 * 2**20)
    target.write_bytes(b"an older, longer work copy" * 300_000)
    cloned = copy_file(source, target)
    assert target.read_bytes() == data
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    if subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True,
                      text=True).stdout.strip() in ("ext2/ext3", "tmpfs"):  # fmt: skip
        assert cloned is False  # ext4 and tmpfs have no reflinks


def test_on_xfs_the_copy_is_a_clone_sharing_the_blocks(xfs: Path) -> None:
    source, target = xfs / "published.duckdb", xfs / "work.duckdb"
    data = _write(source)
    os.sync()
    before = _used(xfs)
    assert copy_file(source, target) is True
    os.sync()
    assert _used(xfs) - before < SIZE // 16  # metadata only, not another 64 MiB
    assert target.read_bytes() == data
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with target.open("r+b") as handle:  # writing to the clone leaves the source as it was
        handle.write(b"x" * 4096)
    assert source.read_bytes() == data


@dg.asset(key=["raw", "numbers"])
def numbers(warehouse: Warehouse) -> None:
    with warehouse.transaction() as con:
        warehouse.replace_table(
            con, "raw.numbers", "SELECT range AS n, repeat('x', 200) AS pad FROM range(?)",
            [300_000],
        )  # fmt: skip


def test_a_run_on_xfs_works_on_a_clone_of_the_published_file(xfs: Path) -> None:
    db = xfs / "warehouse" / "entra.duckdb"
    instance = dg.DagsterInstance.ephemeral()
    resources = {"warehouse": Warehouse(path=str(db), tenant_id="tenant-a")}
    for _ in range(2):
        result = dg.materialize([numbers], resources=resources, instance=instance)
        assert result.success
    said = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.user_message.startswith("work copy of entra.duckdb")
    ]
    assert len(said) == 1, said
    assert said[0].endswith("cloned (the filesystem shares its blocks)"), said
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*), sum(n) FROM raw.numbers").fetchone() == (
            300_000,
            sum(range(300_000)),
        )
        assert con.execute("SELECT count(*) FROM ops.sync_runs").fetchone() == (2,)
