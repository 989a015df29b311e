"""Schedules from the config: next ticks for hourly, daily and weekly, across DST, and on/off."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import islice

import dagster as dg
import pytest

from entra_pipeline.connector.schedule import connector_schedule
from entra_pipeline.dagster_private import cron_string_iterator  # the daemon's ticks
from entra_pipeline.settings import ScheduleOptions, UserSourceOptions
from entra_pipeline.user_source.schedule import interval_crons, user_source_schedule

JOB = dg.define_asset_job("entra_id_sync")
MDM_JOB = dg.define_asset_job("mdm_user_source_sync")


def _ticks(schedule: dg.ScheduleDefinition, start: datetime, count: int) -> list[str]:
    crons = schedule.cron_schedule
    crons = [crons] if isinstance(crons, str) else list(crons)
    ticks = sorted(
        tick
        for cron in crons
        for tick in islice(
            cron_string_iterator(start.timestamp(), cron, schedule.execution_timezone), count
        )
    )
    return [tick.isoformat() for tick in ticks[:count]]


def test_daily_at_start_time_in_its_timezone_across_spring_forward() -> None:
    options = ScheduleOptions(repeats="daily", start_time="02:30", timezone="Europe/Berlin")
    schedule = connector_schedule(options, JOB)
    assert schedule.cron_schedule == "30 2 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    # 2027-03-28 02:30 does not exist in Berlin: that day's run starts at 03:00 CEST instead.
    assert _ticks(schedule, datetime(2027, 3, 26, 12, tzinfo=UTC), 4) == [
        "2027-03-27T02:30:00+01:00",
        "2027-03-28T03:00:00+02:00",
        "2027-03-29T02:30:00+02:00",
        "2027-03-30T02:30:00+02:00",
    ]


def test_daily_runs_once_on_the_repeated_autumn_hour() -> None:
    options = ScheduleOptions(repeats="daily", start_time="02:30", timezone="Europe/Berlin")
    assert _ticks(connector_schedule(options, JOB), datetime(2027, 10, 30, 12, tzinfo=UTC), 3) == [
        "2027-10-31T02:30:00+01:00",
        "2027-11-01T02:30:00+01:00",
        "2027-11-02T02:30:00+01:00",
    ]


def test_weekly_on_its_day_and_hourly_at_its_minute() -> None:
    weekly = ScheduleOptions(
        repeats="weekly", start_time="23:15", day_of_week="saturday", timezone="America/New_York"
    )
    assert _ticks(connector_schedule(weekly, JOB), datetime(2026, 11, 23, tzinfo=UTC), 2) == [
        "2026-11-28T23:15:00-05:00",
        "2026-12-05T23:15:00-05:00",
    ]
    hourly = ScheduleOptions(repeats="hourly", start_time="04:45", timezone="UTC")
    assert _ticks(connector_schedule(hourly, JOB), datetime(2026, 11, 23, 10, tzinfo=UTC), 3) == [
        "2026-11-23T10:45:00+00:00",
        "2026-11-23T11:45:00+00:00",
        "2026-11-23T12:45:00+00:00",
    ]


def test_inactive_connector_schedule_is_stopped() -> None:
    schedule = connector_schedule(ScheduleOptions(active=False), JOB)
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert "inactive" in (schedule.description or "")


def test_user_source_interval_of_90_minutes_fires_every_90_minutes() -> None:
    schedule = user_source_schedule(
        UserSourceOptions(sync_interval_minutes=90), "Asia/Kolkata", MDM_JOB
    )
    assert schedule.execution_timezone == "Asia/Kolkata"
    assert _ticks(schedule, datetime(2026, 11, 22, 18, 30, tzinfo=UTC), 4) == [
        "2026-11-23T00:00:00+05:30",
        "2026-11-23T01:30:00+05:30",
        "2026-11-23T03:00:00+05:30",
        "2026-11-23T04:30:00+05:30",
    ]
    disabled = user_source_schedule(UserSourceOptions(enabled=False), "UTC", MDM_JOB)
    assert disabled.default_status == dg.DefaultScheduleStatus.STOPPED


@pytest.mark.parametrize(
    ("minutes", "crons"),
    [
        (240, ["0 0,4,8,12,16,20 * * *"]),
        (30, ["0 * * * *", "30 * * * *"]),
        (1440, ["0 0 * * *"]),
    ],
)
def test_interval_crons(minutes: int, crons: list[str]) -> None:
    assert interval_crons(minutes) == crons


def test_interval_that_does_not_divide_a_day_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="does not divide a day"):
        UserSourceOptions(sync_interval_minutes=7)
