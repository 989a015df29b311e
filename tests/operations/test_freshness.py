"""Freshness checks: a published table warns when its job's last successful sync in
`ops.sync_runs` is older than twice the schedule's period, and the checks run outside the syncs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from entra_pipeline.config_file import load_settings
from entra_pipeline.definitions import build_definitions
from entra_pipeline.emulator import Emulator
from entra_pipeline.names import CONNECTOR_JOB
from entra_pipeline.names import USER_SOURCE_JOB as MDM_JOB
from entra_pipeline.operations.freshness import (
    FRESHNESS_JOB,
    FRESHNESS_SCHEDULE,
    TARGETS,
    FreshnessTarget,
    freshness_result,
)
from entra_pipeline.warehouse.ops_tables import create_ops_tables

TENANT = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
USERS = FreshnessTarget("neurons.users", CONNECTOR_JOB)
MDM_USERS = FreshnessTarget("mdm.users", MDM_JOB)


def record_runs(db: Path, *runs: tuple[str, str, datetime], tenant_id: str = TENANT) -> None:
    """Append (job, status, finished_at) rows to the published `ops.sync_runs`."""
    with duckdb.connect(str(db)) as con:
        create_ops_tables(con)
        for number, (job, status, finished) in enumerate(runs):
            con.execute(
                "INSERT INTO ops.sync_runs VALUES (?, ?, ?, 'connector', ?, ?, ?, '{}', 0, 0, NULL, NULL, NULL)",
                [
                    tenant_id,
                    f"run-{number}",
                    job,
                    finished - timedelta(minutes=5),
                    finished,
                    status,
                ],
            )


@pytest.mark.parametrize(
    ("period", "age", "fresh"),
    [
        (timedelta(hours=1), timedelta(hours=2), True),
        (timedelta(hours=1), timedelta(hours=2, seconds=1), False),
        (timedelta(days=1), timedelta(hours=47), True),
        (timedelta(days=1), timedelta(hours=49), False),
        (timedelta(weeks=1), timedelta(days=13), True),
        (timedelta(weeks=1), timedelta(days=15), False),
    ],
)
def test_fresh_within_twice_the_period_and_stale_after(
    tmp_path: Path, period: timedelta, age: timedelta, fresh: bool
) -> None:
    db = tmp_path / "entra.duckdb"
    record_runs(db, (CONNECTOR_JOB, "success", NOW - age))

    result = freshness_result(USERS, db, TENANT, period, NOW)

    assert result.passed is fresh
    assert result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["age_hours"].value == round(age.total_seconds() / 3600, 2)
    assert result.metadata["max_age_hours"].value == round(2 * period.total_seconds() / 3600, 2)


def test_only_successful_runs_of_the_tables_own_job_and_tenant_count(tmp_path: Path) -> None:
    db = tmp_path / "entra.duckdb"
    record_runs(
        db,
        (CONNECTOR_JOB, "success", NOW - timedelta(days=3)),
        (CONNECTOR_JOB, "failure", NOW - timedelta(hours=1)),
        (MDM_JOB, "success", NOW - timedelta(minutes=10)),
    )
    record_runs(db, (CONNECTOR_JOB, "success", NOW), tenant_id="another-tenant")

    result = freshness_result(USERS, db, TENANT, timedelta(days=1), NOW)

    assert result.passed is False
    assert result.description == (
        "neurons.users was last published by entra_id_sync at 2025-05-29 12:00 UTC, 3 days ago; "
        "stale after 2 days (twice the schedule's period)"
    )
    assert freshness_result(MDM_USERS, db, TENANT, timedelta(minutes=240), NOW).passed is True


def test_never_published_warns(tmp_path: Path) -> None:
    result = freshness_result(USERS, tmp_path / "absent.duckdb", TENANT, timedelta(days=1), NOW)

    assert result.passed is False
    assert result.description == (
        "neurons.users has never been published: ops.sync_runs has no successful entra_id_sync run"
    )


def test_checks_run_in_their_own_job_with_the_configured_periods(
    emulator: Emulator, config_for: Callable[..., Path], tmp_path: Path
) -> None:
    config = config_for(
        emulator,
        schedule={"repeats": "hourly", "start_time": "00:15"},
        user_source={"sync_interval_minutes": 30},
    )
    definitions = build_definitions(load_settings(config), str(config))
    now = datetime.now(UTC)
    record_runs(
        tmp_path / "entra.duckdb",
        (CONNECTOR_JOB, "success", now - timedelta(minutes=90)),
        (MDM_JOB, "success", now - timedelta(minutes=61)),
        tenant_id=emulator.tenant_id,
    )

    result = definitions.resolve_job_def(FRESHNESS_JOB).execute_in_process(
        instance=dg.DagsterInstance.ephemeral()
    )

    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert {name: e.passed for name, e in evaluations.items()} == {
        "neurons_users_fresh": True,
        "neurons_devices_fresh": True,
        "mdm_users_fresh": False,  # 61 minutes > 2 x 30
    }
    assert {e.severity for e in evaluations.values()} == {dg.AssetCheckSeverity.WARN}
    assert evaluations["mdm_users_fresh"].metadata["max_age_hours"].value == 1.0
    assert definitions.resolve_schedule_def(FRESHNESS_SCHEDULE).cron_schedule == "30 * * * *"


def test_sync_jobs_leave_the_freshness_checks_out(
    emulator: Emulator, config_for: Callable[..., Path]
) -> None:
    config = config_for(emulator)
    definitions = build_definitions(load_settings(config), str(config))
    freshness = {target.check_key for target in TARGETS}

    for job in (CONNECTOR_JOB, MDM_JOB):
        checks = definitions.resolve_job_def(job).asset_layer.asset_graph.asset_check_keys
        assert checks
        assert not checks & freshness
    assert definitions.resolve_job_def(FRESHNESS_JOB).asset_layer.asset_graph.asset_check_keys == (
        freshness
    )
