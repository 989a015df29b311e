"""What this project relies on of the Dagster internals it imports (entra_pipeline/dagster_private.py),
pinned: a Dagster upgrade that changes any of it fails here, not in a night's run."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import dagster as dg

from entra_pipeline.dagster_private import (
    AUTO_RETRY_RUN_ID_TAG,
    AssetJob,
    CheckRunHealthResult,
    ReconstructableRepository,
    WorkerStatus,
    cron_string_iterator,
)


def test_asset_job_is_what_define_asset_job_returns() -> None:
    job = dg.define_asset_job("some_job", selection=dg.AssetSelection.all())
    assert isinstance(job, AssetJob)
    # What the schedules and sensors take it for.
    dg.ScheduleDefinition(name="s", job=job, cron_schedule="0 2 * * *")
    dg.run_failure_sensor(name="on_failure", monitored_jobs=[job])(lambda context: None)


def test_cron_ticks_are_the_schedule_daemons_in_the_timezone_across_a_dst_change() -> None:
    # 02:30 daily in Europe/Berlin across the end of summer time (2026-10-25): one tick a day,
    # always at 02:30 local time.
    start = datetime(2026, 10, 23, 12, tzinfo=UTC).timestamp()
    ticks = cron_string_iterator(start, "30 2 * * *", "Europe/Berlin")
    local = [next(ticks).astimezone(ZoneInfo("Europe/Berlin")) for _ in range(4)]
    assert [(t.day, t.hour, t.minute) for t in local] == [
        (24, 2, 30),
        (25, 2, 30),
        (26, 2, 30),
        (27, 2, 30),
    ]
    assert [t.utcoffset().total_seconds() / 3600 for t in local] == [2, 1, 1, 1]  # type: ignore[union-attr]


def test_a_health_check_answer_carries_a_status_and_a_message() -> None:
    answer = CheckRunHealthResult(WorkerStatus.FAILED, "worker lost")
    assert (answer.status, answer.msg) == (WorkerStatus.FAILED, "worker lost")
    assert {"RUNNING", "FAILED", "SUCCESS", "NOT_FOUND", "UNKNOWN"} <= set(WorkerStatus.__members__)


@dg.asset
def one() -> int:
    return 1


DEFS = dg.Definitions(assets=[one], jobs=[dg.define_asset_job("one_job", selection=[one])])


def test_a_code_location_reconstructs_from_its_module_and_the_retry_tag_is_dagsters() -> None:
    recon = ReconstructableRepository.for_module(__name__, "DEFS")
    job = recon.get_reconstructable_job("one_job").get_definition()
    assert job.name == "one_job"
    assert [str(node) for node in job.graph.node_dict] == ["one"]
    assert AUTO_RETRY_RUN_ID_TAG == "dagster/auto_retry_run_id"
