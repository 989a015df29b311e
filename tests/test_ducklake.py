"""`warehouse.backend: ducklake` end to end: connectors of two tenants against their emulators,
publishing into one DuckLake catalog on a real PostgreSQL server (127.0.0.1, password from
PGPASSWORD), the extensions from their PyPI packages. Each tenant's publication is one DuckLake
transaction: readers see its old or new rows, the other tenant's are untouched, a publication
that fails half-way leaves the lake as it was, and a connector whose file is lost carries on
from the lake.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
import yaml

from entra_pipeline.config_file import load_settings
from entra_pipeline.definitions import build_definitions
from entra_pipeline.emulator import Emulator, EmulatorConfig, running_emulator
from entra_pipeline.names import CONNECTOR_JOB
from entra_pipeline.resources import ConnectorResource
from entra_pipeline.settings import ConfigError
from entra_pipeline.warehouse.lake import LakeTarget, install_extensions, lake_connection, reading
from tests.postgres import Postgres, running_postgres
from tests.support import spill

MAPPING = Path(__file__).resolve().parents[1] / "mappings" / "entra_id.csv"
_databases = itertools.count()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with running_postgres() as server:
        yield server


@dataclass
class Connector:
    emulator: Emulator
    config: Path
    db: Path
    secret_variable: str

    def run(self, monkeypatch: pytest.MonkeyPatch) -> dg.ExecuteInProcessResult:
        monkeypatch.setenv(self.secret_variable, self.emulator.client_secret)
        settings = load_settings(self.config)
        connector = ConnectorResource(
            config_path=str(self.config), max_retries=2, backoff_base_seconds=0.01
        )
        job = build_definitions(settings, str(self.config), connector).resolve_job_def(
            CONNECTOR_JOB
        )
        return job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            return con.execute(sql, params or []).fetchall()


@dataclass
class Lake:
    target: LakeTarget
    connectors: list[Connector]

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with reading(self.target) as con:
            return con.execute(sql, params or []).fetchall()


@pytest.fixture
def lake(postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lake]:
    """Two tenants' connectors (seeds 11 and 12), each with its own file, one lake."""
    database = f"lake_{next(_databases)}"
    postgres.psql(f"CREATE DATABASE {database}")
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    target = LakeTarget(postgres.catalog(database), str(tmp_path / "lake-data") + "/")
    with (
        running_emulator(EmulatorConfig(users=40, devices=30, seed=11)) as first,
        running_emulator(EmulatorConfig(users=25, devices=20, seed=12)) as second,
    ):
        connectors = []
        for n, emu in enumerate((first, second)):
            variable = f"TEST_LAKE_SECRET_{n}"
            config = tmp_path / f"tenant{n}.yaml"
            db = tmp_path / f"tenant{n}.duckdb"
            document = {
                "connector_name": f"Tenant {n}",
                **emu.connection_settings(variable),
                "duckdb_path": str(db),
                "mapping_path": str(MAPPING),
                "user_source": {"enabled": False},
                "warehouse": {
                    "backend": "ducklake",
                    "catalog": target.catalog,
                    "data_path": target.data_path,
                },
            }
            config.write_text(yaml.safe_dump(document, sort_keys=False))
            connectors.append(Connector(emu, config, db, variable))
        yield Lake(target, connectors)


