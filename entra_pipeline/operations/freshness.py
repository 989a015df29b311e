"""Freshness of the published tables: a WARN asset check per table, read from `ops.sync_runs` alone.

A table is stale when its job's last successful sync is older than twice the schedule's period
(hourly 2 h, daily 48 h, weekly 14 d; the MDM user source twice its interval). The checks run on
their own schedule, never inside a sync (where the run being made is not recorded yet).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from entra_pipeline.names import CONNECTOR_JOB, USER_SOURCE_JOB
from entra_pipeline.settings import ConnectorSettings, ScheduleOptions, UserSourceOptions
from entra_pipeline.warehouse.metadata import table_key
from entra_pipeline.warehouse.publish import query_sync_runs

FRESHNESS_JOB = "freshness_checks"
FRESHNESS_SCHEDULE = "freshness_checks_schedule"
# Hourly, off the hour: a connector syncing on the hour has finished by then.
FRESHNESS_CRON = "30 * * * *"
STALE_AFTER_PERIODS = 2
CONNECTOR_PERIODS = {
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
    "weekly": timedelta(weeks=1),
}


@dataclass(frozen=True)
class FreshnessTarget:
    """A published table, the job that publishes it, and how often that job is scheduled."""

    table: str
    job: str

    @property
    def asset(self) -> dg.AssetKey:
        return table_key(self.table)

    @property
    def check_name(self) -> str:
        return f"{self.table.replace('.', '_')}_fresh"

    @property
    def check_key(self) -> dg.AssetCheckKey:
        return dg.AssetCheckKey(self.asset, self.check_name)


CONNECTOR_TARGETS = (
    FreshnessTarget("neurons.users", CONNECTOR_JOB),
    FreshnessTarget("neurons.devices", CONNECTOR_JOB),
)
USER_SOURCE_TARGETS = (FreshnessTarget("mdm.users", USER_SOURCE_JOB),)
TARGETS = (*CONNECTOR_TARGETS, *USER_SOURCE_TARGETS)
# What the sync jobs leave out: they select whole groups, and a check inside a sync would judge a
# run that has not been recorded yet.
FRESHNESS_CHECKS = dg.AssetSelection.checks(*(target.check_key for target in TARGETS))


def connector_period(options: ScheduleOptions) -> timedelta:
    return CONNECTOR_PERIODS[options.repeats]


def user_source_period(options: UserSourceOptions) -> timedelta:
    return timedelta(minutes=options.sync_interval_minutes)


def last_successful_sync(path: Path, tenant_id: str, job: str) -> datetime | None:
    """When `job` last finished successfully, from the published file (None: never, or no file)."""
    found = query_sync_runs(
        path,
        "SELECT max(finished_at) FROM ops.sync_runs "
        "WHERE job = ? AND tenant_id = ? AND status = 'success'",
        [job, tenant_id],
    )
    return found[0][0].astimezone(UTC) if found and found[0][0] else None


def freshness_result(
    target: FreshnessTarget,
    path: Path,
    tenant_id: str,
    period: timedelta,
    now: datetime,
) -> dg.AssetCheckResult:
    """Passed when `target.job` succeeded within `STALE_AFTER_PERIODS` periods before `now`."""
    max_age = period * STALE_AFTER_PERIODS
    last = last_successful_sync(path, tenant_id, target.job)
    metadata: dict[str, Any] = {
        "job": target.job,
        "max_age_hours": round(max_age.total_seconds() / 3600, 2),
        "duckdb_path": dg.MetadataValue.path(str(path)),
    }
    if last is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{target.table} has never been published: ops.sync_runs has no "
            f"successful {target.job} run",
            metadata=metadata,
        )
    age = now - last
    metadata["last_success_at"] = dg.MetadataValue.timestamp(last)
    metadata["age_hours"] = round(age.total_seconds() / 3600, 2)
    fresh = age <= max_age
    return dg.AssetCheckResult(
        passed=fresh,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{target.table} was last published by {target.job} at {last:%Y-%m-%d %H:%M} UTC, "
            f"{_duration(age)} ago; stale after {_duration(max_age)} (twice the schedule's period)"
        ),
        metadata=metadata,
    )


@dataclass(frozen=True)
class Published:
    """Where a connector publishes (its file and tenant), and its schedules' periods."""

    path: Path
    tenant_id: str
    connector_period: timedelta
    user_source_period: timedelta

    def period(self, target: FreshnessTarget) -> timedelta:
        return self.user_source_period if target.job == USER_SOURCE_JOB else self.connector_period


def published_by(settings: ConnectorSettings) -> Published:
    return Published(
        Path(settings.duckdb_path),
        settings.tenant_id,
        connector_period(settings.schedule),
        user_source_period(settings.user_source),
    )


