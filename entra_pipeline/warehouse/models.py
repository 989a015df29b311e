"""The one SQL model runner: `dbt_like_sql/<schema>/<table>.sql` files built into DuckDB tables.

A model is a file and its name is its table. `{{ ref('staging.users') }}` names another model
(it is built first), `{{ source('raw.users') }}` a table something else loaded; both become the
table's name. `$name` is a DuckDB parameter the model's source binds from its options. The macros
in `dbt_like_sql/macros/` (one file per macro, named as it) are defined before the models that call
them are built.

Beside each model, `<table>.yml` documents its columns, dbt-style:

    columns_from: [raw.users]     # optional: a column not listed takes the comment of the
    columns:                      # same-named column of the first of these tables that has one
      - name: license_count
        description: Number of licences assigned to the user.

The model's leading comment describes the table. Both become the built table's DuckDB comments;
a column left undocumented, or a documented column the model does not build, is a ModelError.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import yaml

from entra_pipeline.warehouse.docs import column_comments, document_table
from entra_pipeline.warehouse.errors import ModelError
from entra_pipeline.warehouse.metadata import table_key

SQL_ROOT = Path(__file__).resolve().parents[2] / "dbt_like_sql"
MACROS = "macros"

_TEMPLATE = re.compile(r"\{\{\s*(ref|source)\(\s*'([A-Za-z_]\w*\.[A-Za-z_]\w*)'\s*\)\s*\}\}")
_PARAMETER = re.compile(r"\$([A-Za-z_]\w*)")
_GROUP = re.compile(r"^group:\s*(\w+)$")

# Bound parameters: by name ($name, what models use) or by position (?).
Parameters = Mapping[str, Any] | Sequence[Any]
# replace_table(con, table, select_sql, params) -> rows: how a model's table is written.
ReplaceTable = Callable[[duckdb.DuckDBPyConnection, str, str, Parameters], int]


@dataclass(frozen=True)
class Model:
    """One SQL model: the table it builds, what it reads, and the parameters it binds."""

    table: str
    path: Path
    sql: str  # refs and sources already replaced by table names
    refs: tuple[str, ...]  # models built before this one
    sources: tuple[str, ...]  # tables loaded by something other than a model
    parameters: tuple[str, ...]
    group: str
    description: str
    columns: Mapping[str, str]  # column -> description, from <table>.yml
    columns_from: tuple[str, ...]  # tables whose same-named columns' comments are inherited

    @property
    def key(self) -> dg.AssetKey:
        return table_key(self.table)

    @property
    def reads(self) -> tuple[str, ...]:
        return (*self.sources, *self.refs)


def read_model(path: Path, root: Path = SQL_ROOT) -> Model:
    """Parse one model file: `<root>/<schema>/<table>.sql` with a leading `--` comment."""
    relative = path.relative_to(root)
    if len(relative.parts) != 2:
        raise ModelError(f"{path}: models live at dbt_like_sql/<schema>/<table>.sql")
    schema, table = relative.parts[0], path.stem
    if not (schema.isidentifier() and table.isidentifier()):
        raise ModelError(f"{path}: schema folder and file name must be SQL identifiers")
    text = path.read_text(encoding="utf-8")
    header = _leading_comment(text)
    groups = [m.group(1) for line in header if (m := _GROUP.match(line))]
    kept = "\n".join(line for line in header if not _GROUP.match(line))
    description = re.sub(r"\n{3,}", "\n\n", kept).strip()
    sql = _TEMPLATE.sub(lambda m: m.group(2), text)
    if "{{" in sql:
        raise ModelError(
            f"{path}: only {{{{ ref('schema.table') }}}} and {{{{ source('schema.table') }}}} "
            "are understood in templates"
        )
    found = _TEMPLATE.findall(text)
    columns, columns_from = read_column_docs(path.with_suffix(".yml"))
    return Model(
        table=f"{schema}.{table}",
        path=path,
        sql=sql,
        refs=tuple(dict.fromkeys(name for kind, name in found if kind == "ref")),
        sources=tuple(dict.fromkeys(name for kind, name in found if kind == "source")),
        # DuckDB refuses parameters a statement does not use, so each model binds only its own.
        parameters=tuple(dict.fromkeys(_PARAMETER.findall(_without_comments(sql)))),
        group=groups[0] if groups else schema,
        description=description,
        columns=columns,
        columns_from=columns_from,
    )


def read_column_docs(path: Path) -> tuple[dict[str, str], tuple[str, ...]]:
    """(column -> description, columns_from) from a model's `<table>.yml` (none: nothing is
    documented, and building the model says what to write); a malformed file is a ModelError."""
    if not path.is_file():
        return {}, ()
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ModelError(f"{path}: not valid YAML ({error})") from None
    shape = "a mapping with columns: [{name, description}, ...] and optional columns_from: [...]"
    if not isinstance(document, dict) or set(document) - {"columns", "columns_from"}:
        raise ModelError(f"{path}: expected {shape}")
    entries = document.get("columns") or []
    sources = document.get("columns_from") or []
    if not isinstance(entries, list) or not isinstance(sources, list):
        raise ModelError(f"{path}: expected {shape}")
    columns: dict[str, str] = {}
    for entry in entries:
        if (
            not isinstance(entry, dict)
            or set(entry) != {"name", "description"}
            or not all(isinstance(v, str) and v.strip() for v in entry.values())
        ):
            raise ModelError(f"{path}: each column is {{name, description}}, got {entry!r}")
        if entry["name"] in columns:
            raise ModelError(f"{path}: column {entry['name']!r} is documented twice")
        columns[entry["name"]] = entry["description"]
    return columns, tuple(str(source) for source in sources)


def document_model(con: duckdb.DuckDBPyConnection, model: Model) -> None:
    """Comment the table `model` built: its description, and each column from its YAML or, for a
    column not listed, from the first `columns_from` table (already built) that documents it."""
    inherited: dict[str, str] = {}
    for source in reversed(model.columns_from):
        inherited.update({c: text for c, text in column_comments(con, source).items() if text})
    built = column_comments(con, model.table)
    docs = {column: inherited[column] for column in built if column in inherited}
    try:
        undocumented = document_table(
            con, model.table, model.description, {**docs, **model.columns}
        )
    except ValueError as error:
        raise ModelError(f"{model.path.with_suffix('.yml')}: {error}") from None
    if undocumented:
        raise ModelError(
            f"{model.path.with_suffix('.yml')}: document the columns "
            + ", ".join(undocumented)
            + f" of {model.table} (or name a table that documents them in columns_from)"
        )


def discover_models(schema: str, root: Path = SQL_ROOT) -> list[Model]:
    """Every model of one schema folder, in build order (a model after the models it refs)."""
    return in_build_order(
        [read_model(path, root) for path in sorted((root / schema).glob("*.sql"))]
    )


def in_build_order(models: Sequence[Model]) -> list[Model]:
    """`models` ordered so that each comes after the models of the set it refs (a ref outside the
    set must already be built); a cycle is a ModelError naming the files."""
    tables = {model.table for model in models}
    ordered: list[Model] = []
    pending = list(models)
    while pending:
        built = {model.table for model in ordered}
        ready = [model for model in pending if set(model.refs) & tables <= built]
        if not ready:
            raise ModelError(
                "models refer to each other in a cycle: " + ", ".join(str(m.path) for m in pending)
            )
        ordered += ready
        pending = [model for model in pending if model not in ready]
    return ordered


def bind_parameters(model: Model, available: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters `model` uses, from `available`; an unknown `$name` names the file."""
    unknown = [name for name in model.parameters if name not in available]
    if unknown:
        raise ModelError(
            f"{model.path}: unknown parameter ${unknown[0]}; models of {model.table.split('.')[0]} "
            "can use " + ", ".join(f"${name}" for name in available)
        )
    return {name: available[name] for name in model.parameters}


