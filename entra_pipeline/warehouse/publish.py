"""The one place that publishes tables into the DuckDB file analysts read.

A run builds its tables in a private work copy of the published file (a clone sharing its
blocks where the filesystem has reflinks: XFS, btrfs, ZFS; a byte copy elsewhere). When the run ends
with no failed step, the tables it built are copied into a fresh copy of the *current* published
file, and that copy is renamed over it in one atomic step: a reader holding a read-only connection
keeps the old file and is never refused, a new reader sees the new file, and nobody sees half a
sync. A run that fails publishes nothing but its `ops.sync_runs` row and its notifications.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from entra_pipeline.warehouse.docs import copy_documentation
from entra_pipeline.warehouse.files import (
    copy_file,
    exclusive_lock,
    make_private,
    remove_spill_directory,
    spill_directory,
)
from entra_pipeline.warehouse.ops_tables import create_ops_tables
from entra_pipeline.warehouse.sql import literal, split_table, table_exists

DEFAULT_MEMORY_LIMIT = "512MB"


@dataclass(frozen=True)
class Publication:
    """What a run published: rows per table, where, and the DuckLake snapshot (None: a file)."""

    rows_per_table: dict[str, int]
    target: str
    lake_snapshot: int | None


def connect(
    path: Path | None, *, read_only: bool = False, memory_limit: str = DEFAULT_MEMORY_LIMIT
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the pipeline's memory limit. Beyond it a writable one spills to
    an owner-only folder beside the file (`spill_directory`; removed with the work copy, or after
    publishing); a read-only one keeps DuckDB's default (its queries here are counts)."""
    config: dict[str, Any] = {"memory_limit": memory_limit}
    if path is not None and not read_only:
        config["temp_directory"] = str(spill_directory(path))
    return duckdb.connect(str(path), read_only=read_only, config=config)


def publish_file(
    published: Path,
    work: Path | None,
    tables: list[str],
    ops_rows: dict[str, list[tuple]],
    *,
    base: FileIdentity | None = None,
    unless_recorded: str | None = None,
    views: Sequence[str] = (),
) -> bool:
    """Put `tables` and `views` of the work copy and `ops_rows` into the published file, in one
    rename, with their documentation.

    When the published file is still the one the work copy was taken from (`base`), the work
    copy itself becomes the published file: nothing is copied again. Otherwise another run
    published meanwhile, and its tables are kept: `tables` are copied into a copy of the current
    file. The file being built is private until the rename, so its statements need no common
    transaction (one would hold every table in memory until the end).
    With `unless_recorded`, nothing happens (False) when `ops.sync_runs` already has that run.
    """
    with exclusive_lock(published):  # two jobs may finish together
        if unless_recorded is not None and run_recorded(published, unless_recorded):
            return False
        # Under this lock nobody else is publishing: a staged file is a killed publisher's.
        for leftover in published.parent.glob(f"{published.name}.publishing-*"):
            leftover.unlink(missing_ok=True)
        if work is not None and identity(published) == base:
            staged, copy_tables = work, []
        else:
            staged = published.with_name(f"{published.name}.publishing-{os.getpid()}")
            staged.unlink(missing_ok=True)
            if published.exists():
                copy_file(published, staged)
            copy_tables = tables
        with contextlib.closing(connect(staged)) as con:
            create_ops_tables(con)
            if copy_tables:
                con.execute(f"ATTACH {literal(str(work))} AS work (READ_ONLY)")
                for table in copy_tables:
                    schema, _ = split_table(table)
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                    con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM work.{table}")
                    copy_documentation(con, table, "work")
                for view in views:
                    _copy_view(con, view, "work")
                con.execute("DETACH work")
            for table, rows in ops_rows.items():
                if rows:
                    marks = ",".join("?" * len(rows[0]))
                    con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
            con.execute("CHECKPOINT")
        remove_spill_directory(staged)
        make_private(staged)  # the rename gives the published file these permissions
        with open(staged, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(staged, published)
    return True


def _copy_view(con: duckdb.DuckDBPyConnection, view: str, source_catalog: str) -> None:
    """Create `view` as it is defined in `source_catalog`, documented as it is there (its SQL
    names tables without a catalog, so it reads the tables of the connection's database)."""
    schema, name = split_table(view)
    [(sql,)] = con.execute(
        "SELECT sql FROM duckdb_views() WHERE database_name = ? AND schema_name = ? "
        "AND view_name = ?",
        [source_catalog, schema, name],
    ).fetchall()
    con.execute(re.sub(r"^CREATE VIEW", "CREATE OR REPLACE VIEW", sql.strip().rstrip(";")))
    copy_documentation(con, view, source_catalog)


@dataclass(frozen=True)
class FileIdentity:
    """Which version of the published file a run started from (a rename gives a new inode)."""

    inode: int
    size: int
    modified_ns: int


def identity(path: Path) -> FileIdentity | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return FileIdentity(stat.st_ino, stat.st_size, stat.st_mtime_ns)


def run_recorded(published: Path, run_id: str) -> bool:
    found = query_sync_runs(
        published, "SELECT count(*) FROM ops.sync_runs WHERE run_id = ?", [run_id]
    )
    return bool(found and found[0][0])


def query_sync_runs(
    published: Path, sql: str, params: list[Any] | None = None
) -> list[tuple[Any, ...]] | None:
    """Run `sql` on the published file's `ops.sync_runs`; None when no run was ever published."""
    if not published.exists():
        return None
    with contextlib.closing(connect(published, read_only=True)) as con:
        if not table_exists(con, "ops.sync_runs"):
            return None
        return con.execute(sql, params or []).fetchall()
