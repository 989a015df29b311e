"""Many connectors (docs/scaling-out.md): `ENTRA_CONNECTOR_CONFIG` naming a folder of connector
configs, each a key of the `connectors` dynamic partitioning.

The two jobs and every asset are the single connector's, partitioned by connector; a run is one
connector's (its partition), with that connector's settings, secrets, DuckDB file or lake
publication, resolved from the run's partition when the run starts. One sensor keeps the
partitions in step with the folder (a file added adds its connector, a file removed retires it)
and starts each connector's runs on its own schedule. A connector whose file is invalid, or whose
run fails, stops nobody else: each run is its own. The hourly freshness checks judge every
connector by its own file and schedule.
"""

from __future__ import annotations

import functools
import json
import logging
import warnings
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from entra_pipeline.connector.definitions import connector_definitions
from entra_pipeline.connector.schedule import connector_cron
from entra_pipeline.connector_folder import ConnectorFile, load_fleet
from entra_pipeline.dagster_private import cron_string_iterator
from entra_pipeline.names import CONNECTOR_JOB, CONNECTORS_PARTITIONS, USER_SOURCE_JOB
from entra_pipeline.operations.freshness import (
    FRESHNESS_CHECKS,
    Published,
    fleet_freshness_definitions,
    published_by,
)
from entra_pipeline.operations.sensors import sync_run_sensors
from entra_pipeline.resources import ConnectorResource
from entra_pipeline.run_tags import run_tags
from entra_pipeline.settings import ConfigError, ScheduleOptions, UserSourceOptions
from entra_pipeline.user_source.definitions import user_source_definitions
from entra_pipeline.user_source.schedule import interval_crons
from entra_pipeline.warehouse.resource import Warehouse

log = logging.getLogger(__name__)

CONNECTORS = dg.DynamicPartitionsDefinition(name=CONNECTORS_PARTITIONS)
CONNECTORS_SENSOR = "entra_connectors"
PARTITION_TAG = "dagster/partition"


def connector_of(folder: Path, context: dg.InitResourceContext) -> ConnectorFile:
    """The connector of the run being initialised: its partition key, in the folder as it is
    now (a file added since the code location loaded counts). The folder is read and validated
    once per run: both resources of the run take their connector from that one read."""
    run = context.run
    slug = run.tags.get(PARTITION_TAG) if run is not None else None
    if not slug:
        raise ConfigError(
            f"{folder} is a folder of connectors: a run is one connector's, so give it a "
            f"partition (one of the {CONNECTORS_PARTITIONS} partitions, e.g. from the launchpad)"
        )
    assert run is not None
    return _connector_of_run(folder, slug, run.run_id)


@functools.lru_cache(maxsize=16)
def _connector_of_run(folder: Path, slug: str, run_id: str) -> ConnectorFile:
    fleet = load_fleet(folder)
    found = fleet.connectors.get(slug)
    if found is None:
        why = next(
            (f": {problem}" for problem in fleet.invalid.values() if slug in problem),
            f": no config in {folder} has a connector_name whose slug is {slug!r}",
        )
        raise ConfigError(f"connector {slug!r} cannot run{why}")
    return found


def fleet_resources(
    folder: Path, connector_options: Mapping[str, Any] | None = None
) -> dict[str, dg.ResourceDefinition]:
    """`warehouse` and `connector`, each built for the run's connector when the run starts."""

    @dg.resource(description="The run's connector's warehouse (its DuckDB file, or the lake).")
    def warehouse(context: dg.InitResourceContext) -> Iterator[Warehouse]:
        resource = Warehouse.of(connector_of(folder, context).settings)
        # What Dagster does for a Pythonic resource it builds itself: begin, and publish at the end.
        resource.setup_for_execution(context)
        try:
            yield resource
        finally:
            resource.teardown_after_execution(context)

    @dg.resource(description="The run's connector's configuration and Graph client.")
    def connector(context: dg.InitResourceContext) -> ConnectorResource:
        file = connector_of(folder, context)
        return ConnectorResource(
            config_path=str(file.path), **dict(connector_options or {})
        ).with_settings(file.settings)

    return {"warehouse": warehouse, "connector": connector}


