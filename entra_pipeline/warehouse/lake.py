"""`warehouse.backend: ducklake`: the published tables in a DuckLake catalog on PostgreSQL, which
many connectors publish into at once and analysts read from anywhere (docs/scaling-out.md).

Each run still builds in a private work copy of its connector's DuckDB file (`duckdb_path`, now
the connector's own state: delta links, raw tables, history). When the run succeeds, what it
built goes into the lake in **one DuckLake transaction scoped to its tenant**: per table, the
tenant's rows are deleted and the run's inserted, so a reader sees the tenant's old data or its
new data, never half, and the other tenants' rows are not touched. Tables are partitioned by
`tenant_id`: a tenant's rows live in data files of their own, so two tenants publishing at once
never delete from the same file (DuckLake's one row-level conflict); what DuckLake still reports
as a conflict (two first publications creating one table) is retried.

A connector whose DuckDB file is missing (a new machine, a lost disk) starts from the lake: its
file is rebuilt from the tenant's rows before the run, so incremental sync carries on.

DuckDB cannot download extensions here: `ducklake` and `postgres` come from their PyPI packages
(`pip install -e .[ducklake]`) and are installed into a private extension directory from there.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from entra_pipeline.warehouse.docs import column_comments, document_table, table_comment
from entra_pipeline.warehouse.errors import WarehouseError
from entra_pipeline.warehouse.ops_tables import OPS_ADDED, OPS_DDL
from entra_pipeline.warehouse.sql import literal, quoted, split_table

logger = logging.getLogger(__name__)

LAKE = "lake"  # the catalog name the lake is attached under in the pipeline's connections
# DuckLake retries a commit that raced another by itself; a real conflict (two first
# publications creating one table) is retried here, the whole transaction again.
PUBLISH_ATTEMPTS = 5
# The extension packages ship one DuckDB release's builds: the pinned duckdb's.
EXTENSION_PACKAGES = {
    "postgres": ("duckdb_extension_postgres", "postgres"),
    "ducklake": ("duckdb_extension_ducklake", "ducklake"),
}


@dataclass(frozen=True)
class LakeTarget:
    """Where the lake is: its catalog (after `ducklake:`) and its data files' folder."""

    catalog: str  # e.g. postgres:dbname=entra host=127.0.0.1 user=entra (no password)
    data_path: str  # a folder or an object store prefix (s3://bucket/entra/)

    def attach_sql(self) -> str:
        return (
            f"ATTACH {literal('ducklake:' + self.catalog)} AS {LAKE} "
            f"(DATA_PATH {literal(self.data_path)})"
        )

    def describe(self) -> str:
        return f"ducklake:{self.catalog}"


def extension_files() -> dict[str, Path]:
    """The `.duckdb_extension` files of the installed extension packages, by extension."""
    found: dict[str, Path] = {}
    for extension, (package, name) in EXTENSION_PACKAGES.items():
        try:
            module = __import__(package)
        except ImportError:
            raise WarehouseError(
                f"warehouse.backend ducklake needs the {package.replace('_', '-')} package "
                "(DuckDB cannot download extensions at run time): pip install -e '.[ducklake]'"
            ) from None
        files = sorted(Path(str(module.__file__)).parent.rglob(f"{name}.duckdb_extension"))
        if not files:
            raise WarehouseError(f"{package} has no {name}.duckdb_extension file")
        found[extension] = files[-1]
    return found


@functools.cache
def _extension_directory() -> Path:
    """A private extension directory with the packaged extensions installed, once a process;
    removed when the process exits (or at once, when the install fails)."""
    directory = Path(tempfile.mkdtemp(prefix="entra-pipeline-extensions-"))
    try:
        install_extensions(directory)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


