"""The identity checks in bounded memory: a table validated in batches read from DuckDB fails
exactly as the whole table validated at once, uniqueness across batches included."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pytest

from entra_pipeline.warehouse.validation import (
    IdentityColumns,
    validate_identity_table,
    validate_table_in_batches,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
COLUMNS = IdentityColumns(object_ids=("id",), upns=("upn",), emails=("mail",))


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE people AS SELECT * FROM (VALUES "
        "('a', 'a@contoso.com', 'a@contoso.com', TIMESTAMPTZ '2026-01-01 00:00:00+00'), "
        "('b', 'not a upn', NULL, NULL), "
        "('c', 'c@contoso.com', 'c#x@contoso.com', NULL), "
        "('a', 'a2@contoso.com', NULL, NULL), "  # a duplicate of row 0, in another batch
        "(NULL, 'e@contoso.com', NULL, TIMESTAMPTZ '2027-01-01 00:00:00+00'), "
        "('f', 'f@contoso.com', NULL, NULL), "
        "('c', 'c3@contoso.com', NULL, NULL)"
        ") AS t (id, upn, mail, created)"
    )
    return con


def _cases(report) -> set[tuple]:
    return set(report.failures.select("row_index", "column", "check", "value").rows())


@pytest.mark.parametrize("batch_rows", [1, 2, 3, 100])
def test_batches_fail_exactly_as_the_whole_table(
    con: duckdb.DuckDBPyConnection, batch_rows: int
) -> None:
    whole = validate_identity_table(con.sql("SELECT * FROM people").pl(), "people", COLUMNS, NOW)
    batched = validate_table_in_batches(con, "people", COLUMNS, NOW, batch_rows=batch_rows)
    assert _cases(batched) == _cases(whole)
    assert {case[2] for case in _cases(whole)} == {
        "field_uniqueness",
        "not_nullable",
        "upn_shape",
        "email_shape",
        "not_in_future",
    }
    assert batched.rows_checked == 7
    assert sorted(batched.failing_rows["upn"].to_list()) == sorted(
        whole.failing_rows["upn"].to_list()
    )


def test_an_empty_table_is_still_checked_for_its_columns(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE TABLE nobody (upn VARCHAR)")
    report = validate_table_in_batches(con, "nobody", COLUMNS, NOW)
    assert report.rows_checked == 0
    assert report.failures.select("column", "check").rows() == [("id", "column_in_dataframe")]
