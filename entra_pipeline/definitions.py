"""The one Definitions object: each source's Definitions merged, with the policy applied across
them (freshness checks, run-status sensors, the shared resources); no logic.

Reads the connector config named by ENTRA_CONNECTOR_CONFIG once, when the code location loads:
the warehouse path, schedules, sensors and freshness all take it from that one parse. With no
config yet it still loads (runs then fail with a message saying which file to provide).
"""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg

from entra_pipeline.actions.job import actions_job
from entra_pipeline.config_file import config_path as config_file
from entra_pipeline.config_file import configured_duckdb_path, load_settings
from entra_pipeline.connector.definitions import connector_definitions
from entra_pipeline.connector_folder import is_fleet
from entra_pipeline.operations.freshness import FRESHNESS_CHECKS, freshness_definitions
from entra_pipeline.operations.sensors import sync_run_sensors
from entra_pipeline.resources import ConnectorResource
from entra_pipeline.run_tags import run_tags
from entra_pipeline.secrets import RedactingFilter
from entra_pipeline.settings import (
    DEFAULT_DUCKDB_PATH,
    ConfigError,
    ConnectorSettings,
    ScheduleOptions,
    UserSourceOptions,
)
from entra_pipeline.user_source.definitions import user_source_definitions
from entra_pipeline.warehouse.resource import Warehouse

log = logging.getLogger(__name__)


def build_definitions(
    settings: ConnectorSettings | None,
    config_path: str | None = None,
    connector: ConnectorResource | None = None,
    *,
    unconfigured_duckdb_path: str | None = None,
) -> dg.Definitions:
    """Everything Dagster serves, for one connector configuration (None: not configured yet, or
    invalid; its runs fail, recorded in `unconfigured_duckdb_path` when the file names one).

    `connector` overrides the connector resource (tests shorten its retry backoff)."""
    schedule = settings.schedule if settings else ScheduleOptions(active=False)
    user_source = settings.user_source if settings else UserSourceOptions(enabled=False)
    duckdb_path = (
        settings.duckdb_path if settings else unconfigured_duckdb_path or DEFAULT_DUCKDB_PATH
    )
    tenant_id = settings.tenant_id if settings else ""
    tags = run_tags(settings, config_path)
    sources = dg.Definitions.merge(
        connector_definitions(schedule, excluded=FRESHNESS_CHECKS, tags=tags),
        user_source_definitions(
            user_source, schedule.timezone, excluded=FRESHNESS_CHECKS, tags=tags
        ),
    )
    configured = settings is not None
    policy = dg.Definitions(
        sensors=sync_run_sensors(
            duckdb_path, tenant_id, list(sources.jobs or ()), running=configured
        ),
        resources={
            "warehouse": Warehouse.of(settings)
            if settings
            else Warehouse(path=duckdb_path, tenant_id=tenant_id),
            "connector": connector or ConnectorResource(config_path=config_path),
        },
        executor=dg.in_process_executor,
    )
    freshness = freshness_definitions(
        schedule, user_source, Path(duckdb_path), tenant_id, running=configured
    )
    actions = dg.Definitions(jobs=[actions_job(tags)] if settings and settings.actions else [])
    return dg.Definitions.merge(sources, policy, freshness, actions)


def load_definitions() -> dg.Definitions:
    """The Definitions of the config named by ENTRA_CONNECTOR_CONFIG, valid or not: one
    connector's, or a folder's (fleet.py)."""
    if is_fleet():
        from entra_pipeline.fleet import fleet_definitions

        return fleet_definitions(config_file())
    try:
        settings = load_settings()
    except ConfigError as error:
        log.warning("entra-pipeline is not configured yet (%s); schedules stay stopped", error)
        return build_definitions(None, unconfigured_duckdb_path=configured_duckdb_path())
    return build_definitions(settings)


@dg.definitions
def defs() -> dg.Definitions:
    """What `dagster dev`, `dg` and `dagster job execute` load (built when they load it)."""
    dagster_log = logging.getLogger("dagster")
    if not any(isinstance(f, RedactingFilter) for f in dagster_log.filters):
        dagster_log.addFilter(RedactingFilter())
    return load_definitions()
