"""Quoting for the few SQL texts built in Python (identifiers from a registry, never user values,
which travel as bound parameters)."""

from __future__ import annotations

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