@contextlib.contextmanager
def lake_connection(
    target: LakeTarget, *, memory_limit: str
) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection with the lake attached as `lake`, closed after. What it
    spills beyond `memory_limit` (the tables it copies hold personal data) goes to an owner-only
    folder of its own, removed after: an in-memory DuckDB's default is `.tmp` in the working
    directory, 0755 with 0644 files."""
    with tempfile.TemporaryDirectory(prefix="entra-pipeline-lake-spill-") as spill:
        con = duckdb.connect(
            config={
                "memory_limit": memory_limit,
                "temp_directory": spill,
                "extension_directory": str(_extension_directory()),
                "autoinstall_known_extensions": False,
            }
        )
        with contextlib.closing(con):
            try:
                con.execute("LOAD postgres")
                con.execute("LOAD ducklake")
                _attach(con, target)
            except duckdb.Error as error:
                raise WarehouseError(
                    f"Cannot attach the DuckLake catalog {target.describe()}: {error}"
                ) from None
            yield con


def _attach(con: duckdb.DuckDBPyConnection, target: LakeTarget) -> None:
    """ATTACH the lake. The first ATTACH of an empty catalog creates DuckLake's tables in it: two
    connectors doing that at once collide in PostgreSQL ("duplicate key value violates unique
    constraint"), and the one that lost finds the tables there when it attaches again."""
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            con.execute(target.attach_sql())
            return
        except duckdb.Error as error:
            if attempt == PUBLISH_ATTEMPTS or "Failed to initialize DuckLake" not in str(error):
                raise
            logger.info("DuckLake catalog initialised by another connector meanwhile; again")
            time.sleep(0.2 * attempt)


def install_extensions(directory: Path | None = None) -> list[Path]:
    """Install the packaged extensions into DuckDB's extension directory (the default one, which
    the `duckdb` CLI of the same release reads), for analysts attaching the lake."""
    with contextlib.closing(
        duckdb.connect(config={"extension_directory": str(directory)} if directory else {})
    ) as con:
        files = list(extension_files().values())
        for file in files:
            con.execute(f"INSTALL {literal(str(file))}")
    return files


def publish_to_lake(
    target: LakeTarget,
    work: Path,
    tenant_id: str,
    tables: Sequence[str],
    views: Sequence[str],
    ops_rows: Mapping[str, list[tuple]],
    *,
    memory_limit: str,
) -> int:
    """Replace `tenant_id`'s rows of `tables` (and `views`, and append `ops_rows`) in the lake
    with the work copy's, in one DuckLake transaction; returns the snapshot it committed."""
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        with lake_connection(target, memory_limit=memory_limit) as con:
            con.execute(f"ATTACH {literal(str(work))} AS work (READ_ONLY)")
            try:
                con.execute("BEGIN TRANSACTION")
                for table in tables:
                    _replace_tenant_rows(con, table, tenant_id)
                for view in views:
                    _copy_view(con, view)
                _append_ops(con, ops_rows)
                con.execute("COMMIT")
            except duckdb.TransactionException as error:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                if attempt == PUBLISH_ATTEMPTS:
                    raise WarehouseError(
                        f"DuckLake refused the publication {attempt} times: {error}"
                    ) from None
                logger.info("DuckLake conflict (%s); publishing again (%d)", error, attempt)
                time.sleep(0.2 * attempt)
                continue
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise
            finally:
                # The work copy may become the published file next: nothing may keep it attached.
                with contextlib.suppress(duckdb.Error):
                    con.execute("DETACH work")
            [(snapshot,)] = con.execute(
                f"SELECT max(snapshot_id) FROM ducklake_snapshots({literal(LAKE)})"
            ).fetchall()
            return int(snapshot)
    raise AssertionError("unreachable")


def append_ops_rows(
    target: LakeTarget, ops_rows: Mapping[str, list[tuple]], *, memory_limit: str
) -> None:
    """A failed run's `ops.*` rows, appended to the lake's on their own."""
    with lake_connection(target, memory_limit=memory_limit) as con:
        con.execute("BEGIN TRANSACTION")
        _append_ops(con, ops_rows)
        con.execute("COMMIT")


def _replace_tenant_rows(con: duckdb.DuckDBPyConnection, table: str, tenant_id: str) -> None:
    schema, name = split_table(table)
    target = f"{LAKE}.{quoted(schema)}.{quoted(name)}"
    columns = _columns(con, "work", schema, name)
    if "tenant_id" not in columns:
        raise WarehouseError(f"{table} has no tenant_id column: it cannot be published per tenant")
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {LAKE}.{quoted(schema)}")
    existing = _columns(con, LAKE, schema, name)
    if not existing:
        typed = ", ".join(f"{quoted(c)} {t}" for c, t in columns.items())
        con.execute(f"CREATE TABLE {target} ({typed})")
        con.execute(f"ALTER TABLE {target} SET PARTITIONED BY (tenant_id)")
    else:
        for column, kind in columns.items():
            if column not in existing:  # a newer version's column (other tenants: null)
                con.execute(f"ALTER TABLE {target} ADD COLUMN {quoted(column)} {kind}")
            elif existing[column] != kind:
                raise WarehouseError(
                    f"{table}.{column} is {kind} in this run and {existing[column]} in the "
                    "lake: publish every connector with one version of entra-pipeline"
                )
    con.execute(f"DELETE FROM {target} WHERE tenant_id = ?", [tenant_id])
    con.execute(f"INSERT INTO {target} BY NAME SELECT * FROM work.{quoted(schema)}.{quoted(name)}")
    document_table(
        con,
        table,
        table_comment(con, table, catalog="work"),
        column_comments(con, table, catalog="work"),
        catalog=LAKE,
    )


def _copy_view(con: duckdb.DuckDBPyConnection, view: str) -> None:
    """The view as the work copy defines it, reading the lake's tables (its SQL names tables
    without a catalog; in the lake they resolve to the lake's own)."""
    schema, name = split_table(view)
    [(sql,)] = con.execute(
        "SELECT sql FROM duckdb_views() WHERE database_name = 'work' AND schema_name = ? "
        "AND view_name = ?",
        [schema, name],
    ).fetchall()
    body = _view_body(sql)
    existing = con.execute(
        "SELECT sql FROM duckdb_views() WHERE database_name = ? AND schema_name = ? "
        "AND view_name = ?",
        [LAKE, schema, name],
    ).fetchall()
    if existing and _view_body(existing[0][0]) == body:
        return  # as this version defines it: replacing it would only collide with other tenants
    con.execute(f"CREATE OR REPLACE VIEW {LAKE}.{quoted(schema)}.{quoted(name)} AS {body}")
    # DuckLake keeps no comments on a view's columns: the view's own says what it is.
    document_table(con, view, table_comment(con, view, catalog="work"), {}, catalog=LAKE)


def _view_body(sql: str) -> str:
    return re.sub(
        r"^CREATE VIEW\s+\S+\s+AS", "", sql.strip().rstrip(";"), count=1, flags=re.S
    ).strip()


def _append_ops(con: duckdb.DuckDBPyConnection, ops_rows: Mapping[str, list[tuple]]) -> None:
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {LAKE}.ops")
    for ddl in OPS_DDL[1:]:
        con.execute(ddl.replace("EXISTS ops.", f"EXISTS {LAKE}.ops.", 1))
    for table, added in OPS_ADDED.items():
        schema, name = split_table(table)
        present = _columns(con, LAKE, schema, name)
        for column, kind in added.items():
            if column not in present:
                con.execute(f"ALTER TABLE {LAKE}.{table} ADD COLUMN {quoted(column)} {kind}")
    for table, rows in ops_rows.items():
        if rows:
            marks = ",".join("?" * len(rows[0]))
            con.executemany(f"INSERT INTO {LAKE}.{table} VALUES ({marks})", rows)


def seed_from_lake(
    target: LakeTarget, destination: Path, tenant_id: str, *, memory_limit: str
) -> list[str]:
    """Build `destination` (a DuckDB file that does not exist) from the lake's rows of
    `tenant_id`: every table and view, documented; returns the tables copied."""
    copied: list[str] = []
    staged = destination.with_name(destination.name + ".seeding")
    staged.unlink(missing_ok=True)
    with lake_connection(target, memory_limit=memory_limit) as con:
        con.execute(f"ATTACH {literal(str(staged))} AS seed")
        tables = con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ? "
            "ORDER BY 1, 2",
            [LAKE],
        ).fetchall()
        for schema, name in tables:
            table = f"{schema}.{name}"
            con.execute(f"CREATE SCHEMA IF NOT EXISTS seed.{quoted(schema)}")
            con.execute(
                f"CREATE TABLE seed.{quoted(schema)}.{quoted(name)} AS SELECT * FROM "
                f"{LAKE}.{quoted(schema)}.{quoted(name)} WHERE tenant_id = ?",
                [tenant_id],
            )
            document_table(
                con,
                table,
                table_comment(con, table, catalog=LAKE),
                column_comments(con, table, catalog=LAKE),
                catalog="seed",
            )
            copied.append(table)
        con.execute("DETACH seed")
    if copied:
        staged.replace(destination)
    else:
        staged.unlink(missing_ok=True)
    return copied


def _columns(
    con: duckdb.DuckDBPyConnection, catalog: str, schema: str, name: str
) -> dict[str, str]:
    return dict(
        con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = ? AND "
            "schema_name = ? AND table_name = ? ORDER BY column_index",
            [catalog, schema, name],
        ).fetchall()
    )


@contextlib.contextmanager
def reading(
    target: LakeTarget, *, memory_limit: str = "512MB"
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection with the lake attached and `USE lake`: what an analyst's session looks like."""
    with lake_connection(target, memory_limit=memory_limit) as con:
        con.execute(f"USE {LAKE}")
        yield con