def prepare_connection(
    con: duckdb.DuckDBPyConnection, models: Sequence[Model], root: Path = SQL_ROOT
) -> None:
    """Define on `con` the macros `models` call, and read times in UTC (day arithmetic on
    TIMESTAMPTZ follows the session time zone: thresholds are in UTC).

    `macros/<name>.sql` defines the macro `<name>`; only the macros a model calls are defined,
    because DuckDB binds the tables a macro reads when it is created.
    """
    con.execute("SET TimeZone = 'UTC'")
    for path in sorted((root / MACROS).glob("*.sql")):
        called = re.compile(rf"\b{re.escape(path.stem)}\s*\(")
        if any(called.search(model.sql) for model in models):
            con.execute(path.read_text(encoding="utf-8"))


def define_macro(con: duckdb.DuckDBPyConnection, name: str, root: Path = SQL_ROOT) -> None:
    """Define the macro of `macros/<name>.sql` on `con`, for SQL that is not a model."""
    con.execute((root / MACROS / f"{name}.sql").read_text(encoding="utf-8"))


def build_model(
    con: duckdb.DuckDBPyConnection,
    model: Model,
    parameters: Mapping[str, Any],
    replace_table: ReplaceTable,
) -> int:
    """Build and document one model on a prepared connection; its row count."""
    rows = replace_table(con, model.table, model.sql, bind_parameters(model, parameters))
    document_model(con, model)
    return rows


def build_models(
    con: duckdb.DuckDBPyConnection,
    models: Sequence[Model],
    parameters: Mapping[str, Any],
    replace_table: ReplaceTable,
) -> dict[str, int]:
    """Build `models` in order on `con` (their macros defined first); rows per table."""
    prepare_connection(con, models)
    return {
        model.table: build_model(con, model, parameters, replace_table)
        for model in in_build_order(models)
    }


def create_table(
    con: duckdb.DuckDBPyConnection, table: str, select_sql: str, params: Parameters = ()
) -> int:
    """A plain `ReplaceTable`: the table in the connection's database, outside any warehouse run."""
    schema = table.split(".")[0]
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    bound = dict(params) if isinstance(params, Mapping) else list(params)
    con.execute(f"CREATE OR REPLACE TABLE {table} AS {select_sql}", bound)
    ((count,),) = con.execute(f"SELECT count(*) FROM {table}").fetchall()
    return int(count)


def _leading_comment(text: str) -> list[str]:
    """The `--` lines at the top of a file, without their markers."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[2:].removeprefix(" ").rstrip())
    return lines


def _without_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
