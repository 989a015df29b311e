"""A folder of connector configs (docs/scaling-out.md): each a key of the `connectors` dynamic
partitioning, kept in step with the folder by a sensor that starts each connector on its own
schedule; a run is one connector's, with its settings, secrets and file; a connector that fails, or
whose file is invalid, stops nobody else.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
import yaml

from entra_pipeline.connector_folder import Fleet, connector_slug, load_fleet
from entra_pipeline.emulator import Emulator, EmulatorConfig, running_emulator
from entra_pipeline.fleet import CONNECTORS_SENSOR, fleet_definitions
from entra_pipeline.names import CONNECTOR_JOB, CONNECTORS_PARTITIONS, USER_SOURCE_JOB
from entra_pipeline.operations.freshness import FRESHNESS_JOB, FRESHNESS_SCHEDULE

MAPPING = Path(__file__).resolve().parents[1] / "mappings" / "entra_id.csv"
FAST = {"max_retries": 1, "backoff_base_seconds": 0.01}


@dataclass
class Folder:
    path: Path
    emulators: list[Emulator]

    def write(self, name: str, emu: Emulator, n: int, **extra: Any) -> Path:
        document = {
            "connector_name": f"Tenant {n}",
            **emu.connection_settings(f"TEST_FLEET_SECRET_{n}"),
            "duckdb_path": str(self.path.parent / f"tenant{n}.duckdb"),
            "mapping_path": str(MAPPING),
            "user_source": {"enabled": False},
            **extra,
        }
        file = self.path / name
        file.write_text(yaml.safe_dump(document, sort_keys=False))
        return file

    def db(self, n: int) -> Path:
        return self.path.parent / f"tenant{n}.duckdb"

    def count(self, n: int, table: str) -> int:
        with duckdb.connect(str(self.db(n)), read_only=True) as con:
            return int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Folder]:
    """Two tenants' connectors in one folder (files a.yaml and b.yaml)."""
    with (
        running_emulator(EmulatorConfig(users=30, devices=20, seed=11)) as first,
        running_emulator(EmulatorConfig(users=20, devices=10, seed=12)) as second,
    ):
        configs = tmp_path / "connectors"
        configs.mkdir()
        made = Folder(configs, [first, second])
        for n, emu in enumerate((first, second)):
            monkeypatch.setenv(f"TEST_FLEET_SECRET_{n}", emu.client_secret)
            made.write("ab"[n] + ".yaml", emu, n)
        yield made


def _refused_reparse(*args: object, **kwargs: object) -> None:
    raise AssertionError("a run re-read its connector's config after the folder was read")


def _sensor(folder: Folder, instance: dg.DagsterInstance, cursor: str | None = None) -> Any:
    definitions = fleet_definitions(folder.path)
    sensor = definitions.resolve_sensor_def(CONNECTORS_SENSOR)
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=definitions)
    return sensor(context)


