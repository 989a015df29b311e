"""What a materialization shows in Dagster about a table it built: rows, documented columns and a
preview."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import dagster as dg
import duckdb

from entra_pipeline.warehouse.docs import column_comments

PREVIEW_ROWS = 10
# What a preview shows of the rows (they are people's names, UPNs and e-mails): the shape only
# (`masked`, the default), the values (`full`), or no preview at all (`off`).
PreviewMode = Literal["masked", "full", "off"]
PREVIEW_MODES: tuple[PreviewMode, ...] = ("masked", "full", "off")
MASK = "•••"


def table_key(table: str) -> dg.AssetKey:
    """The asset of a warehouse table: `schema.table` is asset `[schema, table]`."""
    return dg.AssetKey(table.split("."))


def table_metadata(
    con: duckdb.DuckDBPyConnection, table: str, rows: int, previews: PreviewMode = "masked"
) -> dict[str, Any]:
    """Row count, column schema and a markdown preview of `table`, for a materialization; the
    preview's values are masked unless `previews` is `full` (Dagster's event log keeps them)."""
    described = con.execute(f"DESCRIBE {table}").fetchall()
    comments = column_comments(con, table)
    metadata: dict[str, Any] = {
        "dagster/row_count": rows,
        # The descriptions are the columns' DuckDB comments: what an analyst's tool shows too.
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn(
                    name=row[0], type=str(row[1]), description=comments.get(row[0]) or None
                )
                for row in described
            ]
        ),
    }
    if previews == "off":
        return metadata
    preview = con.execute(f"SELECT * FROM {table} LIMIT {PREVIEW_ROWS}")
    names = [column[0] for column in preview.description or []]
    values = preview.fetchall()
    if previews == "masked":
        values = [tuple(None if v is None else MASK for v in row) for row in values]
    metadata["preview"] = dg.MetadataValue.md(markdown_table(names, values))
    return metadata


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table (Dagster renders it in the UI); pipes and newlines in values escaped."""

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(c) for c in columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows),
    ]
    return "\n".join(lines)
