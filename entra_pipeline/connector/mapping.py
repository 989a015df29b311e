"""The CSV attribute mapping (`ops.attribute_mapping`) and the tables built from it alone.

`neurons.users` and `neurons.devices` have one column per CSV row, named exactly as its target
attribute and in CSV order: editing the CSV changes the tables without a code change. Each column's
comment is the row's description. Beside each table, a view with snake_case names analysts can
type (`neurons.users_v`: `User.UPN` is `user_upn`) and comma-separated lists also as `VARCHAR[]`.
"""

from __future__ import annotations

import csv
import difflib
import re
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from entra_pipeline.connector.mapping_csv import CSV_COLUMNS, MappingInvalid, read_mapping
from entra_pipeline.errors import PipelineError
from entra_pipeline.resources import ConnectorResource
from entra_pipeline.warehouse.docs import (
    CONNECTOR_DOC,
    TENANT_ID_DOC,
    column_comments,
    document_table,
    table_columns,
)
from entra_pipeline.warehouse.metadata import table_key
from entra_pipeline.warehouse.resource import Warehouse
from entra_pipeline.warehouse.sql import quoted

ATTRIBUTE_MAPPING = dg.AssetKey(["ops", "attribute_mapping"])
MAPPING_TABLE = "ops.attribute_mapping"


@dataclass(frozen=True)
class MappedTable:
    """A data type of the mapping: the filtered table it reads and the table it builds."""

    data_type: str
    source: str
    target: str

    @property
    def key(self) -> dg.AssetKey:
        return table_key(self.target)

    @property
    def source_key(self) -> dg.AssetKey:
        return table_key(self.source)

    @property
    def view(self) -> str:
        """The snake_case view over the target table."""
        return f"{self.target}_v"


MAPPED_TABLES = (
    MappedTable("User", "staging.filtered_users", "neurons.users"),
    MappedTable("Device", "staging.filtered_devices", "neurons.devices"),
)
DATA_TYPES = tuple(table.data_type for table in MAPPED_TABLES)
# Every mapped table gets these columns besides the mapped ones.
RESERVED_TARGETS = ("tenant_id", "connector")
# The object id is what the blocking checks key on and what a consumer matches records by.
REQUIRED_SOURCE = "id"
# Source attributes whose value is a comma-separated list: the view also offers it as a VARCHAR[]
# column named <snake_case target>_list.
LIST_SOURCES = {"license_names": ","}
MAPPING_DOCS = {
    "tenant_id": TENANT_ID_DOC,
    "row": "Line of the mapping CSV the row is on (the header is line 1).",
    "data_type": "User or Device: which table the row adds a column to.",
    "source_attribute": "The column of staging.filtered_users / staging.filtered_devices read.",
    "target_attribute": "The column of neurons.users / neurons.devices it becomes.",
    "description": "What the target attribute holds: the column's comment in neurons.*.",
}


