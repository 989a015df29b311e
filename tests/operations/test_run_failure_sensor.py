"""The run-status sensors: a run that died before its warehouse teardown is recorded in
`ops.sync_runs` and `ops.notifications` once; a run the teardown recorded is left alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from entra_pipeline.config_file import load_settings
from entra_pipeline.definitions import build_definitions
from entra_pipeline.emulator import Emulator
from entra_pipeline.names import CONNECTOR_JOB
from entra_pipeline.operations.sensors import CANCELED_RUNS_SENSOR, FAILED_RUNS_SENSOR
from entra_pipeline.warehouse.resource import Warehouse
from tests.operations.operate_fixtures import CONNECTOR_PERMISSIONS

SYNC_JOBS = {"entra_id_sync", "mdm_user_source_sync"}


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture
def definitions(emulator: Emulator, config_for: Callable[..., Path]) -> dg.Definitions:
    config = config_for(emulator)
    return build_definitions(load_settings(config), str(config))


@pytest.fixture
def db(definitions: dg.Definitions, tmp_path: Path) -> Path:
    return tmp_path / "entra.duckdb"


def invoke(
    definitions: dg.Definitions,
    sensor_name: str,
    instance: dg.DagsterInstance,
    run_id: str,
    event: dg.DagsterEvent,
) -> None:
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor_name,
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run_id),
    )
    definitions.resolve_sensor_def(sensor_name)(context)


def test_sensors_monitor_both_sync_jobs_and_run_by_default(definitions: dg.Definitions) -> None:
    for name in (FAILED_RUNS_SENSOR, CANCELED_RUNS_SENSOR):
        sensor = definitions.resolve_sensor_def(name)
        assert {job.name for job in sensor._monitored_jobs} == SYNC_JOBS
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_killed_run_is_recorded_once_as_a_failure_with_a_notification(
    definitions: dg.Definitions, db: Path
) -> None:
    with dg.instance_for_test() as instance:
        run = instance.create_run_for_job(definitions.resolve_job_def(CONNECTOR_JOB))
        # What run monitoring reports when the run's process disappeared.
        event = instance.report_run_failed(run, message="Run worker process exited (signal 9)")
        invoke(definitions, FAILED_RUNS_SENSOR, instance, run.run_id, event)
        invoke(definitions, FAILED_RUNS_SENSOR, instance, run.run_id, event)

    runs = query(db, "SELECT run_id, job, source, status, error FROM ops.sync_runs")
    assert runs == [
        (run.run_id, CONNECTOR_JOB, "connector", "failure", "Run worker process exited (signal 9)")
    ]
    notes = query(
        db, "SELECT run_id, source, severity, code, message, details FROM ops.notifications"
    )
    assert [(n[0], n[1], n[2], n[3]) for n in notes] == [
        (run.run_id, "connector", "error", "run_failed")
    ]
    assert notes[0][4] == (
        f"Run {run.run_id} of {CONNECTOR_JOB} failed before it could record itself, so nothing "
        "was published: Run worker process exited (signal 9)"
    )
    assert json.loads(notes[0][5]) == {
        "run_id": run.run_id,
        "job": CONNECTOR_JOB,
        "dagster_status": "FAILURE",
    }


def test_failed_run_recorded_by_its_warehouse_is_not_recorded_again(
    definitions: dg.Definitions, db: Path, emulator: Emulator
) -> None:
    emulator.permissions = set(CONNECTOR_PERMISSIONS - {"Device.Read.All"})
    with dg.instance_for_test() as instance:
        result = definitions.resolve_job_def(CONNECTOR_JOB).execute_in_process(
            instance=instance, raise_on_error=False
        )
        assert not result.success
        before = query(db, "SELECT * FROM ops.notifications ORDER BY notified_at")
        invoke(
            definitions,
            FAILED_RUNS_SENSOR,
            instance,
            result.run_id,
            result.get_run_failure_event(),
        )

    assert query(db, "SELECT run_id, status FROM ops.sync_runs") == [(result.run_id, "failure")]
    assert query(db, "SELECT * FROM ops.notifications ORDER BY notified_at") == before
    assert [row[0] for row in before]
    assert "run_failed" not in {row[5] for row in before}


def test_run_whose_warehouse_never_started_is_recorded_with_the_root_cause(
    definitions: dg.Definitions, db: Path, tmp_path: Path
) -> None:
    # A folder where the run's warehouse expects its file: its resource fails to initialise.
    unusable = tmp_path / "unusable.duckdb"
    unusable.mkdir()
    with dg.instance_for_test() as instance:
        result = definitions.resolve_job_def(CONNECTOR_JOB).execute_in_process(
            instance=instance,
            raise_on_error=False,
            resources={"warehouse": Warehouse(path=str(unusable), tenant_id="t")},
        )
        assert not result.success
        invoke(
            definitions,
            FAILED_RUNS_SENSOR,
            instance,
            result.run_id,
            result.get_run_failure_event(),
        )

    ((status, error),) = query(db, "SELECT status, error FROM ops.sync_runs")
    assert status == "failure"
    assert error == f"IsADirectoryError: [Errno 21] Is a directory: '{unusable}'"


def test_canceled_run_is_recorded_as_canceled(definitions: dg.Definitions, db: Path) -> None:
    with dg.instance_for_test() as instance:
        run = instance.create_run_for_job(definitions.resolve_job_def(CONNECTOR_JOB))
        instance.report_run_canceled(run)
        event = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_CANCELED)[0]
        invoke(definitions, CANCELED_RUNS_SENSOR, instance, run.run_id, event.dagster_event)

    assert query(db, "SELECT status, error FROM ops.sync_runs") == [
        ("canceled", "the run was canceled")
    ]
    assert query(db, "SELECT code FROM ops.notifications") == [("run_canceled",)]
