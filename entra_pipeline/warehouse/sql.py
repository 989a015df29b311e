"""Quoting for the few SQL texts built in Python (identifiers from a registry, never user values,
which travel as bound parameters)."""

from __future__ import annotations

import duckdb

from entra_pipeline.warehouse.errors import WarehouseError


def quoted(identifier: str) -> str:
    """A DuckDB identifier: `"name"`, an embedded `"` doubled."""
    return '"' + identifier.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A DuckDB string literal: `'text'`, an embedded `'` doubled."""
    return "'" + value.replace("'", "''") + "'"


def split_table(table: str) -> tuple[str, str]:
    """`schema.table` -> (schema, table); both must be plain identifiers."""
    schema, _, name = table.partition(".")
    if not name or not schema.isidentifier() or not name.isidentifier():
        raise WarehouseError(f"table names are schema.table identifiers, got {table!r}")
    return schema, name


def table_exists(con: duckdb.DuckDBPyConnection, table: str, catalog: str | None = None) -> bool:
    """Whether `schema.table` (a table, not a view) exists in `catalog` (default: the
    connection's own database)."""
    schema, name = split_table(table)
    database = "current_database()" if catalog is None else "?"
    found = con.execute(
        f"SELECT 1 FROM duckdb_tables() WHERE database_name = {database} AND schema_name = ? "
        "AND table_name = ?",
        [*([] if catalog is None else [catalog]), schema, name],
    ).fetchall()
    return bool(found)
