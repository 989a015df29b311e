"""The one SQL model runner: refs and sources, build order, macros, and its typed errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from entra_pipeline.warehouse.errors import ModelError
from entra_pipeline.warehouse.models import (
    build_models,
    create_table,
    discover_models,
    in_build_order,
    read_model,
)


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_refs_name_models_and_sources_name_loaded_tables_including_depends_on(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "reports/active.sql",
        "-- Active users.\n\n-- depends_on: {{ source('raw.group_filters') }}\n"
        "SELECT u.id FROM {{ ref('staging.users') }} AS u "
        "JOIN {{ source('raw.users') }} AS r ON r.id = u.id\n",
    )
    model = read_model(path, tmp_path)
    assert model.refs == ("staging.users",)
    assert model.sources == ("raw.group_filters", "raw.users")
    assert model.description == "Active users."
    assert "FROM staging.users AS u JOIN raw.users AS r" in model.sql


def test_models_are_built_after_the_models_they_ref_whatever_their_file_order(
    tmp_path: Path,
) -> None:
    write(tmp_path, "s/a_last.sql", "-- A.\nSELECT n + 1 AS n FROM {{ ref('s.b_first') }}\n")
    write(tmp_path, "s/b_first.sql", "-- B.\nSELECT 41 AS n\n")
    models = discover_models("s", tmp_path)
    assert [m.table for m in models] == ["s.b_first", "s.a_last"]
    with duckdb.connect() as con:
        assert build_models(con, models, {}, create_table) == {"s.b_first": 1, "s.a_last": 1}
        assert con.execute("SELECT n FROM s.a_last").fetchall() == [(42,)]


def test_a_cycle_is_a_model_error_naming_the_files(tmp_path: Path) -> None:
    write(tmp_path, "s/x.sql", "-- X.\nSELECT * FROM {{ ref('s.y') }}\n")
    write(tmp_path, "s/y.sql", "-- Y.\nSELECT * FROM {{ ref('s.x') }}\n")
    with pytest.raises(ModelError, match=r"cycle: .*x\.sql, .*y\.sql"):
        discover_models("s", tmp_path)


def test_an_unknown_template_is_a_model_error(tmp_path: Path) -> None:
    path = write(tmp_path, "s/bad.sql", "-- Bad.\nSELECT * FROM {{ config('x') }}\n")
    with pytest.raises(ModelError, match=r"bad\.sql: only .*ref.*source"):
        read_model(path, tmp_path)


def test_graph_timestamp_macro_reads_never_as_null_and_fails_on_a_malformed_value(
    tmp_path: Path,
) -> None:
    # Only the macros a model calls are defined: kept_by_group_filter, which reads raw tables,
    # is not, so this builds on a database without any raw table.
    path = write(
        tmp_path,
        "s/times.sql",
        "-- Times.\nSELECT v, graph_timestamp(v) AS t FROM (SELECT unnest($values) AS v)\n",
    )
    model = read_model(path, tmp_path)
    values = ["", "0001-01-01T00:00:00Z", "2026-11-30T08:15:00Z", None]
    with duckdb.connect() as con:
        build_models(con, [model], {"values": values}, create_table)
        found = dict(con.execute("SELECT v, t FROM s.times").fetchall())
    assert found == {
        "": None,
        "0001-01-01T00:00:00Z": None,
        "2026-11-30T08:15:00Z": datetime(2026, 11, 30, 8, 15, tzinfo=UTC),
        None: None,
    }
    with duckdb.connect() as con, pytest.raises(duckdb.ConversionException):
        build_models(con, [model], {"values": ["last Tuesday"]}, create_table)


def test_models_of_one_folder_may_ref_another_folder_built_before(tmp_path: Path) -> None:
    write(tmp_path, "reports/guests.sql", "-- G.\nSELECT * FROM {{ ref('staging.users') }}\n")
    [model] = discover_models("reports", tmp_path)
    assert in_build_order([model]) == [model]
