"""Connectors of a folder run on real Celery workers (entra-pipeline's Celery run launcher, a Redis
broker on 127.0.0.1, the Dagster instance's storage on PostgreSQL as deploy/celery/dagster.yaml ships
it) and publish into one DuckLake catalog on a real PostgreSQL: runs go in parallel on
two workers, and a worker killed in the middle of a connector's run loses only that run, which
the daemon's run monitoring fails and its run retries launch again on the surviving worker, the
other tenants' data untouched.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
import yaml

from entra_pipeline.connector_folder import load_fleet
from entra_pipeline.dagster_private import AUTO_RETRY_RUN_ID_TAG, ReconstructableRepository
from entra_pipeline.emulator import Emulator, EmulatorConfig, running_emulator
from entra_pipeline.names import CONNECTOR_JOB, CONNECTORS_PARTITIONS
from entra_pipeline.run_tags import run_tags
from entra_pipeline.warehouse.lake import LakeTarget, reading
from tests.celery_workers import Cluster, running_cluster
from tests.postgres import USER, Postgres, running_postgres

ROOT = Path(__file__).resolve().parents[1]
MAPPING = ROOT / "mappings" / "entra_id.csv"
TENANTS = 3
RUN_TIMEOUT = 300.0


@dataclass
class CeleryFleet:
    cluster: Cluster
    instance: dg.DagsterInstance
    emulators: list[Emulator]
    folder: Path
    lake: LakeTarget
    slugs: list[str]

    def launch(self, slug: str) -> str:
        """Create and launch one connector's run, as the sensor's run request does."""
        recon = ReconstructableRepository.for_module(
            "entra_pipeline.definitions", "defs", working_directory=str(ROOT)
        ).get_reconstructable_job(CONNECTOR_JOB)
        job = recon.get_definition()
        connector = load_fleet(self.folder).connectors[slug]
        run = self.instance.create_run_for_job(
            job_def=job,
            tags={
                "dagster/partition": slug,
                **run_tags(connector.settings, str(connector.path)),
            },
            job_code_origin=recon.get_python_origin(),
        )
        self.instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
        return run.run_id

    def launch_as_user(self, slug: str) -> str:
        """`dagster job launch` on the workspace, as a user (or the daemon's sensor) does: the
        run knows its code location, so run retries can launch it again."""
        connector = load_fleet(self.folder).connectors[slug]
        run_id = str(uuid.uuid4())
        tags = {"dagster/partition": slug, **run_tags(connector.settings, str(connector.path))}
        subprocess.run(
            [
                str(Path(sys.executable).parent / "dagster"),
                *("job", "launch", "-w", str(ROOT / "workspace.yaml"), "-j", CONNECTOR_JOB),
                *("--tags", json.dumps(tags), "--run-id", run_id),
            ],
            cwd=ROOT,
            env=self.cluster.env,
            check=True,
            capture_output=True,
        )
        return run_id

    def wait(self, run_ids: list[str], timeout: float = RUN_TIMEOUT) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = {r: self.instance.get_run_by_id(r) for r in run_ids}
            if all(run is not None and run.is_finished for run in runs.values()):
                return {r: run.status.value for r, run in runs.items() if run is not None}
            time.sleep(0.5)
        raise AssertionError(f"runs not finished after {timeout}s: see {self.cluster.logs}")

    def run_pid(self, run_id: str) -> int | None:
        for entry in self.instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START):
            if entry.dagster_event is not None:
                return entry.dagster_event.pid
        return None

    def published(self, tenant_id: str) -> bool:
        try:
            return bool(self.lake_rows("neurons.users", tenant_id))
        except duckdb.CatalogException:  # no tenant has published yet
            return False

    def lake_rows(self, table: str, tenant_id: str) -> list[tuple[Any, ...]]:
        with reading(self.lake) as con:
            return sorted(
                con.execute(f"SELECT * FROM {table} WHERE tenant_id = ?", [tenant_id]).fetchall()
            )


@pytest.fixture(scope="module")
def celery_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryFleet]:
    folder = tmp_path_factory.mktemp("celery")
    with contextlib.ExitStack() as stack:
        postgres: Postgres = stack.enter_context(running_postgres())
        postgres.psql("CREATE DATABASE fleet")
        lake = LakeTarget(postgres.catalog("fleet"), str(folder / "lake-data") + "/")
        configs = folder / "connectors"
        configs.mkdir()
        postgres.psql("CREATE DATABASE dagster")
        env = {
            "ENTRA_CONNECTOR_CONFIG": str(configs),
            "PGPASSWORD": postgres.password,
            "DAGSTER_PG_PASSWORD": postgres.password,
        }
        emulators = []
        for n in range(TENANTS):
            emu = stack.enter_context(
                running_emulator(EmulatorConfig(users=30 + 10 * n, devices=20, seed=21 + n))
            )
            emulators.append(emu)
            variable = f"TEST_CELERY_SECRET_{n}"
            env[variable] = emu.client_secret
            document = {
                "connector_name": f"Tenant {n}",
                **emu.connection_settings(variable),
                "duckdb_path": str(folder / f"tenant{n}.duckdb"),
                "mapping_path": str(MAPPING),
                "user_source": {"enabled": False},
                "warehouse": {
                    "backend": "ducklake",
                    "catalog": lake.catalog,
                    "data_path": lake.data_path,
                },
            }
            (configs / f"tenant{n}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            # The shipped instance's storage, on this PostgreSQL: the runs, the workers and the
            # daemon share it as they would across machines.
            storage = {"hostname": "127.0.0.1", "port": postgres.port, "username": USER}
            cluster = stack.enter_context(running_cluster(folder, env, storage))
            patch.setenv("DAGSTER_HOME", str(cluster.home))
            cluster.start_worker("w1")
            cluster.start_worker("w2")
            instance = stack.enter_context(dg.DagsterInstance.get())
            slugs = sorted(load_fleet(configs).connectors)
            instance.add_dynamic_partitions(CONNECTORS_PARTITIONS, slugs)
            yield CeleryFleet(cluster, instance, emulators, configs, lake, slugs)


def test_connectors_run_in_parallel_on_two_workers_into_one_lake(
    celery_fleet: CeleryFleet,
) -> None:
    fleet = celery_fleet
    run_ids = [fleet.launch(slug) for slug in fleet.slugs]
    statuses = fleet.wait(run_ids)
    assert set(statuses.values()) == {"SUCCESS"}, statuses
    pids = {fleet.run_pid(r) for r in run_ids}
    workers = {name for name in fleet.cluster.workers if pids & fleet.cluster.worker_pids(name)}
    assert workers == {"w1", "w2"}  # both workers ran connectors
    with reading(fleet.lake) as con:
        counts = dict(
            con.execute("SELECT tenant_id, count(*) FROM raw.users GROUP BY ALL").fetchall()
        )
        runs = con.execute("SELECT count(*) FROM ops.sync_runs WHERE status = 'success'").fetchall()
    assert counts == {emu.tenant_id: emu.tenant.user_count for emu in fleet.emulators}
    assert runs == [(TENANTS,)]
    # Each connector's own file published too (its state for the next, incremental, run).
    for n, run_id in enumerate(run_ids):
        tags = fleet.instance.get_run_by_id(run_id).tags  # type: ignore[union-attr]
        with duckdb.connect(tags["entra_pipeline/warehouse"], read_only=True) as con:
            assert con.execute(
                "SELECT status FROM ops.sync_runs WHERE run_id = ?", [run_id]
            ).fetchall() == [("success",)], n


def test_a_killed_workers_run_is_failed_by_monitoring_and_retried_the_others_untouched(
    celery_fleet: CeleryFleet,
) -> None:
    """The daemon (run monitoring with entra-pipeline's Celery launcher, run retries, as
    deploy/celery/dagster.yaml ships them) notices the lost worker, fails its run and launches
    the connector again on the surviving worker, which records the dead run and syncs."""
    fleet = celery_fleet
    # Every tenant published once (by the test before, or here when this test runs alone).
    unpublished = [
        slug
        for slug, e in zip(fleet.slugs, fleet.emulators, strict=True)
        if not fleet.published(e.tenant_id)
    ]
    assert set(fleet.wait([fleet.launch(slug) for slug in unpublished]).values()) <= {"SUCCESS"}
    victim, emu = fleet.slugs[0], fleet.emulators[0]
    others = {
        e.tenant_id: fleet.lake_rows("neurons.users", e.tenant_id) for e in fleet.emulators[1:]
    }
    emu.tenant.update(next(iter(emu.tenant.users()))["id"], department="Moved")
    emu.faults.slow_next("/v1.0/users/delta", seconds=20)  # the run is mid-extraction...
    seen = len(emu.requests)  # the earlier runs' requests do not count
    fleet.cluster.start_daemon()
    run_id = fleet.launch_as_user(victim)
    deadline = time.monotonic() + RUN_TIMEOUT
    while fleet.run_pid(run_id) is None or not any(
        r.path == "/v1.0/users/delta" for r in emu.requests[seen:]
    ):
        assert time.monotonic() < deadline, f"the run never reached Graph: {fleet.cluster.logs}"
        time.sleep(0.2)
    pid = fleet.run_pid(run_id)
    [worker] = [n for n in fleet.cluster.workers if pid in fleet.cluster.worker_pids(n)]
    fleet.cluster.kill_worker(worker)  # ...when its machine is lost
    emu.faults.clear()
    assert fleet.wait([run_id]) == {run_id: "FAILURE"}  # run monitoring failed it...
    failure = " ".join(
        entry.dagster_event.message or ""
        for entry in fleet.instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        if entry.dagster_event is not None
    )
    assert f"Celery worker {worker}@" in failure, failure
    assert "has not answered 2 pings" in failure
    retry_id = ""
    while not retry_id:  # ...and run retries launched it again
        assert time.monotonic() < deadline, f"no retry of {run_id}: {fleet.cluster.logs}"
        dead = fleet.instance.get_run_by_id(run_id)
        assert dead is not None
        retry_id = dead.tags.get(AUTO_RETRY_RUN_ID_TAG, "")
        time.sleep(0.5)
    assert fleet.wait([retry_id]) == {retry_id: "SUCCESS"}
    retry = fleet.instance.get_run_by_id(retry_id)
    assert retry is not None
    assert retry.tags["dagster/partition"] == victim
    with duckdb.connect(str(fleet.folder.parent / "tenant0.duckdb"), read_only=True) as con:
        assert con.execute(
            "SELECT run_id, status FROM ops.sync_runs WHERE run_id IN (?, ?) ORDER BY status",
            [run_id, retry_id],
        ).fetchall() == [(run_id, "failure"), (retry_id, "success")]
        # Recorded once, by whichever saw it first: the retry finding the dead run's work copy
        # (run_died) or the daemon's run-failure sensor (run_failed).
        [(code,)] = con.execute(
            "SELECT code FROM ops.notifications WHERE run_id = ? AND severity = 'error'", [run_id]
        ).fetchall()
        assert code in {"run_died", "run_failed"}
        assert ("Moved",) in con.execute("SELECT department FROM raw.users").fetchall()
    for tenant_id, rows in others.items():
        assert fleet.lake_rows("neurons.users", tenant_id) == rows
    assert len(list(fleet.folder.parent.glob("tenant0.duckdb.run-*"))) == 0


def test_a_connector_bound_to_a_server_runs_only_on_that_servers_worker(
    celery_fleet: CeleryFleet,
) -> None:
    """connector_server: site-a sends the connector's runs to Celery queue site-a, which only
    the worker started for that server consumes (the others consume dagster's default queue);
    check names that worker, and the run records the server."""
    from entra_pipeline.celery_launcher import server_finding

    fleet = celery_fleet
    slug = fleet.slugs[2]
    [config] = [p for p in fleet.folder.glob("*.yaml") if load_fleet(fleet.folder).connectors[
        slug].path == p]  # fmt: skip
    document = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**document, "connector_server": "site-a"}, sort_keys=False))
    status, said = server_finding("site-a")
    assert status == "warning"
    assert said.startswith("unknown connector server 'site-a': no Celery worker consumes its queue")
    fleet.cluster.start_worker("site-a-worker", queue="site-a")
    deadline = time.monotonic() + 60
    while server_finding("site-a")[0] != "ok":
        assert time.monotonic() < deadline, "the site-a worker never answered"
        time.sleep(0.5)
    assert server_finding("site-a")[1].startswith("site-a: runs only on site-a-worker@")
    run_id = fleet.launch(slug)
    assert fleet.wait([run_id]) == {run_id: "SUCCESS"}
    run = fleet.instance.get_run_by_id(run_id)
    assert run is not None
    assert run.tags["dagster-celery/queue"] == "site-a"
    assert fleet.run_pid(run_id) in fleet.cluster.worker_pids("site-a-worker")
    with duckdb.connect(run.tags["entra_pipeline/warehouse"], read_only=True) as con:
        assert con.execute(
            "SELECT connector_server FROM ops.sync_runs WHERE run_id = ?", [run_id]
        ).fetchall() == [("site-a",)]
