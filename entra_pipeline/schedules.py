"""Schedules from the connector config: the connector's Repeats / Start time / Active (seed 000),
and the MDM user source's sync interval while it is enabled (seed 001)."""

from __future__ import annotations

import dagster as dg

from entra_pipeline.settings import ScheduleOptions, UserSourceOptions

CRON_WEEKDAYS = {
    "sunday": 0,
    "monday": 1,
    "tuesday": 2,
    "wednesday": 3,
    "thursday": 4,
    "friday": 5,
    "saturday": 6,
}
MINUTES_PER_DAY = 24 * 60


def connector_cron(options: ScheduleOptions) -> str:
    """The cron string of the connector's schedule: hourly at the start minute, daily or weekly at
    the start time."""
    if options.repeats == "hourly":
        return f"{options.minute} * * * *"
    if options.repeats == "daily":
        return f"{options.minute} {options.hour} * * *"
    return f"{options.minute} {options.hour} * * {CRON_WEEKDAYS[options.day_of_week]}"


def interval_crons(minutes: int) -> list[str]:
    """Cron strings firing every `minutes` from midnight: one string per distinct minute-of-hour
    (a 90-minute interval fires at 00:00, 01:30, 03:00, ... which one cron string cannot say)."""
    if MINUTES_PER_DAY % minutes:
        raise ValueError(
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


def connector_schedule(
    options: ScheduleOptions, job: dg.UnresolvedAssetJobDefinition
) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="entra_id_sync_schedule",
        job=job,
        cron_schedule=connector_cron(options),
        execution_timezone=options.timezone,
        default_status=_status(options.active),
        description=(
            f"Connector sync, {options.repeats} at {options.start_time} {options.timezone}"
            + (f" on {options.day_of_week}" if options.repeats == "weekly" else "")
            + ("" if options.active else " (inactive: `schedule.active` is false)")
        ),
    )


def user_source_schedule(
    options: UserSourceOptions, timezone: str, job: dg.UnresolvedAssetJobDefinition
) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="mdm_user_source_sync_schedule",
        job=job,
        cron_schedule=interval_crons(options.sync_interval_minutes),
        execution_timezone=timezone,
        default_status=_status(options.enabled),
        description=(
            f"MDM user source sync every {options.sync_interval_minutes} minutes"
            + ("" if options.enabled else " (disabled: `user_source.enabled` is false)")
        ),
    )


def _status(active: bool) -> dg.DefaultScheduleStatus:
    return dg.DefaultScheduleStatus.RUNNING if active else dg.DefaultScheduleStatus.STOPPED
