"""The one Definitions object: assets, checks, jobs, schedules and resources, wired; no logic.

Reads the connector config named by ENTRA_CONNECTOR_CONFIG for the DuckDB path and schedules; with
no config yet, it still loads (runs then fail with a message saying which file to provide).
"""

from __future__ import annotations

import logging

import dagster as dg

from entra_pipeline.assets.mdm import MDM_GROUP, mdm_definitions
from entra_pipeline.assets.raw import RAW_GROUP, raw_entra
from entra_pipeline.assets.transform import transform_definitions
from entra_pipeline.freshness import FRESHNESS_CHECKS, freshness_definitions
from entra_pipeline.publish import Warehouse
from entra_pipeline.schedules import connector_schedule, user_source_schedule
from entra_pipeline.secrets import RedactingFilter
from entra_pipeline.sensors import sync_run_sensors
from entra_pipeline.settings import (
    ConfigError,
    ConnectorResource,
    ConnectorSettings,
    ScheduleOptions,
    UserSourceOptions,
    load_settings,
)

log = logging.getLogger(__name__)

CONNECTOR_JOB = "entra_id_sync"
CONNECTOR_GROUPS = (RAW_GROUP, "staging", "filtered", "mapping", "neurons")
MDM_JOB = "mdm_user_source_sync"


def build_definitions(
    settings: ConnectorSettings | None,
    config_path: str | None = None,
    connector: ConnectorResource | None = None,
) -> dg.Definitions:
    """Everything Dagster serves, for one connector configuration (None: not configured yet).

    `connector` overrides the connector resource (tests shorten its retry backoff)."""
    connector_job = dg.define_asset_job(
        CONNECTOR_JOB,
        selection=dg.AssetSelection.groups(*CONNECTOR_GROUPS) - FRESHNESS_CHECKS,
        description="The Entra ID connector: Graph -> raw -> staging -> filtered -> neurons.*",
        executor_def=dg.in_process_executor,
    )
    mdm_job = dg.define_asset_job(
        MDM_JOB,
        selection=dg.AssetSelection.groups(MDM_GROUP) - FRESHNESS_CHECKS,
        description="The MDM Entra ID user source: every user and group -> mdm.*, invitations",
        executor_def=dg.in_process_executor,
    )
    schedule_options = settings.schedule if settings else ScheduleOptions(active=False)
    user_source = settings.user_source if settings else UserSourceOptions(enabled=False)
    duckdb_path = settings.duckdb_path if settings else "data/entra.duckdb"
    tenant_id = settings.tenant_id if settings else ""
    base = dg.Definitions(
        assets=[raw_entra],
        jobs=[connector_job, mdm_job],
        schedules=[
            connector_schedule(schedule_options, connector_job),
            user_source_schedule(user_source, schedule_options.timezone, mdm_job),
        ],
        sensors=sync_run_sensors(
            duckdb_path, tenant_id, [connector_job, mdm_job], running=settings is not None
        ),
        resources={
            "warehouse": Warehouse(path=duckdb_path, tenant_id=tenant_id),
            "connector": connector or ConnectorResource(config_path=config_path),
        },
        executor=dg.in_process_executor,
    )
    return dg.Definitions.merge(
        base, transform_definitions(), mdm_definitions(), freshness_definitions(settings)
    )


def _settings_if_configured() -> ConnectorSettings | None:
    try:
        return load_settings()
    except ConfigError as error:
        log.warning("entra-pipeline is not configured yet (%s); schedules stay stopped", error)
        return None


@dg.definitions
def defs() -> dg.Definitions:
    """What `dagster dev`, `dg` and `dagster job execute` load (built when they load it)."""
    dagster_log = logging.getLogger("dagster")
    if not any(isinstance(f, RedactingFilter) for f in dagster_log.filters):
        dagster_log.addFilter(RedactingFilter())
    return build_definitions(_settings_if_configured())
