"""The SQL models in `dbt_like_sql/` as Dagster assets: one `.sql` file, one table, one asset.

`dbt_like_sql/staging/users.sql` builds `staging.users`; `{{ ref('raw.users') }}` names a dependency
and becomes the table name; `$name` is a DuckDB parameter bound from the connector settings.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from entra_pipeline.publish import Warehouse
from entra_pipeline.settings import ConnectorResource, ConnectorSettings

SQL_ROOT = Path(__file__).resolve().parents[2] / "dbt_like_sql"
PREVIEW_ROWS = 10

_REF = re.compile(r"\{\{\s*ref\(\s*'([A-Za-z_]\w*\.[A-Za-z_]\w*)'\s*\)\s*\}\}")
_PARAMETER = re.compile(r"\$([A-Za-z_]\w*)")
_GROUP = re.compile(r"^group:\s*(\w+)$")


@dataclass(frozen=True)
class Model:
    """One SQL model: the table it builds, what it reads, and the parameters it binds."""

    table: str
    path: Path
    sql: str  # refs already replaced by table names
    refs: tuple[str, ...]
    parameters: tuple[str, ...]
    group: str
    description: str

    @property
    def key(self) -> dg.AssetKey:
        return dg.AssetKey(self.table.split("."))


def model_parameters(settings: ConnectorSettings, now: datetime) -> dict[str, Any]:
    """Every value a model may use as `$name`: the connector options and the run's start time."""
    return {
        "now": now,
        "user_stale_days": settings.users.stale_threshold_days,
        "device_stale_days": settings.devices.stale_threshold_days,
        "join_types": list(settings.devices.join_types),
    }


def read_model(path: Path, root: Path = SQL_ROOT) -> Model:
    """Parse one model file: `<root>/<schema>/<table>.sql` with a leading `--` comment."""
    relative = path.relative_to(root)
    if len(relative.parts) != 2:
        raise ValueError(f"{path}: models live at dbt_like_sql/<schema>/<table>.sql")
    schema, table = relative.parts[0], path.stem
    if not (schema.isidentifier() and table.isidentifier()):
        raise ValueError(f"{path}: schema folder and file name must be SQL identifiers")
    text = path.read_text(encoding="utf-8")
    header = _leading_comment(text)
    groups = [m.group(1) for line in header if (m := _GROUP.match(line))]
    kept = "\n".join(line for line in header if not _GROUP.match(line))
    description = re.sub(r"\n{3,}", "\n\n", kept).strip()
    sql = _REF.sub(lambda m: m.group(1), text)
    if "{{" in sql:
        raise ValueError(f"{path}: only {{{{ ref('schema.table') }}}} is understood in templates")
    return Model(
        table=f"{schema}.{table}",
        path=path,
        sql=sql,
        refs=tuple(dict.fromkeys(_REF.findall(text))),
        # DuckDB refuses parameters a statement does not use, so each model binds only its own.
        parameters=tuple(dict.fromkeys(_PARAMETER.findall(_without_comments(sql)))),
        group=groups[0] if groups else schema,
        description=description,
    )


def discover_models(root: Path = SQL_ROOT) -> list[Model]:
    """Every model under `root`, in path order."""
    return [read_model(path, root) for path in sorted(root.glob("*/*.sql"))]


def model_asset(model: Model) -> dg.AssetsDefinition:
    """The asset that rebuilds `model.table` in the run's work copy."""

    @dg.asset(
        key=model.key,
        group_name=model.group,
        description=model.description,
        deps=[dg.AssetKey(ref.split(".")) for ref in model.refs],
        kinds={"duckdb", "sql"},
        metadata={"dagster/table_name": model.table, "sql_file": str(model.path.name)},
    )
    def _build(warehouse: Warehouse, connector: ConnectorResource) -> dg.MaterializeResult:
        started = time.perf_counter()
        settings = connector.settings
        params = bind_parameters(model, settings, warehouse.run.started_at)
        with warehouse.transaction() as con:
            # Day arithmetic on TIMESTAMPTZ follows the session time zone: thresholds are in UTC.
            con.execute("SET TimeZone = 'UTC'")
            rows = warehouse.replace_table(con, model.table, model.sql, params)
            for notice in AFTER_BUILD.get(model.table, ()):
                notice(con, warehouse, settings)
            metadata = table_metadata(con, model.table, rows)
        metadata["duration_seconds"] = round(time.perf_counter() - started, 3)
        return dg.MaterializeResult(metadata=metadata)

    return _build


def bind_parameters(model: Model, settings: ConnectorSettings, now: datetime) -> dict[str, Any]:
    """The parameters `model` uses, from the settings; an unknown `$name` names the file."""
    available = model_parameters(settings, now)
    unknown = [name for name in model.parameters if name not in available]
    if unknown:
        raise ValueError(
            f"{model.path}: unknown parameter ${unknown[0]}; models can use "
            + ", ".join(f"${name}" for name in available)
        )
    return {name: available[name] for name in model.parameters}


def model_assets(root: Path = SQL_ROOT) -> list[dg.AssetsDefinition]:
    """One asset per SQL model."""
    return [model_asset(model) for model in discover_models(root)]


def table_metadata(con: duckdb.DuckDBPyConnection, table: str, rows: int) -> dict[str, Any]:
    """Row count, column schema and a markdown preview of `table`, for a materialization."""
    described = con.execute(f"DESCRIBE {table}").fetchall()
    preview = con.execute(f"SELECT * FROM {table} LIMIT {PREVIEW_ROWS}")
    names = [column[0] for column in preview.description or []]
    return {
        "dagster/row_count": rows,
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name=row[0], type=str(row[1])) for row in described]
        ),
        "preview": dg.MetadataValue.md(markdown_table(names, preview.fetchall())),
    }


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


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """The columns of `schema.table` in the connection's database, in table order."""
    schema, _, name = table.partition(".")
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? AND table_catalog = current_database() "
        "ORDER BY ordinal_position",
        [schema, name],
    ).fetchall()
    return [row[0] for row in rows]


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


def _warn_when_user_stale_filter_skipped(
    con: duckdb.DuckDBPyConnection, warehouse: Warehouse, settings: ConnectorSettings
) -> None:
    """SPEC 3: the user stale threshold needs sign-in activity; say why it was not applied."""
    days = settings.users.stale_threshold_days
    if days is None:
        return
    found = con.execute(
        "SELECT status, reason FROM raw.extraction_status WHERE collection = 'sign_in_activity'"
    ).fetchall()
    if any(status == "complete" for status, _ in found):
        return
    status, reason = found[0] if found else ("missing", None)
    reason = reason or "sign-in activity was not imported in this run"
    warehouse.notify(
        "stale_filter_skipped",
        "warning",
        f"The user stale threshold of {days} days was not applied because sign-in activity was "
        f"not imported ({reason}); every licensed user was kept.",
        {"stale_threshold_days": days, "sign_in_activity_status": status, "reason": reason},
    )


# Notifications a model raises about what it just built (run inside its transaction).
AFTER_BUILD: dict[
    str, tuple[Callable[[duckdb.DuckDBPyConnection, Warehouse, ConnectorSettings], None], ...]
] = {
    "staging.filtered_users": (_warn_when_user_stale_filter_skipped,),
}