def fleet_definitions(
    folder: Path, *, connector_options: Mapping[str, Any] | None = None
) -> dg.Definitions:
    """Everything Dagster serves for a folder of connectors (`connector_options`: the connector
    resource's knobs, e.g. tests' short retry backoff)."""
    inactive = ScheduleOptions(active=False)
    sources = dg.Definitions.merge(
        connector_definitions(inactive, excluded=FRESHNESS_CHECKS),
        user_source_definitions(
            UserSourceOptions(enabled=False), inactive.timezone, excluded=FRESHNESS_CHECKS
        ),
    )
    jobs = list(sources.jobs or ())
    # The single connector's assets, partitioned by connector; its schedules give way to the
    # sensor, which knows each connector's own.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # map_asset_specs, in Dagster 1.13
        partitioned = dg.Definitions(
            assets=list(sources.assets or ()),
            asset_checks=list(sources.asset_checks or ()),
            jobs=jobs,
        ).map_asset_specs(func=lambda spec: spec.replace_attributes(partitions_def=CONNECTORS))

    def published() -> dict[str, Published]:
        # The folder as it is when the checks run: a connector added since the code location
        # loaded counts. (Dagster 1.13 checks are per asset, not per partition: one result
        # for the folder, naming its stale connectors.)
        connectors = load_fleet(folder).connectors.values()
        return {c.settings.connector_name: published_by(c.settings) for c in connectors}

    return dg.Definitions.merge(
        partitioned,
        fleet_freshness_definitions(published),
        dg.Definitions(
            sensors=[
                connectors_sensor(folder),
                # Path and tenant from each run's tags: every connector has its own.
                *sync_run_sensors("", "", jobs, running=True),
            ],
            resources=fleet_resources(folder, connector_options),
            executor=dg.in_process_executor,
        ),
    )


def due_ticks(crons: list[str], timezone: str, after: datetime, until: datetime) -> list[datetime]:
    """The ticks of `crons` in (after, until]."""
    ticks = []
    for cron in crons:
        for tick in cron_string_iterator(after.timestamp(), cron, timezone):
            if tick.timestamp() > until.timestamp():
                break
            if tick.timestamp() > after.timestamp():
                ticks.append(tick)
    return sorted(ticks)


def connectors_sensor(folder: Path) -> dg.SensorDefinition:
    @dg.sensor(
        name=CONNECTORS_SENSOR,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        jobs=None,
        description=f"Keeps the {CONNECTORS_PARTITIONS} partitions in step with {folder} and "
        "starts each connector's entra_id_sync and mdm_user_source_sync on its own schedule.",
    )
    def entra_connectors(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        return evaluate_fleet(context, folder)

    return entra_connectors


def evaluate_fleet(context: dg.SensorEvaluationContext, folder: Path) -> dg.SensorResult:
    """One sensor tick: partitions added and deleted, and the runs each connector's schedule
    says are due since the previous tick (none for a tick missed while the sensor was off:
    the next one follows)."""
    now = datetime.now(UTC)
    try:
        fleet = load_fleet(folder)
    except ConfigError as error:
        return dg.SensorResult(skip_reason=str(error))
    for file, problem in fleet.invalid.items():
        context.log.warning(f"{file.name} cannot run: {problem}")
    existing = set(context.instance.get_dynamic_partitions(CONNECTORS_PARTITIONS))
    wanted = set(fleet.connectors)
    cursor: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    requests: list[dg.RunRequest] = []
    for slug, connector in sorted(fleet.connectors.items()):
        settings = connector.settings
        after = datetime.fromisoformat(cursor[slug]) if slug in cursor else now
        schedule = settings.schedule
        jobs: list[tuple[str, list[str], str]] = []
        if schedule.active:
            jobs.append((CONNECTOR_JOB, [connector_cron(schedule)], schedule.timezone))
        source = settings.user_source
        if source.enabled:
            crons = interval_crons(source.sync_interval_minutes)
            jobs.append((USER_SOURCE_JOB, crons, schedule.timezone))
        for job, crons, timezone in jobs:
            ticks = due_ticks(crons, timezone, after, now)
            if ticks:
                tick = ticks[-1]
                requests.append(
                    dg.RunRequest(
                        job_name=job,
                        partition_key=slug,
                        run_key=f"{job}:{slug}:{tick.isoformat()}",
                        tags=run_tags(settings, str(connector.path)),
                    )
                )
        cursor[slug] = now.isoformat()
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[
            request
            for request in (
                CONNECTORS.build_add_request(sorted(wanted - existing)),
                CONNECTORS.build_delete_request(sorted(existing - wanted)),
            )
            if request.partition_keys
        ],
        cursor=json.dumps({slug: cursor[slug] for slug in wanted}),
    )
