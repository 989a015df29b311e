"""NDJSON files (Graph's pages, as the extraction wrote them) loaded into typed DuckDB tables.

The column types come from the caller (the Graph registry for raw.*), so a property no row carries
is still a typed, null column, and no files at all give an empty table of the same shape. The
registry's descriptions become the table's and columns' comments.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

import duckdb

from entra_pipeline.warehouse.docs import TENANT_ID_DOC, document_table
from entra_pipeline.warehouse.sql import literal, quoted

logger = logging.getLogger(__name__)

# Every loaded table also carries these, first: the tenant and when the row was extracted (UTC).
PROVENANCE_COLUMNS = {"tenant_id": "VARCHAR", "extracted_at": "TIMESTAMPTZ"}
PROVENANCE_DOCS = {
    "tenant_id": TENANT_ID_DOC,
    "extracted_at": "When this run started extracting the row from Microsoft Graph (UTC).",
}


class LandedTable(Protocol):
    """What a loaded table is made of: its name, typed columns in order, row key and docs."""

    @property
    def table(self) -> str: ...
    @property
    def columns(self) -> Mapping[str, str]: ...
    @property
    def description(self) -> str: ...
    @property
    def docs(self) -> Mapping[str, str]: ...
    @property
    def key(self) -> Sequence[str]: ...


def load_landed_table(
    con: duckdb.DuckDBPyConnection,
    landed: LandedTable,
    files: Sequence[Path],
    tenant_id: str,
    extracted_at: datetime,
    *,
    schema: str = "raw",
) -> int:
    """`load_ndjson_table` for a registry entry: `<schema>.<landed.table>`, its columns and key,
    documented with the entry's descriptions."""
    rows = load_ndjson_table(
        con, (schema, landed.table), files, landed.columns, landed.key, tenant_id, extracted_at
    )
    document_table(
        con, f"{schema}.{landed.table}", landed.description, {**PROVENANCE_DOCS, **landed.docs}
    )
    return rows


def load_ndjson_table(
    con: duckdb.DuckDBPyConnection,
    target: tuple[str, str],
    files: Sequence[Path],
    columns: Mapping[str, str],
    key: Sequence[str],
    tenant_id: str,
    extracted_at: datetime,
) -> int:
    """CREATE OR REPLACE `schema.table` (`target`) from NDJSON files, typed and de-duplicated by
    `key`; returns the row count. Runs in the caller's transaction. Rows keep the files' order; a
    key seen twice keeps its first row."""
    schema, name = target
    table = f"{quoted(schema)}.{quoted(name)}"
    key_list = ", ".join(quoted(c) for c in key)
    provenance = ", ".join(f"?::{t} AS {quoted(c)}" for c, t in PROVENANCE_COLUMNS.items())
    selected = ", ".join(quoted(c) for c in columns)
    struct = ", ".join(f"{literal(c)}: {literal(t)}" for c, t in columns.items())
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted(schema)}")
    if not files:
        typed = ", ".join(f"{quoted(c)} {t}" for c, t in {**PROVENANCE_COLUMNS, **columns}.items())
        con.execute(f"CREATE OR REPLACE TABLE {table} ({typed})")
        return 0
    # A plain scan streams the files into the table; de-duplicating in the same statement
    # (DISTINCT ON / ORDER BY) would hold every row at once and took 2.5x the time and memory
    # at 400k devices. Duplicates are few (a partition's boundary value; a restarted listing is
    # cut back before the load), so they are counted on the key alone and deleted only when
    # there are any.
    # The query is built from the registry (trusted names); values arrive as parameters.
    con.execute(
        f"CREATE OR REPLACE TABLE {table} AS SELECT {provenance}, {selected} "
        f"FROM read_json(?, format = 'newline_delimited', columns = {{{struct}}})",
        [tenant_id, extracted_at, [str(f) for f in files]],
    )
    [(count, distinct)] = con.execute(
        f"SELECT (SELECT count(*) FROM {table}), (SELECT count(*) FROM (SELECT DISTINCT "
        f"{key_list} FROM {table}))"
    ).fetchall()
    if count != distinct:
        # Numbered only among the keys listed twice (a partition's boundary value, a group's
        # member at a range's edge): a window over every row held millions of rows at once.
        con.execute(
            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM (SELECT rowid, row_number() "
            f"OVER (PARTITION BY {key_list} ORDER BY rowid) AS seen FROM {table} SEMI JOIN "
            f"(SELECT {key_list} FROM {table} GROUP BY ALL HAVING count(*) > 1) USING "
            f"({key_list})) WHERE seen > 1)"
        )
        logger.info("%s.%s: dropped %d rows listed twice", schema, name, count - distinct)
    return int(distinct)
