"""pandera schemas for the identity tables analysts read, and the blocking asset checks that run them.

A failing check fails the run, so the previously published `neurons.*` stay in place (publish.py).
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

from entra_pipeline.assets.mapping import MAPPED_TABLES, MAPPING_TABLE, MappedTable
from entra_pipeline.assets.models import markdown_table
from entra_pipeline.publish import Warehouse

NEURONS_USERS_CHECK = "neurons_users_valid"
NEURONS_DEVICES_CHECK = "neurons_devices_valid"
CHECK_NAMES = {"User": NEURONS_USERS_CHECK, "Device": NEURONS_DEVICES_CHECK}

# name@domain.tld; a guest's UPN carries #EXT# in its local part (alice_contoso.com#EXT#@x.com).
UPN_PATTERN = r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$"
EMAIL_PATTERN = r"^[^@\s#]+@[^@\s.]+(\.[^@\s.]+)+$"
JOIN_TYPE_LABELS = (
    "Microsoft Entra registered",
    "Microsoft Entra joined",
    "Hybrid Microsoft Entra joined",
)
# Graph stamps times with Microsoft's clocks; a few minutes of skew against ours is not an error.
CLOCK_SKEW = timedelta(minutes=5)
FAILURES_SHOWN = 50


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


# For the mapped tables a rule follows the source attribute, whatever target name the CSV gives it.
RULES_BY_SOURCE = {
    "id": "object_ids",
    "userPrincipalName": "upns",
    "manager_upn": "optional_upns",
    "owner_upn": "optional_upns",
    "mail": "emails",
    "join_type_label": "join_types",
}


def identity_schema(
    name: str, columns: IdentityColumns, frame_schema: pl.Schema, now: datetime
) -> pa.DataFrameSchema:
    """The pandera schema of an identity table whose columns are `frame_schema`."""
    present = set(frame_schema)
    rules: dict[str, pa.Column] = {}
    for column in columns.object_ids:
        rules[column] = pa.Column(nullable=False, unique=True)
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
    frame: pl.DataFrame  # the table as checked
    failures: pl.DataFrame  # row_index, key columns, column, check, value; one per failure case

    @property
    def rows_checked(self) -> int:
        return self.frame.height

    @property
    def passed(self) -> bool:
        return self.failures.is_empty()


def validate_identity_table(
    frame: pl.DataFrame, table: str, columns: IdentityColumns, now: datetime
) -> CheckReport:
    """Run the identity schema over an eager frame, collecting every failure (lazy=True)."""
    schema = identity_schema(table, columns, frame.schema, now)
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
    return CheckReport(table, frame, _failures_with_keys(cases, frame, key_columns))


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
    more = (
        f"\n\nFirst {FAILURES_SHOWN} of {failures.height}."
        if failures.height > FAILURES_SHOWN
        else ""
    )
    rows = report.frame[failing_indexes.head(FAILURES_SHOWN).to_list()]
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
    """Load `table` from the run's work copy and check it; reusable for `mdm.users`."""
    with warehouse.reader() as con:
        frame = con.sql(f"SELECT * FROM {table}").pl()
    return check_result(
        warehouse, validate_identity_table(frame, table, columns, datetime.now(UTC))
    )


def mapped_identity_columns(con: duckdb.DuckDBPyConnection, data_type: str) -> IdentityColumns:
    """The rules of a mapped table, found through the source attribute of each target."""
    rows = con.execute(
        f"SELECT source_attribute, target_attribute FROM {MAPPING_TABLE} WHERE data_type = ?",
        [data_type],
    ).fetchall()
    grouped: dict[str, list[str]] = {}
    for source, target in rows:
        if source in RULES_BY_SOURCE:
            grouped.setdefault(RULES_BY_SOURCE[source], []).append(target)
    rules = {rule: tuple(names) for rule, names in grouped.items()}
    return IdentityColumns(**{"object_ids": (), **rules})


def mapped_table_check(table: MappedTable) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=table.key,
        name=CHECK_NAMES[table.data_type],
        blocking=True,
        description=f"{table.target}: unique non-null object ids, UPN and e-mail shape, no "
        "timestamp in the future, join type in its enumeration (pandera).",
    )
    def _check(warehouse: Warehouse) -> dg.AssetCheckResult:
        with warehouse.reader() as con:
            columns = mapped_identity_columns(con, table.data_type)
        return check_identity_table(warehouse, table.target, columns)

    return _check


def transform_checks() -> list[dg.AssetChecksDefinition]:
    """The blocking checks of `neurons.users` and `neurons.devices`."""
    return [mapped_table_check(table) for table in MAPPED_TABLES]
