"""A real PostgreSQL server on 127.0.0.1 for the DuckLake tests: Debian's `postgresql` package
(installed by `.ci/run`), a throwaway cluster with password authentication, stopped at the end.

PostgreSQL refuses to run as root: as root (CI), the cluster belongs to the `postgres` user the
package creates, and its programs run as that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import unused_port

USER = "entra"
PASSWORD = "lake-password-for-tests"


@dataclass(frozen=True)
class Postgres:
    port: int
    password: str

    def catalog(self, database: str = "lake") -> str:
        """A DuckLake catalog string (the password comes from PGPASSWORD)."""
        return f"postgres:dbname={database} host=127.0.0.1 port={self.port} user={USER}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        return subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                USER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ],
            env={**os.environ, "PGPASSWORD": self.password},
            capture_output=True,
            text=True,
            check=True,
        ).stdout


def _program(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None
    )
    if found is None:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed: apt-get install postgresql (.ci/run does)"
        )
    return found


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """Start a cluster in a folder of its own with database `lake`; stop and remove it at the
    end. The folder is directly under the temporary directory: the `postgres` user must reach
    it, and pytest's folders are root's own."""
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    folder = Path(tempfile.mkdtemp(prefix="entra-pipeline-postgres-"))
    data, pwfile = folder / "data", folder / "pwfile"
    pwfile.write_text(PASSWORD + "\n")
    if as_root:
        shutil.chown(folder, "postgres")
        shutil.chown(pwfile, "postgres")
    port = unused_port()
    subprocess.run(
        [
            *prefix,
            _program("initdb"),
            "-D",
            str(data),
            "-U",
            USER,
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
        ],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [
            *prefix,
            _program("pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(folder / "server.log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    server = Postgres(port, PASSWORD)
    try:
        server.psql("CREATE DATABASE lake")
        yield server
    finally:
        subprocess.run(
            [*prefix, _program("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)