def snake_case(name: str) -> str:
    """A target attribute as a name analysts can type: `User.EntraObjectId` ->
    `user_entra_object_id`, `OS.Name` -> `os_name`, `DeviceName` -> `device_name`."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    words = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", words)
    return re.sub(r"[^0-9A-Za-z]+", "_", words).strip("_").lower()


class UnmappableColumn(PipelineError):
    """A mapping row names a column its filtered table does not have (checked before any SQL)."""


def _first_of_each_target() -> pl.Expr:
    # DuckDB identifiers are case-insensitive: "User.UPN" and "user.upn" would be one column.
    key = pl.struct(pl.col("data_type"), pl.col("target_attribute").str.to_lowercase())
    return key.is_first_distinct() | pl.col("target_attribute").is_null()


MAPPING_SCHEMA = pa.DataFrameSchema(
    {
        "row": pa.Column(pl.Int64),
        "data_type": pa.Column(pl.String, pa.Check.isin(DATA_TYPES)),
        "source_attribute": pa.Column(pl.String),
        "target_attribute": pa.Column(
            pl.String,
            pa.Check(
                lambda data: data.lazyframe.select(
                    ~pl.col(data.key).str.to_lowercase().is_in(RESERVED_TARGETS)
                ),
                name="not_reserved",
            ),
        ),
        "description": pa.Column(pl.String, nullable=True),
    },
    checks=[pa.Check(lambda data: data.lazyframe.select(_first_of_each_target()), name="unique")],
    name="mapping CSV",
)


# Problems of one kind named one by one, with suggestions; beyond them, counted.
LISTED = 20


def mapping_problems(frame: pl.DataFrame, columns: dict[str, list[str]]) -> list[str]:
    """Everything wrong with the mapping, each naming its row; `columns` maps data type -> the
    columns of its filtered table (the valid source attributes)."""
    try:
        MAPPING_SCHEMA.validate(frame, lazy=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases
        problems = [_describe(case, frame) for case in cases.head(LISTED).iter_rows(named=True)]
        if cases.height > LISTED:
            problems.append(
                f"{cases.height - LISTED:,} more problems of the same kinds: fix the ones above "
                "and run check again"
            )
        if any(case["check"] == "column_in_dataframe" for case in cases.rows(named=True)):
            return problems  # rows cannot be read without their columns
    else:
        problems = []
    problems += _unknown_sources(frame, columns)
    problems += view_name_problems(frame)
    for table in MAPPED_TABLES:
        mapped = frame.filter(
            (pl.col("data_type") == table.data_type)
            & (pl.col("source_attribute") == REQUIRED_SOURCE)
        )
        if mapped.is_empty():
            problems.append(
                f"no row maps {table.data_type} {REQUIRED_SOURCE!r}: {table.target} needs the "
                f"object id (add a row: {table.data_type},{REQUIRED_SOURCE},<target>,<description>)"
            )
    return problems


def _unknown_sources(frame: pl.DataFrame, columns: dict[str, list[str]]) -> list[str]:
    """Rows whose source_attribute is not a column of their filtered table: the first LISTED
    with suggestions (a table's valid names listed once), the rest counted."""
    unknown = frame.filter(
        pl.col("source_attribute").is_not_null()
        & pl.struct("data_type", "source_attribute").map_elements(
            lambda r: (
                r["data_type"] in columns and r["source_attribute"] not in columns[r["data_type"]]
            ),
            return_dtype=pl.Boolean,
        )
    )
    problems, listed_valid = [], set()
    for record in unknown.head(LISTED).iter_rows(named=True):
        data_type, source = record["data_type"], record["source_attribute"]
        table = _table_of(data_type).source
        hint = _nearest(source, columns[data_type])
        if hint.startswith("no similar name;"):
            hint = "no similar name" + (
                "; see the valid names above" if table in listed_valid else hint[15:]
            )
            listed_valid.add(table)
        problems.append(
            f"row {record['row']}: source_attribute {source!r} is not a column of {table}; {hint}"
        )
    if unknown.height > LISTED:
        rows: list[int] = unknown["row"].slice(LISTED).to_list()  # in file order
        problems.append(
            f"{unknown.height - LISTED:,} more rows (rows {rows[0]} to {rows[-1]}) name a "
            "source_attribute that is not a column: fix the ones above and run check again"
        )
    return problems


def _describe(case: dict, frame: pl.DataFrame) -> str:
    """One pandera failure case as a sentence naming the CSV row."""
    if case["check"] == "column_in_dataframe":
        return (
            f"the header has no {case['failure_case']!r} column; the mapping CSV needs the "
            f"columns {', '.join(CSV_COLUMNS)}"
        )
    record = frame.row(case["index"], named=True)
    row, column, value = record["row"], case["column"], case["failure_case"]
    if case["check"] == "not_nullable":
        return f"row {row}: {column} is empty"
    if column == "data_type":
        return f"row {row}: data_type {value!r} is not one of {', '.join(DATA_TYPES)}; " + _nearest(
            value, list(DATA_TYPES)
        )
    if column == "target_attribute":
        return (
            f"row {row}: target_attribute {value!r} is reserved ({' and '.join(RESERVED_TARGETS)}"
            " are added to every mapped table); choose another name"
        )
    target = record["target_attribute"]
    first = frame.filter(
        (pl.col("data_type") == record["data_type"])
        & (pl.col("target_attribute").str.to_lowercase() == target.lower())
    ).row(0, named=True)
    return (
        f"row {row}: target_attribute {target!r} is already mapped for {record['data_type']} on "
        f"row {first['row']} (as {first['target_attribute']!r}; names are case-insensitive); "
        "rename or remove one of them"
    )


def _nearest(value: str, valid: list[str]) -> str:
    """`did you mean ...` from the closest valid names, case-insensitively."""
    by_lower = {name.lower(): name for name in valid}
    if value.lower() in by_lower:
        return f"nearest valid: {by_lower[value.lower()]} (names are case-sensitive)"
    close = difflib.get_close_matches(value.lower(), list(by_lower), n=3, cutoff=0.6)
    if not close:
        return f"no similar name; valid names: {', '.join(valid)}"
    return "nearest valid: " + ", ".join(by_lower[name] for name in close)


def _table_of(data_type: str) -> MappedTable:
    return next(table for table in MAPPED_TABLES if table.data_type == data_type)


def mapped_select(rows: list[tuple[str, str]], source: str, available: list[str]) -> str:
    """SELECT tenant_id, connector, "<source>" AS "<target>", ... FROM source, for (source,
    target) pairs; `$connector` is the connector_name.

    This is the one place SQL is generated: every source is first checked against the real
    columns of `source`, and identifiers are quoted with `"` doubled, so no CSV text reaches the
    statement unchecked.
    """
    unknown = [name for name, _ in rows if name not in available]
    if unknown:
        raise UnmappableColumn(f"{source} has no column {unknown[0]!r}")
    columns = [f"{quoted(name)} AS {quoted(target)}" for name, target in rows]
    return (
        f"SELECT tenant_id, CAST($connector AS VARCHAR) AS connector, {', '.join(columns)} "
        f"FROM {source}"
    )


@dg.asset(
    key=ATTRIBUTE_MAPPING,
    group_name="mapping",
    deps=[table.source_key for table in MAPPED_TABLES],
    kinds={"duckdb", "csv"},
    metadata={"dagster/table_name": MAPPING_TABLE},
)
def attribute_mapping(warehouse: Warehouse, connector: ConnectorResource) -> dg.MaterializeResult:
    """The source -> target attribute mapping CSV (settings `mapping_path`), validated against the
    filtered tables; an invalid mapping fails the run before any mapped table is built."""
    started = time.perf_counter()
    path = Path(connector.settings.mapping_path)
    with warehouse.transaction() as con:
        columns = {table.data_type: table_columns(con, table.source) for table in MAPPED_TABLES}
        frame, problems = validated_mapping(path, columns)
        if problems:
            error = MappingInvalid(path, problems)
            warehouse.notify(
                "mapping_invalid",
                "error",
                str(error),
                {"path": str(path), "problems": problems},
            )
            raise error
        con.register("mapping_rows", frame)
        rows = warehouse.replace_table(
            con,
            MAPPING_TABLE,
            "SELECT CAST($tenant_id AS VARCHAR) AS tenant_id, row, data_type, source_attribute, "
            "target_attribute, description FROM mapping_rows ORDER BY row",
            {"tenant_id": warehouse.tenant_id},
        )
        document_table(
            con,
            MAPPING_TABLE,
            f"The attribute mapping CSV ({path.name}) as the last successful run read it: one row "
            "per target attribute.",
            MAPPING_DOCS,
        )
        metadata = warehouse.table_metadata(con, MAPPING_TABLE, rows)
    metadata["path"] = dg.MetadataValue.path(str(path))
    metadata["duration_seconds"] = round(time.perf_counter() - started, 3)
    return dg.MaterializeResult(metadata=metadata)


def validated_mapping(path: Path, columns: dict[str, list[str]]) -> tuple[pl.DataFrame, list[str]]:
    """The mapping frame and its problems; an unreadable file is a problem, not a crash."""
    try:
        frame = read_mapping(path)
    except MappingInvalid as invalid:
        return pl.DataFrame(), invalid.problems
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        return pl.DataFrame(), [_unreadable(error)]
    return frame, mapping_problems(frame, columns)


def _unreadable(error: Exception) -> str:
    return (
        f"the mapping CSV cannot be read ({error}); mapping_path in the connector config names it"
    )


@dataclass(frozen=True)
class MappingRow:
    source: str
    target: str
    description: str | None


def mapping_rows(con: duckdb.DuckDBPyConnection, data_type: str) -> list[MappingRow]:
    """The rows of one data type from `ops.attribute_mapping`, in CSV order."""
    return [
        MappingRow(source, target, description)
        for source, target, description in con.execute(
            f"SELECT source_attribute, target_attribute, description FROM {MAPPING_TABLE} "
            "WHERE data_type = ? ORDER BY row",
            [data_type],
        ).fetchall()
    ]


def document_mapped_table(
    con: duckdb.DuckDBPyConnection, table: MappedTable, rows: list[MappingRow]
) -> dict[str, str]:
    """Comment `table.target`: each column with its CSV description (or, when the row has none,
    the comment of the source column), naming the source column; returns the column docs."""
    sources = column_comments(con, table.source)
    docs = {"tenant_id": TENANT_ID_DOC, "connector": CONNECTOR_DOC}
    for row in rows:
        said = (row.description or "").strip() or sources.get(row.source) or row.target
        docs[row.target] = f"{said.rstrip('.')}. From {table.source}.{row.source}."
    document_table(
        con,
        table.target,
        f"{table.data_type} target attributes of the Ivanti Neurons connector: one column per "
        f"{table.data_type} row of the mapping CSV, from {table.source}; "
        f"{table.view} has the same data with snake_case names.",
        docs,
    )
    return docs


def build_view(
    warehouse: Warehouse,
    con: duckdb.DuckDBPyConnection,
    table: MappedTable,
    rows: list[MappingRow],
    docs: dict[str, str],
) -> list[str]:
    """`table.view` over `table.target` with snake_case names (and lists as VARCHAR[]); its
    columns."""
    columns = {name: (name, docs[name]) for name in RESERVED_TARGETS}
    for row in rows:
        columns[snake_case(row.target)] = (quoted(row.target), f"{row.target}: {docs[row.target]}")
        if row.source in LIST_SOURCES:
            separator = LIST_SOURCES[row.source].replace("'", "''")
            columns[f"{snake_case(row.target)}_list"] = (
                f"list_filter(string_split({quoted(row.target)}, '{separator}'), x -> x <> '')",
                f"{row.target} as a list (VARCHAR[]): {docs[row.target]}",
            )
    select = ", ".join(f"{sql} AS {quoted(name)}" for name, (sql, _) in columns.items())
    warehouse.replace_view(
        con,
        table.view,
        f"SELECT {select} FROM {table.target}",
        f"{table.target} with names analysts can type: each target attribute in snake_case "
        "(User.UPN is user_upn), and comma-separated lists also as VARCHAR[] (<name>_list).",
        {name: text for name, (_, text) in columns.items()},
    )
    return list(columns)


def view_name_problems(frame: pl.DataFrame) -> list[str]:
    """Rows whose target attributes would give one snake_case view column twice (or none)."""
    problems = []
    for table in MAPPED_TABLES:
        taken = {name: f"the {name} column every mapped table has" for name in RESERVED_TARGETS}
        seen: set[str] = set()  # a target repeated in another case is already a problem
        for record in frame.filter(pl.col("data_type") == table.data_type).iter_rows(named=True):
            target, row = record["target_attribute"], record["row"]
            if target is None or target.lower() in seen or target.lower() in RESERVED_TARGETS:
                continue
            seen.add(target.lower())
            names = [snake_case(target)]
            if record["source_attribute"] in LIST_SOURCES:
                names.append(f"{names[0]}_list")
            for name in names:
                if not name:
                    problems.append(
                        f"row {row}: target_attribute {target!r} has no letter or digit to name "
                        f"its column in {table.view}; choose another name"
                    )
                elif name in taken:
                    problems.append(
                        f"row {row}: target_attribute {target!r} becomes {name} in {table.view}, "
                        f"as {taken[name]} does; rename one of them"
                    )
                else:
                    taken[name] = f"row {row}"
    return problems


def mapped_table_asset(table: MappedTable) -> dg.AssetsDefinition:
    """The asset that builds `table.target` from its filtered table and the mapping."""

    @dg.asset(
        key=table.key,
        group_name="neurons",
        deps=[ATTRIBUTE_MAPPING, table.source_key],
        kinds={"duckdb"},
        description=f"{table.data_type} target attributes: one column per {table.data_type} row "
        f"of the mapping CSV, read from {table.source}.",
        metadata={"dagster/table_name": table.target},
    )
    def _build(warehouse: Warehouse, connector: ConnectorResource) -> dg.MaterializeResult:
        started = time.perf_counter()
        with warehouse.transaction() as con:
            mapped = mapping_rows(con, table.data_type)
            select = mapped_select(
                [(row.source, row.target) for row in mapped],
                table.source,
                table_columns(con, table.source),
            )
            rows = warehouse.replace_table(
                con, table.target, select, {"connector": connector.settings.connector_name}
            )
            docs = document_mapped_table(con, table, mapped)
            view_columns = build_view(warehouse, con, table, mapped, docs)
            metadata = warehouse.table_metadata(con, table.target, rows)
        metadata["snake_case_view"] = dg.MetadataValue.md(
            f"`{table.view}`: " + ", ".join(f"`{name}`" for name in view_columns)
        )
        metadata["duration_seconds"] = round(time.perf_counter() - started, 3)
        return dg.MaterializeResult(metadata=metadata)

    return _build


def mapping_assets() -> list[dg.AssetsDefinition]:
    """`ops.attribute_mapping`, `neurons.users` and `neurons.devices`."""
    return [attribute_mapping, *(mapped_table_asset(table) for table in MAPPED_TABLES)]
