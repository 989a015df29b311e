"""pandera schemas for identity tables (users, devices) and the check results built from them.

The sources' blocking checks run these on the tables of the run's work copy; a failing check fails
the run, so the previously published tables stay in place (publish.py). A table is checked in
batches of VALIDATION_BATCH_ROWS rows read from DuckDB, so memory does not grow with the tenant;
uniqueness, which no batch can see, is DuckDB's `GROUP BY ... HAVING count(*) > 1` over the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import duckdb
import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from entra_pipeline.vocabulary import JOIN_TYPE_LABELS
from entra_pipeline.warehouse.metadata import markdown_table
from entra_pipeline.warehouse.resource import Warehouse
from entra_pipeline.warehouse.sql import quoted

# name@domain.tld; a guest's UPN carries #EXT# in its local part (alice_contoso.com#EXT#@x.com).
UPN_PATTERN = r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$"
EMAIL_PATTERN = r"^[^@\s#]+@[^@\s.]+(\.[^@\s.]+)+$"
# Graph stamps times with Microsoft's clocks; a few minutes of skew against ours is not an error.
CLOCK_SKEW = timedelta(minutes=5)
FAILURES_SHOWN = 50
VALIDATION_BATCH_ROWS = 100_000


@dataclass(frozen=True)
class IdentityColumns:
    """Which columns of an identity table get which rule.

    Object ids are required (unique, non-null); the other rules apply to the named columns that
    exist. Every timestamp column, whatever its name, must not be in the future.
    """

    object_ids: tuple[str, ...]
    upns: tuple[str, ...] = ()  # non-null, UPN-shaped
    optional_upns: tuple[str, ...] = ()  # UPN-shaped when present (manager, owner)
    emails: tuple[str, ...] = ()  # e-mail-shaped when present
    join_types: tuple[str, ...] = ()  # one of JOIN_TYPE_LABELS, or null


def identity_schema(
    name: str,
    columns: IdentityColumns,
    frame_schema: pl.Schema,
    now: datetime,
    *,
    unique: bool = True,
) -> pa.DataFrameSchema:
    """The pandera schema of an identity table whose columns are `frame_schema` (`unique=False`:
    a batch of the table, whose ids are checked for uniqueness over the whole table instead)."""
    present = set(frame_schema)
    rules: dict[str, pa.Column] = {}
    for column in columns.object_ids:
        rules[column] = pa.Column(nullable=False, unique=unique)
    for column in present.intersection(columns.upns):
        rules[column] = pa.Column(pl.String, _matches(UPN_PATTERN, "upn_shape"), nullable=False)
    for column in present.intersection(columns.optional_upns):
        rules[column] = pa.Column(pl.String, _matches(UPN_PATTERN, "upn_shape"), nullable=True)
    for column in present.intersection(columns.emails):
        rules[column] = pa.Column(pl.String, _matches(EMAIL_PATTERN, "email_shape"), nullable=True)
    for column in present.intersection(columns.join_types):
        rules[column] = pa.Column(pl.String, _join_type_known(), nullable=True)
    for column, dtype in frame_schema.items():
        if isinstance(dtype, pl.Datetime):
            rules[column] = pa.Column(checks=_not_after(now + CLOCK_SKEW), nullable=True)
    return pa.DataFrameSchema(rules, name=name, strict=False)


def _matches(pattern: str, name: str) -> pa.Check:
    return pa.Check(
        lambda data: data.lazyframe.select(
            pl.col(data.key).str.contains(pattern) | pl.col(data.key).is_null()
        ),
        name=name,
    )


def _join_type_known() -> pa.Check:
    # A named custom check: pandera reports a built-in isin under its arguments, not a name.
    return pa.Check(
        lambda data: data.lazyframe.select(
            pl.col(data.key).is_in(JOIN_TYPE_LABELS) | pl.col(data.key).is_null()
        ),
        name="join_type_known",
    )


def _not_after(limit: datetime) -> pa.Check:
    def check(data: Any) -> pl.LazyFrame:
        column = pl.col(data.key)
        zone = data.lazyframe.collect_schema()[data.key].time_zone
        # A naive timestamp is taken as UTC, like every timestamp the pipeline writes.
        utc = column.dt.convert_time_zone("UTC") if zone else column.dt.replace_time_zone("UTC")
        return data.lazyframe.select((utc <= limit) | column.is_null())

    return pa.Check(check, name="not_in_future")


@dataclass(frozen=True)
class CheckReport:
    """The outcome of validating one table: pandera's failure cases and the rows they point at."""

    table: str
    rows_checked: int
    failures: pl.DataFrame  # row_index, key columns, column, check, value; one per failure case
    failing_rows: pl.DataFrame  # the first FAILURES_SHOWN failing rows, whole

    @property
    def passed(self) -> bool:
        return self.failures.is_empty()


