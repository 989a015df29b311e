"""Small helpers shared by test folders: facts about the app registration, a dead port, and a
DuckDB made to spill.

Importable as `support` from every test module (tests/ is on sys.path through its conftest).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import duckdb

# The application permissions the connector's documentation asks an admin to grant.
CONNECTOR_PERMISSIONS = frozenset(
    {
        "User.Read.All",
        "AuditLog.Read.All",
        "Device.Read.All",
        "GroupMember.Read.All",
        "LicenseAssignment.Read.All",
    }
)


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Spill:
    bytes: int  # what DuckDB wrote to disk
    folder: Path  # where (its temp_directory)
    mode: int  # the folder's permission bits
    files: dict[str, int]  # the files in it, with theirs


def spill(con: duckdb.DuckDBPyConnection) -> Spill:
    """Fill a temporary table (~150 MB) past a connection's memory limit (set 48MB): DuckDB writes
    part of it to disk. What it wrote, and where, while it is there."""
    con.execute(
        "CREATE TEMP TABLE spilled AS SELECT uuid()::VARCHAR || repeat('x', 50) AS s "
        "FROM range(1500000)"
    )
    (written,) = con.execute(
        "SELECT sum(temporary_storage_bytes) FROM duckdb_memory()"
    ).fetchone() or (0,)
    (setting,) = con.execute("SELECT current_setting('temp_directory')").fetchone() or ("",)
    folder = Path(setting)
    files = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    return Spill(int(written), folder, folder.stat().st_mode & 0o777, files)
