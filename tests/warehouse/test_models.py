"""The one SQL model runner: refs and sources, build order, macros, and its typed errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
import yaml

from entra_pipeline.warehouse.docs import column_comments, table_comment
from entra_pipeline.warehouse.errors import ModelError
from entra_pipeline.warehouse.models import (
    build_models,
    create_table,
    discover_models,
    in_build_order,
    read_model,
)


def write(root: Path, name: str, text: str, columns: dict[str, str] | None = None) -> Path:
    """A model file, and with `columns` its docs file beside it."""
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if columns is not None:
        docs = [{"name": column, "description": text} for column, text in columns.items()]
        path.with_suffix(".yml").write_text(yaml.safe_dump({"columns": docs}), encoding="utf-8")
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
    write(
        tmp_path,
        "s/a_last.sql",
        "-- A.\nSELECT n + 1 AS n FROM {{ ref('s.b_first') }}\n",
        {"n": "The answer."},
    )
    write(tmp_path, "s/b_first.sql", "-- B.\nSELECT 41 AS n\n", {"n": "Almost."})
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
        {"v": "As Graph wrote it.", "t": "Parsed."},
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


def test_a_model_is_documented_from_its_yaml_and_the_tables_it_names_in_columns_from(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        "s/people.sql",
        "-- People, with a greeting.\nSELECT id, name, 'hello ' || name AS greeting "
        "FROM {{ source('raw.people') }}\n",
    )
    (tmp_path / "s" / "people.yml").write_text(
        "columns_from: [raw.people]\n"
        "columns:\n"
        "  - name: greeting\n"
        "    description: >-\n"
        "      Hello and the name,\n"
        "      folded over two lines.\n",
        encoding="utf-8",
    )
    [model] = discover_models("s", tmp_path)
    with duckdb.connect() as con:
        con.execute("CREATE SCHEMA raw; CREATE TABLE raw.people AS SELECT 1 AS id, 'Ann' AS name")
        con.execute("COMMENT ON COLUMN raw.people.id IS 'Object id.'")
        con.execute("COMMENT ON COLUMN raw.people.name IS 'Display name.'")
        build_models(con, [model], {}, create_table)
        assert table_comment(con, "s.people") == "People, with a greeting."
        assert column_comments(con, "s.people") == {
            "id": "Object id.",
            "name": "Display name.",
            "greeting": "Hello and the name, folded over two lines.",
        }


@pytest.mark.parametrize(
    ("docs", "message"),
    [
        (None, r"s/plain\.yml: document the columns a, b of s\.plain \(or name a table"),
        ("columns:\n  - {name: a, description: A.}\n", r"document the columns b of s\.plain"),
        (
            "columns:\n  - {name: a, description: A.}\n  - {name: b, description: B.}\n"
            "  - {name: c, description: gone}\n",
            r"plain\.yml: s\.plain has no column 'c' to document \(its columns: a, b\)",
        ),
        ("columns:\n  - {name: a}\n", r"plain\.yml: each column is \{name, description\}"),
        (
            "columns:\n  - {name: a, description: A.}\n  - {name: a, description: B.}\n",
            r"column 'a' is documented twice",
        ),
        ("colums: []\n", r"plain\.yml: expected a mapping with columns"),
        ("columns: [\n", r"plain\.yml: not valid YAML"),
    ],
    ids=[
        "no docs file",
        "a column left out",
        "a stale column",
        "no description",
        "twice",
        "misspelt key",
        "broken YAML",
    ],
)
def test_a_model_whose_docs_are_missing_stale_or_malformed_is_a_model_error(
    tmp_path: Path, docs: str | None, message: str
) -> None:
    path = write(tmp_path, "s/plain.sql", "-- Plain.\nSELECT 1 AS a, 2 AS b\n")
    if docs is not None:
        path.with_suffix(".yml").write_text(docs, encoding="utf-8")
    with duckdb.connect() as con, pytest.raises(ModelError, match=message):
        build_models(con, [read_model(path, tmp_path)], {}, create_table)
