"""Table and column documentation, kept where analysts and Dagster both read it: DuckDB's catalog.

Each layer documents the tables it builds from its own source of truth (the Graph registry for
`raw.*`, a YAML file beside each SQL model, the mapping CSV for `neurons.*`, this package for
`ops.*`) with `document_table`, which writes `COMMENT ON TABLE` / `COMMENT ON COLUMN`. Dagster's
column schema is then read back from the catalog (`column_comments`), so the two never disagree.
`CREATE OR REPLACE TABLE` drops a table's comments: a table is documented each time it is built.
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb

from entra_pipeline.warehouse.sql import literal, quoted, split_table

# The provenance columns every landed and modelled table starts with.
TENANT_ID_DOC = "Directory (tenant) id of the Microsoft Entra tenant the row was read from."
# What neurons.* and mdm.* carry beside tenant_id (docs/scaling-out.md: many connectors share one
# DuckLake).
CONNECTOR_DOC = "The connector_name of the config whose run read the row (one per tenant)."


def document_table(
    con: duckdb.DuckDBPyConnection,
    table: str,
    description: str,
    columns: Mapping[str, str],
    *,
    catalog: str | None = None,
) -> list[str]:
    """Comment `schema.table` (a table or a view) and each of its columns `columns` describes;
    returns the table's columns left undocumented, in table order (callers decide whether that
    is an error). Describing a column the table lacks is a ValueError: the docs went stale."""
    schema, name = split_table(table)
    present = table_columns(con, table, catalog=catalog)
    stale = [column for column in columns if column not in present]
    if stale:
        raise ValueError(
            f"{table} has no column {stale[0]!r} to document (its columns: {', '.join(present)})"
        )
    target = f"{quoted(catalog)}.{quoted(schema)}.{quoted(name)}" if catalog else table
    kind = "VIEW" if _is_view(con, schema, name, catalog) else "TABLE"
    con.execute(f"COMMENT ON {kind} {target} IS {literal(description.strip())}")
    for column, text in columns.items():
        if text.strip():
            con.execute(
                f"COMMENT ON COLUMN {target}.{quoted(column)} IS {literal(' '.join(text.split()))}"
            )
    return [column for column in present if not columns.get(column, "").strip()]


def column_comments(
    con: duckdb.DuckDBPyConnection, table: str, *, catalog: str | None = None
) -> dict[str, str]:
    """Column -> comment of `schema.table` (a table or a view), in table order; '' where none."""
    schema, name = split_table(table)
    rows = con.execute(
        "SELECT column_name, coalesce(comment, '') FROM duckdb_columns() "
        "WHERE database_name = coalesce(?, current_database()) AND schema_name = ? "
        "AND table_name = ? ORDER BY column_index",
        [catalog, schema, name],
    ).fetchall()
    return dict(rows)


def table_comment(con: duckdb.DuckDBPyConnection, table: str, *, catalog: str | None = None) -> str:
    """The comment of `schema.table` (a table or a view); '' when it has none."""
    schema, name = split_table(table)
    rows = con.execute(
        "SELECT coalesce(comment, '') FROM duckdb_tables() WHERE database_name = "
        "coalesce(?, current_database()) AND schema_name = ? AND table_name = ? "
        "UNION ALL SELECT coalesce(comment, '') FROM duckdb_views() WHERE database_name = "
        "coalesce(?, current_database()) AND schema_name = ? AND view_name = ?",
        [catalog, schema, name, catalog, schema, name],
    ).fetchall()
    return rows[0][0] if rows else ""


def table_columns(
    con: duckdb.DuckDBPyConnection, table: str, *, catalog: str | None = None
) -> list[str]:
    """The columns of `schema.table` (a table or a view), in table order."""
    return list(column_comments(con, table, catalog=catalog))


def copy_documentation(con: duckdb.DuckDBPyConnection, table: str, source_catalog: str) -> None:
    """Give `table` of the connection's database the comments `table` has in `source_catalog`
    (an attached database the table was copied from: `CREATE TABLE AS` copies no comments)."""
    present = column_comments(con, table)
    comments = {
        column: text
        for column, text in column_comments(con, table, catalog=source_catalog).items()
        if column in present
    }
    document_table(con, table, table_comment(con, table, catalog=source_catalog), comments)


def _is_view(con: duckdb.DuckDBPyConnection, schema: str, name: str, catalog: str | None) -> bool:
    rows = con.execute(
        "SELECT 1 FROM duckdb_views() WHERE database_name = coalesce(?, current_database()) "
        "AND schema_name = ? AND view_name = ?",
        [catalog, schema, name],
    ).fetchall()
    return bool(rows)
