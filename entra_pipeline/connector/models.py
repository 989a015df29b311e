"""The connector's SQL models (`dbt_like_sql/staging/`) as Dagster assets: one file, one asset.

Each asset builds its table in the run's work copy through the one model runner; the options it
binds come from the connector settings, the run's start time and what the raw layer recorded.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime
from typing import Any

import dagster as dg
import duckdb

from entra_pipeline.connector.raw_layer import sign_in_imported
from entra_pipeline.resources import ConnectorResource
from entra_pipeline.settings import ConnectorSettings
from entra_pipeline.vocabulary import JOIN_TYPES
from entra_pipeline.warehouse.metadata import table_key
from entra_pipeline.warehouse.models import Model, build_model, discover_models, prepare_connection
from entra_pipeline.warehouse.resource import Warehouse

MODELS_SCHEMA = "staging"


def connector_parameters(
    settings: ConnectorSettings, now: datetime, con: duckdb.DuckDBPyConnection
) -> dict[str, Any]:
    """Every value a connector model may use as `$name`."""
    return {
        "now": now,
        "user_stale_days": settings.users.stale_threshold_days,
        "device_stale_days": settings.devices.stale_threshold_days,
        "join_types": list(settings.devices.join_types),
        "join_type_vocabulary": [asdict(join_type) for join_type in JOIN_TYPES],
        "sign_in_imported": sign_in_imported(con),
        "licence_idle_days": settings.reports.licence_idle_days,
        "device_hygiene_days": settings.reports.device_hygiene_days,
    }


def connector_models() -> list[Model]:
    """The staging and filtered models, in build order."""
    return discover_models(MODELS_SCHEMA)


def model_asset(model: Model) -> dg.AssetsDefinition:
    """The asset that rebuilds `model.table` in the run's work copy."""

    @dg.asset(
        key=model.key,
        group_name=model.group,
        description=model.description,
        deps=[table_key(table) for table in model.reads],
        kinds={"duckdb", "sql"},
        metadata={"dagster/table_name": model.table, "sql_file": str(model.path.name)},
    )
    def _build(warehouse: Warehouse, connector: ConnectorResource) -> dg.MaterializeResult:
        started = time.perf_counter()
        with warehouse.transaction() as con:
            prepare_connection(con, [model])
            parameters = connector_parameters(connector.settings, warehouse.run.started_at, con)
            rows = build_model(con, model, parameters, warehouse.replace_table)
            metadata = warehouse.table_metadata(con, model.table, rows)
        metadata["duration_seconds"] = round(time.perf_counter() - started, 3)
        return dg.MaterializeResult(metadata=metadata)

    return _build


REPORTS_SCHEMA = "reports"


def report_models() -> list[Model]:
    """The `reports.*` models (over the staging models), in build order."""
    return discover_models(REPORTS_SCHEMA)


def model_assets() -> list[dg.AssetsDefinition]:
    """One asset per connector model and per report."""
    return [model_asset(model) for model in (*connector_models(), *report_models())]


def report_checks() -> list[dg.AssetChecksDefinition]:
    """Per report a warning-severity check: its row count, failing (a warning, never blocking
    the publication) while the report has rows."""
    return [_report_check(model) for model in report_models()]


def _report_check(model: Model) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=model.key,
        name=f"{model.table.split('.')[1]}_empty",
        description=f"{model.table} has no rows (a warning while it has some).",
        blocking=False,
    )
    def _check(warehouse: Warehouse) -> dg.AssetCheckResult:
        with warehouse.reader() as con:
            [(rows,)] = con.execute(f"SELECT count(*) FROM {model.table}").fetchall()
        return dg.AssetCheckResult(
            passed=rows == 0,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{rows} rows in {model.table}",
            metadata={"rows": int(rows)},
        )

    return _check