def test_each_file_is_a_partition_and_a_run_is_one_connectors(
    folder: Folder, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[Path] = []

    def counted(path: Path) -> Fleet:
        reads.append(path)
        return load_fleet(path)

    monkeypatch.setattr("entra_pipeline.fleet.load_fleet", counted)
    monkeypatch.setattr("entra_pipeline.resources.load_settings", _refused_reparse)
    instance = dg.DagsterInstance.ephemeral()
    result = _sensor(folder, instance)
    [added] = result.dynamic_partitions_requests
    assert sorted(added.partition_keys) == ["tenant-0", "tenant-1"]
    assert result.run_requests == []  # nothing is due at the first tick
    instance.add_dynamic_partitions(CONNECTORS_PARTITIONS, list(added.partition_keys))
    job = fleet_definitions(folder.path, connector_options=FAST).resolve_job_def(CONNECTOR_JOB)
    assert job.partitions_def is not None
    for slug in ("tenant-0", "tenant-1"):
        before = len(reads)
        assert job.execute_in_process(instance=instance, partition_key=slug).success
        assert len(reads) == before + 1  # the folder is read and validated once per run
    for n, emu in enumerate(folder.emulators):
        with duckdb.connect(str(folder.db(n)), read_only=True) as con:
            assert con.execute("SELECT DISTINCT tenant_id FROM raw.users").fetchall() == [
                (emu.tenant_id,)
            ]
            assert con.execute("SELECT count(*) FROM raw.users").fetchall() == [
                (emu.tenant.user_count,)
            ]
            assert con.execute(
                "SELECT tenant_id, job, status, connector FROM ops.sync_runs"
            ).fetchall() == [(emu.tenant_id, CONNECTOR_JOB, "success", f"Tenant {n}")]
            for table in ("neurons.users", "neurons.devices"):
                assert con.execute(
                    f"SELECT DISTINCT tenant_id, connector FROM {table}"
                ).fetchall() == [(emu.tenant_id, f"Tenant {n}")]


def test_freshness_judges_each_connector_by_its_own_file_and_schedule(folder: Folder) -> None:
    folder.write("a.yaml", folder.emulators[0], 0, schedule={"repeats": "hourly"})
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(CONNECTORS_PARTITIONS, ["tenant-0", "tenant-1"])
    definitions = fleet_definitions(folder.path, connector_options=FAST)
    sync = definitions.resolve_job_def(CONNECTOR_JOB)
    assert sync.execute_in_process(instance=instance, partition_key="tenant-0").success
    # The syncs leave the freshness checks to their own hourly runs.
    assert not {
        key for key in sync.asset_layer.asset_graph.asset_check_keys if key.name.endswith("_fresh")
    }
    assert definitions.resolve_schedule_def(FRESHNESS_SCHEDULE).cron_schedule == "30 * * * *"

    result = definitions.resolve_job_def(FRESHNESS_JOB).execute_in_process(instance=instance)

    judged = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert {name: e.passed for name, e in judged.items()} == {
        "neurons_users_fresh": False,  # Tenant 1 never synced
        "neurons_devices_fresh": False,
        "mdm_users_fresh": False,  # no user source ran
    }
    users = judged["neurons_users_fresh"]
    assert users.description == (
        "neurons.users is stale for 1 of 2 connectors: Tenant 1: neurons.users has never been "
        "published: ops.sync_runs has no successful entra_id_sync run"
    )
    assert users.metadata["stale_connectors"].value == ["Tenant 1"]
    by_connector = users.metadata["by_connector"].value
    assert by_connector["Tenant 0"]["passed"] is True
    assert by_connector["Tenant 0"]["max_age_hours"] == 2.0  # hourly: stale after 2 h
    assert by_connector["Tenant 0"]["duckdb_path"] == str(folder.db(0))
    assert by_connector["Tenant 1"] == {
        "job": CONNECTOR_JOB,
        "max_age_hours": 48.0,  # daily, the default
        "duckdb_path": str(folder.db(1)),
        "passed": False,
    }

    assert sync.execute_in_process(instance=instance, partition_key="tenant-1").success
    again = definitions.resolve_job_def(FRESHNESS_JOB).execute_in_process(instance=instance)
    users = next(e for e in again.get_asset_check_evaluations() if e.check_name == users.check_name)
    assert users.passed
    assert users.description == "neurons.users is fresh for all 2 connectors"


def test_the_sensor_starts_each_connector_on_its_own_schedule_and_follows_the_folder(
    folder: Folder,
) -> None:
    # Tenant 0 hourly at :15, tenant 1 daily at 03:00 (UTC); tenant 1 also has a user source.
    folder.write(
        "a.yaml", folder.emulators[0], 0, schedule={"repeats": "hourly", "start_time": "00:15"}
    )
    folder.write(
        "b.yaml",
        folder.emulators[1],
        1,
        schedule={"repeats": "daily", "start_time": "03:00"},
        user_source={"enabled": True, "sync_interval_minutes": 60},
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(CONNECTORS_PARTITIONS, ["tenant-0", "tenant-1", "gone"])
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    cursor = f'{{"tenant-0": "{two_hours_ago}", "tenant-1": "{two_hours_ago}"}}'
    result = _sensor(folder, instance, cursor)
    requested = sorted((r.job_name, r.partition_key) for r in result.run_requests)
    now = datetime.now(UTC)
    three = now.replace(hour=3, minute=0, second=0, microsecond=0)
    daily_due = now - timedelta(hours=2) < three <= now
    expected = [(CONNECTOR_JOB, "tenant-0"), (USER_SOURCE_JOB, "tenant-1")]
    if daily_due:
        expected.append((CONNECTOR_JOB, "tenant-1"))
    assert requested == sorted(expected)
    for request in result.run_requests:
        assert request.tags["entra_pipeline/connector"] in ("Tenant 0", "Tenant 1")
        assert request.run_key.startswith(f"{request.job_name}:{request.partition_key}:")
    # A removed file retires its partition; the cursor forgets it.
    [deleted] = result.dynamic_partitions_requests
    assert list(deleted.partition_keys) == ["gone"]
    (folder.path / "b.yaml").unlink()
    instance.delete_dynamic_partition(CONNECTORS_PARTITIONS, "gone")
    again = _sensor(folder, instance, result.cursor)
    assert [list(r.partition_keys) for r in again.dynamic_partitions_requests] == [["tenant-1"]]
    assert "tenant-1" not in again.cursor


def test_a_failing_connector_and_an_invalid_file_stop_nobody_else(
    folder: Folder, monkeypatch: pytest.MonkeyPatch
) -> None:
    (folder.path / "broken.yaml").write_text("tenant_id: not a tenant\n")
    folder.emulators[1].permissions = {"Device.Read.All"}  # tenant 1 cannot read users
    monkeypatch.setenv("ENTRA_CONNECTOR_CONFIG", str(folder.path))
    sync = subprocess.run(
        [sys.executable, "-m", "entra_pipeline.cli", "sync"],
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"},
    )
    assert sync.returncode == 2, sync.stdout + sync.stderr  # the worst: an invalid file
    lines = sync.stdout.splitlines()
    assert any(line.startswith("broken.yaml cannot run:") for line in lines)
    assert f"tenant-0: {CONNECTOR_JOB} published to {folder.db(0)}" in lines
    assert any(
        line.startswith(f"tenant-1: {CONNECTOR_JOB} failed; nothing was published:")
        for line in lines
    )
    assert folder.count(0, "neurons.users") > 0
    with duckdb.connect(str(folder.db(1)), read_only=True) as con:
        assert con.execute("SELECT status FROM ops.sync_runs").fetchall() == [("failure",)]
        tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert "users" not in tables  # nothing of it was published


def test_two_files_naming_one_connector_or_one_file_are_both_refused_naming_each_other(
    folder: Folder,
) -> None:
    folder.write("c.yaml", folder.emulators[1], 1)  # Tenant 1 again, and tenant1.duckdb again
    fleet = load_fleet(folder.path)
    assert sorted(fleet.connectors) == ["tenant-0"]
    b, c = fleet.invalid[folder.path / "b.yaml"], fleet.invalid[folder.path / "c.yaml"]
    assert "b.yaml and c.yaml both name the connector 'tenant-1'" in b
    assert "c.yaml and b.yaml both name the connector 'tenant-1'" in c
    folder.write("c.yaml", folder.emulators[1], 1, connector_name="Tenant 1 copy")
    fleet = load_fleet(folder.path)
    assert "both name the DuckDB file" in fleet.invalid[folder.path / "c.yaml"]
    assert connector_slug("Contoso EU (prod)") == "contoso-eu-prod"


def test_check_checks_every_connector_of_the_folder(folder: Folder) -> None:
    check = subprocess.run(
        [sys.executable, "-m", "entra_pipeline.cli", "check", "--config", str(folder.path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "== a.yaml (partition tenant-0)" in check.stdout
    assert "== b.yaml (partition tenant-1)" in check.stdout
    assert "2 connectors can run, 0 cannot" in check.stdout


def test_a_run_without_a_partition_says_what_to_do(folder: Folder) -> None:
    job = fleet_definitions(folder.path, connector_options=FAST).resolve_job_def(CONNECTOR_JOB)
    with pytest.raises(dg.DagsterResourceFunctionError) as raised:
        job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert "is a folder of connectors: a run is one connector's, so give it a partition" in str(
        raised.value.__cause__
    )
