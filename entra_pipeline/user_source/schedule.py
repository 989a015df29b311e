"""The MDM user source's schedule: every `sync_interval_minutes` from midnight, while enabled
(seed 001)."""

from __future__ import annotations

import dagster as dg

from entra_pipeline.dagster_private import AssetJob
from entra_pipeline.settings import UserSourceOptions
from entra_pipeline.user_source.errors import UserSourceError

USER_SOURCE_SCHEDULE = "mdm_user_source_sync_schedule"
MINUTES_PER_DAY = 24 * 60


def interval_crons(minutes: int) -> list[str]:
    """Cron strings firing every `minutes` from midnight: one string per distinct minute-of-hour
    (a 90-minute interval fires at 00:00, 01:30, 03:00, ... which one cron string cannot say)."""
    if MINUTES_PER_DAY % minutes:
        raise UserSourceError(
            f"sync interval {minutes} does not divide a day of {MINUTES_PER_DAY} minutes"
        )
    hours_by_minute: dict[int, list[int]] = {}
    for start in range(0, MINUTES_PER_DAY, minutes):
        hours_by_minute.setdefault(start % 60, []).append(start // 60)
    crons = []
    for minute, hours in sorted(hours_by_minute.items()):
        hour_field = "*" if len(hours) == 24 else ",".join(str(h) for h in hours)
        crons.append(f"{minute} {hour_field} * * *")
    return crons


def user_source_schedule(
    options: UserSourceOptions, timezone: str, job: AssetJob
) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=USER_SOURCE_SCHEDULE,
        job=job,
        cron_schedule=interval_crons(options.sync_interval_minutes),
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING
        if options.enabled
        else dg.DefaultScheduleStatus.STOPPED,
        description=(
            f"MDM user source sync every {options.sync_interval_minutes} minutes"
            + ("" if options.enabled else " (disabled: `user_source.enabled` is false)")
        ),
    )