def _publish_both(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> list[Connector]:
    for connector in lake.connectors:
        assert connector.run(monkeypatch).success
    return lake.connectors


def _by_tenant(lake: Lake, table: str) -> dict[str, int]:
    return dict(lake.query(f"SELECT tenant_id, count(*) FROM {table} GROUP BY ALL"))


def test_two_tenants_publish_into_one_lake_that_analysts_attach(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = _publish_both(lake, monkeypatch)
    for table in ("neurons.users", "neurons.devices", "raw.users", "staging.filtered_devices"):
        assert _by_tenant(lake, table) == {
            c.emulator.tenant_id: c.query(f"SELECT count(*) FROM {table}")[0][0]
            for c in lake.connectors
        }, table
    # Row for row what the connector's own file holds.
    mine = sorted(first.query('SELECT * FROM neurons.users ORDER BY "User.UPN"'))
    assert (
        sorted(
            lake.query(
                "SELECT * FROM neurons.users WHERE tenant_id = ?", [first.emulator.tenant_id]
            )
        )
        == mine
    )
    # Each tenant's rows name its connector, so analysts can tell tenants apart by name.
    assert lake.query(
        "SELECT DISTINCT tenant_id, connector FROM neurons.devices ORDER BY connector"
    ) == [(c.emulator.tenant_id, f"Tenant {n}") for n, c in enumerate(lake.connectors)]
    # Views read the lake's own tables; comments travel with the tables.
    assert lake.query("SELECT count(*) FROM neurons.users_v")[0][0] == sum(
        c.query("SELECT count(*) FROM neurons.users")[0][0] for c in lake.connectors
    )
    [(comment,)] = lake.query(
        "SELECT comment FROM duckdb_columns() WHERE database_name = 'lake' AND "
        "schema_name = 'raw' AND table_name = 'users' AND column_name = 'userPrincipalName'"
    )
    assert comment
    runs = lake.query("SELECT tenant_id, job, status FROM ops.sync_runs ORDER BY started_at")
    assert runs == [(c.emulator.tenant_id, CONNECTOR_JOB, "success") for c in lake.connectors]


def test_an_analyst_attaches_the_lake_from_plain_duckdb(
    lake: Lake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _publish_both(lake, monkeypatch)
    # `entra-pipeline lake-extensions` installs them once; then DuckDB attaches as documented.
    extensions = tmp_path / "extensions"
    install_extensions(extensions)
    with duckdb.connect(config={"extension_directory": str(extensions)}) as con:
        con.execute(f"ATTACH 'ducklake:{lake.target.catalog}' AS entra (READ_ONLY)")
        rows = con.execute(
            "SELECT tenant_id, count(*) FROM entra.neurons.devices GROUP BY ALL ORDER BY 1"
        ).fetchall()
    assert rows == sorted(
        (c.emulator.tenant_id, c.query("SELECT count(*) FROM neurons.devices")[0][0])
        for c in lake.connectors
    )


def test_a_tenant_publishes_alone_and_readers_see_its_old_or_new_rows(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = _publish_both(lake, monkeypatch)
    others = sorted(
        lake.query("SELECT * FROM raw.users WHERE tenant_id = ?", [second.emulator.tenant_id])
    )
    tenant = first.emulator.tenant
    before = _by_tenant(lake, "raw.users")[tenant.tenant_id]
    for n in range(5):
        tenant.add(
            "user",
            {
                "userPrincipalName": f"hire{n}@{tenant.domain}",
                "displayName": f"Hire {n}",
                "accountEnabled": True,
                "userType": "Member",
                "businessPhones": [],
                "assignedLicenses": [],
            },
        )
    seen: set[int] = set()
    stop = threading.Event()

    def read() -> None:
        with reading(lake.target) as con:
            while not stop.is_set():
                con.execute("BEGIN TRANSACTION")
                [(count,)] = con.execute(
                    "SELECT count(*) FROM raw.users WHERE tenant_id = ?", [tenant.tenant_id]
                ).fetchall()
                con.execute("COMMIT")
                seen.add(int(count))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert first.run(monkeypatch).success
    finally:
        stop.set()
        reader.join()
    assert seen <= {before, before + 5}
    assert _by_tenant(lake, "raw.users")[tenant.tenant_id] == before + 5
    assert (
        sorted(
            lake.query("SELECT * FROM raw.users WHERE tenant_id = ?", [second.emulator.tenant_id])
        )
        == others
    )


def test_a_publication_that_fails_half_way_leaves_the_lake_and_the_file_as_they_were(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = lake.connectors
    assert first.run(monkeypatch).success
    tenant = first.emulator.tenant
    users = sorted(lake.query("SELECT id, accountEnabled FROM raw.users"))
    local = sorted(first.query("SELECT id, accountEnabled FROM raw.users"))
    # history.changes comes late in the publication: a type the lake will not take there fails
    # it after raw, staging and neurons were replaced in the same transaction.
    with reading(lake.target) as con:
        con.execute("DROP TABLE history.changes")
        con.execute("CREATE TABLE history.changes (tenant_id VARCHAR, run_id INTEGER)")
    victim = next(u for u in tenant.users() if u.get("accountEnabled"))
    tenant.update(victim["id"], accountEnabled=False)
    result = first.run(monkeypatch)
    # The publication is the job's last step: the run fails with it, naming why, and nothing
    # after it says "published".
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "publication__entra_id_sync"
    assert "history.changes.run_id is VARCHAR in this run and INTEGER in the lake" in str(
        failure.event_specific_data.error.message  # type: ignore[union-attr]
    )
    assert sorted(lake.query("SELECT id, accountEnabled FROM raw.users")) == users
    assert sorted(first.query("SELECT id, accountEnabled FROM raw.users")) == local
    [(status, error)] = first.query(
        "SELECT status, error FROM ops.sync_runs ORDER BY started_at DESC LIMIT 1"
    )
    assert status == "failure"
    assert error.startswith(f"publishing to ducklake:{lake.target.catalog} failed:")
    assert "history.changes.run_id is VARCHAR in this run and INTEGER in the lake" in error


def test_a_connector_whose_file_is_lost_carries_on_from_the_lake(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = lake.connectors
    assert first.run(monkeypatch).success
    links = first.query("SELECT collection, delta_link FROM ops.delta_state ORDER BY 1")
    first.db.unlink()
    seen = len(first.emulator.requests)
    assert first.run(monkeypatch).success
    paths = {r.path for r in first.emulator.requests[seen:]}
    assert "/v1.0/users/delta" in paths  # the delta links came back from the lake
    assert "/v1.0/devices" not in paths
    assert [c for c, _ in links] == [
        c for (c,) in first.query("SELECT collection FROM ops.delta_state ORDER BY 1")
    ]


def test_what_a_lake_connection_spills_is_owner_only_and_removed_after(
    postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = f"lake_{next(_databases)}"
    postgres.psql(f"CREATE DATABASE {database}")
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    target = LakeTarget(postgres.catalog(database), str(tmp_path / "lake-data") + "/")
    with lake_connection(target, memory_limit="48MB") as con:
        seen = spill(con)
    assert seen.bytes > 0
    assert seen.mode == 0o700  # an in-memory DuckDB's default is ./.tmp, 0755 with 0644 files
    assert seen.files
    assert not seen.folder.exists()


@pytest.mark.parametrize(
    ("warehouse", "message"),
    [
        (
            {
                "backend": "ducklake",
                "catalog": "postgres:dbname=x host=h user=u password=hunter2",
                "data_path": "/d",
            },
            "must not hold the password: set PGPASSWORD",
        ),
        ({"backend": "ducklake", "catalog": "postgres:dbname=x"}, "backend ducklake needs"),
        (
            {"backend": "ducklake", "catalog": "sqlite:lake.sqlite", "data_path": "/d"},
            "'sqlite' catalogs are not supported",
        ),
        ({"catalog": "postgres:dbname=x", "data_path": "/d"}, "are for backend ducklake"),
        ({"backend": "iceberg"}, "warehouse.backend"),
    ],
)
def test_a_bad_warehouse_section_is_a_config_error_naming_it(
    tmp_path: Path, warehouse: dict[str, Any], message: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "tenant_id": "contoso.onmicrosoft.com",
                "client_id": "00000000-0000-4000-8000-000000000001",
                "client_secret": "s",
                "warehouse": warehouse,
            }
        )
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    assert message in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_the_extension_directory_a_process_installs_goes_with_it() -> None:
    """Each process installs the packaged extensions in a private folder of its own; nothing of
    it stays in the temporary directory after the process."""
    code = (
        "from entra_pipeline.warehouse.lake import _extension_directory\n"
        "folder = _extension_directory()\n"
        "print(folder, sorted(p.name for p in folder.rglob('*.duckdb_extension')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    folder, installed = done.stdout.strip().split(" ", 1)
    assert installed == "['ducklake.duckdb_extension', 'postgres_scanner.duckdb_extension']"
    assert not Path(folder).exists()