def validate_identity_table(
    frame: pl.DataFrame,
    table: str,
    columns: IdentityColumns,
    now: datetime,
    *,
    unique: bool = True,
    first_row: int = 0,
) -> CheckReport:
    """Run the identity schema over an eager frame (rows `first_row`.. of the table), collecting
    every failure (lazy=True)."""
    schema = identity_schema(table, columns, frame.schema, now, unique=unique)
    key_columns = [column for column in columns.object_ids if column in frame.columns]
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases
    else:
        cases = pl.DataFrame(
            schema={
                "failure_case": pl.String,
                "column": pl.String,
                "check": pl.String,
                "index": pl.Int32,
            }
        )
    failures = _failures_with_keys(cases, frame, key_columns)
    failing = failures["row_index"].drop_nulls().unique(maintain_order=True).head(FAILURES_SHOWN)
    return CheckReport(
        table,
        frame.height,
        failures.with_columns(pl.col("row_index") + first_row),
        frame[failing.to_list()],
    )


def validate_table_in_batches(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: IdentityColumns,
    now: datetime,
    batch_rows: int = VALIDATION_BATCH_ROWS,
) -> CheckReport:
    """`validate_identity_table` over `table` read in batches of `batch_rows`, and its object ids'
    uniqueness over the whole table from DuckDB: the same failures, in bounded memory."""
    # Rows are named by their rowid (the table's row number, as it was written) across batches.
    reader = con.execute(f"SELECT rowid AS {_ROWID}, * FROM {table}").to_arrow_reader(batch_rows)
    reports: list[CheckReport] = []
    checked = 0
    for batch in reader:
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        rowids = frame[_ROWID]
        report = validate_identity_table(frame.drop(_ROWID), table, columns, now, unique=False)
        failures = report.failures.with_columns(
            row_index=_rowids(report.failures["row_index"], rowids)
        )
        reports.append(CheckReport(table, frame.height, failures, report.failing_rows))
        checked += frame.height
    if not reports:  # an empty table: its columns still get checked
        empty = con.execute(f"SELECT * FROM {table} LIMIT 0").pl()
        reports.append(validate_identity_table(empty, table, columns, now, unique=False))
    present = set(reports[0].failing_rows.columns) | set(
        con.execute(f"SELECT * FROM {table} LIMIT 0").pl().columns
    )
    keys = [column for column in columns.object_ids if column in present]
    duplicates = [_duplicates(con, table, column, keys) for column in keys]
    failures = pl.concat([r.failures for r in reports] + duplicates, how="diagonal_relaxed").sort(
        "row_index", nulls_last=False
    )
    shown = failures["row_index"].drop_nulls().unique(maintain_order=True).head(FAILURES_SHOWN)
    failing_rows = (
        con.execute(
            f"SELECT * FROM {table} WHERE rowid IN (SELECT unnest(?)) ORDER BY rowid",
            [shown.to_list()],
        ).pl()
        if shown.len()
        else reports[0].failing_rows
    )
    return CheckReport(table, checked, failures, failing_rows)