def fleet_freshness_result(
    target: FreshnessTarget, connectors: Mapping[str, Published], now: datetime
) -> dg.AssetCheckResult:
    """A folder's connectors share each table's asset (partitioned by connector): one result for
    all of them, failed when any connector's copy is stale, naming those."""
    results = {
        name: freshness_result(target, at.path, at.tenant_id, at.period(target), now)
        for name, at in sorted(connectors.items())
    }
    stale = {name: result for name, result in results.items() if not result.passed}
    if not results:
        description = f"No connector publishes {target.table}: the folder has no valid config"
    elif not stale:
        description = f"{target.table} is fresh for all {len(results)} connectors"
    else:
        description = f"{target.table} is stale for {len(stale)} of {len(results)} connectors: " + (
            "; ".join(f"{name}: {result.description}" for name, result in stale.items())
        )
    return dg.AssetCheckResult(
        passed=not stale,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "job": target.job,
            "connectors": len(results),
            "stale_connectors": dg.MetadataValue.json(sorted(stale)),
            "by_connector": dg.MetadataValue.json(
                {
                    name: _plain(result.metadata) | {"passed": result.passed}
                    for name, result in results.items()
                }
            ),
        },
    )


def _plain(metadata: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in metadata.items():
        raw = value.value if isinstance(value, dg.MetadataValue) else value
        if key == "last_success_at":
            raw = datetime.fromtimestamp(raw, UTC).isoformat()
        out[key] = raw
    return out


def freshness_check(
    target: FreshnessTarget,
    judge: Callable[[FreshnessTarget, datetime], dg.AssetCheckResult],
    stale_after: str,
) -> dg.AssetChecksDefinition:
    """The WARN check that `target.table` was published within two periods of its schedule."""

    @dg.asset_check(
        asset=target.asset,
        name=target.check_name,
        blocking=False,
        description=f"Warns when {target.job}'s last successful sync (ops.sync_runs) is older "
        f"than {stale_after}.",
    )
    def _check() -> dg.AssetCheckResult:
        return judge(target, datetime.now(UTC))

    return _check


def freshness_definitions(
    schedule: ScheduleOptions,
    user_source: UserSourceOptions,
    path: Path,
    tenant_id: str,
    *,
    running: bool,
) -> dg.Definitions:
    """The freshness checks of the tables published at `path`, and the job and schedule that run
    them (stopped unless `running`: before there is a config)."""
    at = Published(path, tenant_id, connector_period(schedule), user_source_period(user_source))

    def judge(target: FreshnessTarget, now: datetime) -> dg.AssetCheckResult:
        return freshness_result(target, path, tenant_id, at.period(target), now)

    checks = [
        freshness_check(
            target,
            judge,
            f"{_duration(at.period(target) * STALE_AFTER_PERIODS)}, twice its schedule's period",
        )
        for target in TARGETS
    ]
    return _definitions(checks, running=running)


def fleet_freshness_definitions(
    connectors: Callable[[], Mapping[str, Published]],
) -> dg.Definitions:
    """The freshness checks of a folder of connectors (`connectors`: each one's name and where it
    publishes, read when the checks run), hourly like a single connector's."""

    def judge(target: FreshnessTarget, now: datetime) -> dg.AssetCheckResult:
        return fleet_freshness_result(target, connectors(), now)

    stale_after = "twice its schedule's period, for any connector of the folder"
    checks = [freshness_check(target, judge, stale_after) for target in TARGETS]
    return _definitions(checks, running=True)


def _definitions(checks: list[dg.AssetChecksDefinition], *, running: bool) -> dg.Definitions:
    job = dg.define_asset_job(
        FRESHNESS_JOB,
        selection=FRESHNESS_CHECKS,
        description="Warns when a published table's last successful sync is older than twice "
        "its schedule's period (reads ops.sync_runs; writes nothing)",
        executor_def=dg.in_process_executor,
    )
    return dg.Definitions(
        asset_checks=checks,
        jobs=[job],
        schedules=[
            dg.ScheduleDefinition(
                name=FRESHNESS_SCHEDULE,
                job=job,
                cron_schedule=FRESHNESS_CRON,
                execution_timezone="UTC",
                default_status=dg.DefaultScheduleStatus.RUNNING
                if running
                else dg.DefaultScheduleStatus.STOPPED,
                description="Freshness checks of neurons.* and mdm.users, hourly at :30",
            )
        ],
    )


def _duration(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    if hours >= 48:
        return f"{hours / 24:g} days" if hours % 24 == 0 else f"{hours / 24:.1f} days"
    if hours >= 1:
        return f"{hours:g} h" if hours == int(hours) else f"{hours:.1f} h"
    return f"{span.total_seconds() / 60:.0f} min"
