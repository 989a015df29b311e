"""The connector's schedule from the config: Repeats / Start time / Day / Active (seed 000)."""

from __future__ import annotations

import dagster as dg

from entra_pipeline.dagster_private import AssetJob
from entra_pipeline.settings import ScheduleOptions

CONNECTOR_SCHEDULE = "entra_id_sync_schedule"
CRON_WEEKDAYS = {
    "sunday": 0,
    "monday": 1,
    "tuesday": 2,
    "wednesday": 3,
    "thursday": 4,
    "friday": 5,
    "saturday": 6,
}


def connector_cron(options: ScheduleOptions) -> str:
    """The cron string of the connector's schedule: hourly at the start minute, daily or weekly at
    the start time."""
    if options.repeats == "hourly":
        return f"{options.minute} * * * *"
    if options.repeats == "daily":
        return f"{options.minute} {options.hour} * * *"
    return f"{options.minute} {options.hour} * * {CRON_WEEKDAYS[options.day_of_week]}"


def connector_schedule(options: ScheduleOptions, job: AssetJob) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=CONNECTOR_SCHEDULE,
        job=job,
        cron_schedule=connector_cron(options),
        execution_timezone=options.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING
        if options.active
        else dg.DefaultScheduleStatus.STOPPED,
        description=(
            f"Connector sync, {options.repeats} at {options.start_time} {options.timezone}"
            + (f" on {options.day_of_week}" if options.repeats == "weekly" else "")
            + ("" if options.active else " (inactive: `schedule.active` is false)")
        ),
    )