def _duplicates(
    con: duckdb.DuckDBPyConnection, table: str, column: str, keys: list[str]
) -> pl.DataFrame:
    """pandera's `field_uniqueness` failure cases for `column` over the whole table: every row
    whose value appears more than once (row_index in table order)."""
    name = quoted(column)
    key_list = ", ".join(f"{quoted(k)}::VARCHAR AS {quoted(k)}" for k in keys)
    return con.execute(
        f"SELECT rowid AS row_index, {key_list}, ? AS column, 'field_uniqueness' AS check, "
        f"{name}::VARCHAR AS value FROM {table} WHERE {name} IN (SELECT {name} FROM {table} "
        f"WHERE {name} IS NOT NULL GROUP BY {name} HAVING count(*) > 1) ORDER BY rowid",
        [column],
    ).pl()


_ROWID = "__entra_rowid"


def _rowids(index: pl.Series, rowids: pl.Series) -> pl.Series:
    """A batch's row positions (null: a failure of the table, not a row) as table rowids."""
    return pl.Series(
        [None if i is None else int(rowids[i]) for i in index.to_list()], dtype=pl.Int64
    )


def _failures_with_keys(cases: pl.DataFrame, frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Pandera's failure cases with the failing row's object id(s) beside each."""
    indexed = (
        frame.select(keys).with_row_index("index").with_columns(pl.col("index").cast(pl.Int64))
    )
    return (
        cases.with_columns(pl.col("index").cast(pl.Int64))
        .join(indexed, on="index", how="left")
        .select(
            pl.col("index").alias("row_index"),
            *keys,
            # A missing column is reported against the table, naming the column as its value.
            pl.when(pl.col("check") == "column_in_dataframe")
            .then(pl.col("failure_case"))
            .otherwise(pl.col("column"))
            .alias("column"),
            pl.col("check"),
            pl.col("failure_case").alias("value"),
        )
        .sort("row_index", nulls_last=False)
    )


def check_result(warehouse: Warehouse, report: CheckReport) -> dg.AssetCheckResult:
    """The blocking check's result; a failure also writes `data_check_failed`."""
    if report.passed:
        return dg.AssetCheckResult(passed=True, metadata={"rows_checked": report.rows_checked})
    failures = report.failures
    counts = {
        f"{column}: {check}": count
        for column, check, count in failures.group_by("column", "check", maintain_order=True)
        .len()
        .iter_rows()
    }
    failing_indexes = failures["row_index"].drop_nulls().unique(maintain_order=True)
    shown = failures.head(FAILURES_SHOWN)
    rows = report.failing_rows
    more = (
        f"\n\nFirst {FAILURES_SHOWN} of {failures.height}."
        if failures.height > FAILURES_SHOWN
        else ""
    )
    warehouse.notify(
        "data_check_failed",
        "error",
        f"{report.table} failed its checks: {failing_indexes.len()} of {report.rows_checked} "
        f"rows ({', '.join(f'{name} x{count}' for name, count in counts.items())}); the "
        "previously published tables were kept.",
        {
            "table": report.table,
            "failure_counts": counts,
            "failures": shown.drop("row_index").to_dicts(),
        },
    )
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "rows_checked": report.rows_checked,
            "failing_row_count": failing_indexes.len(),
            "failure_counts": dg.MetadataValue.json(counts),
            "failures": dg.MetadataValue.md(markdown_table(shown.columns, shown.rows()) + more),
            "failing_rows": dg.MetadataValue.md(markdown_table(rows.columns, rows.rows())),
        },
    )


def check_identity_table(
    warehouse: Warehouse, table: str, columns: IdentityColumns
) -> dg.AssetCheckResult:
    """Check `table` of the run's work copy, in batches; reusable for `mdm.users`."""
    with warehouse.reader() as con:
        report = validate_table_in_batches(con, table, columns, datetime.now(UTC))
    return check_result(warehouse, report)
