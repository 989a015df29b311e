"""Run-status sensors: a sync that failed or was canceled is in `ops.sync_runs` even when it died
before the warehouse could record it (killed process, resources that never came up).

The warehouse teardown records every run that got its resources; these sensors record the others,
once per run id, so an analyst can see from DuckDB alone why the data did not move.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

import dagster as dg

from entra_pipeline.dagster_private import AssetJob
from entra_pipeline.names import CONNECTOR_TAG, TENANT_TAG, WAREHOUSE_TAG
from entra_pipeline.secrets import redact
from entra_pipeline.warehouse.failures import record_unpublished_run, root_cause
from entra_pipeline.warehouse.outcome import Notification, RunOutcome

FAILED_RUNS_SENSOR = "record_failed_sync_runs"
CANCELED_RUNS_SENSOR = "record_canceled_sync_runs"
RUN_FAILED_CODE = "run_failed"
RUN_CANCELED_CODE = "run_canceled"


def sync_run_sensors(
    duckdb_path: str,
    tenant_id: str,
    jobs: Sequence[AssetJob | dg.JobDefinition],
    *,
    running: bool,
) -> list[dg.SensorDefinition]:
    """The failure and cancellation recorders for `jobs`, writing into the published `duckdb_path`."""
    status = dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED
    monitored = ", ".join(job.name for job in jobs)

    @dg.run_failure_sensor(
        name=FAILED_RUNS_SENSOR,
        monitored_jobs=list(jobs),
        default_status=status,
        description=f"Records failed runs of {monitored} in ops.sync_runs and ops.notifications "
        "when the run ended before its warehouse could (killed, resources not initialised).",
    )
    def record_failed_sync_runs(context: dg.RunFailureSensorContext) -> None:
        _record(context, duckdb_path, tenant_id, "failure", _failure_message(context))

    @dg.run_status_sensor(
        name=CANCELED_RUNS_SENSOR,
        run_status=dg.DagsterRunStatus.CANCELED,
        monitored_jobs=list(jobs),
        default_status=status,
        description=f"Records canceled runs of {monitored} in ops.sync_runs and ops.notifications "
        "when the run ended before its warehouse could.",
    )
    def record_canceled_sync_runs(context: dg.RunStatusSensorContext) -> None:
        _record(context, duckdb_path, tenant_id, "canceled", "the run was canceled")

    return [record_failed_sync_runs, record_canceled_sync_runs]


def _record(
    context: dg.RunStatusSensorContext,
    duckdb_path: str,
    tenant_id: str,
    status: Literal["failure", "canceled"],
    error: str,
) -> None:
    run = context.dagster_run
    # A folder of connectors has one file per connector: each run's tags say which.
    duckdb_path = run.tags.get(WAREHOUSE_TAG) or duckdb_path
    tenant_id = run.tags.get(TENANT_TAG) or tenant_id
    if not duckdb_path:
        context.log.warning(f"Run {run.run_id} names no warehouse in its tags: not recorded")
        return
    now = datetime.now(UTC)
    started, finished = _run_times(context.instance.get_run_record_by_id(run.run_id), now)
    code = RUN_FAILED_CODE if status == "failure" else RUN_CANCELED_CODE
    verb = "failed" if status == "failure" else "was canceled"
    message = redact(
        f"Run {run.run_id} of {run.job_name} {verb} before it could record itself, so nothing "
        f"was published: {error}"
    )
    details = {"run_id": run.run_id, "job": run.job_name, "dagster_status": run.status.value}
    outcome = RunOutcome.of_run(
        run.run_id,
        run.job_name,
        started,
        run.tags.get(CONNECTOR_TAG, ""),
        [Notification(now, "error", code, message, details)],
    )
    if record_unpublished_run(duckdb_path, tenant_id, outcome, finished, status, error):
        context.log.info(f"Recorded {status} of run {run.run_id} ({run.job_name}) in ops.sync_runs")
    else:
        context.log.info(
            f"Run {run.run_id} is already in ops.sync_runs (its warehouse recorded it)"
        )


def _run_times(record: dg.RunRecord | None, now: datetime) -> tuple[datetime, datetime]:
    """When the run started (or was created, if it never started) and ended."""
    if record is None:
        return now, now
    started = (
        datetime.fromtimestamp(record.start_time, UTC)
        if record.start_time
        else record.create_timestamp.astimezone(UTC)
    )
    return started, datetime.fromtimestamp(record.end_time, UTC) if record.end_time else now


def _failure_message(context: dg.RunFailureSensorContext) -> str:
    """The user's error behind the first failed step, else the run's own failure."""
    for event in context.get_step_failure_events():
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            return f"step {event.step_key} failed: {root_cause(error)}"
    error = getattr(context.failure_event.event_specific_data, "error", None)
    if error is not None:
        return root_cause(error)
    return context.failure_event.message or "the run failed"
