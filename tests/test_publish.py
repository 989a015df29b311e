"""Publication: a run's tables appear all at once, a failed run publishes only its ops rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from entra_pipeline.user_source.tables import USER_SOURCE_MEMORY_LIMIT
from entra_pipeline.warehouse.docs import column_comments, document_table, table_comment
from entra_pipeline.warehouse.errors import WarehouseError
from entra_pipeline.warehouse.ops_tables import create_ops_tables
from entra_pipeline.warehouse.publish import DEFAULT_MEMORY_LIMIT
from entra_pipeline.warehouse.resource import Warehouse
from tests.support import Spill, spill

FAIL_AT_SECOND_ASSET = {"value": False}


@dg.asset(key=["raw", "numbers"])
def numbers(warehouse: Warehouse) -> dg.MaterializeResult:
    with warehouse.transaction() as con:
        rows = warehouse.replace_table(con, "raw.numbers", "SELECT range AS n FROM range(?)", [5])
    warehouse.notify("demo_note", "info", "numbers written", {"rows": rows})
    return dg.MaterializeResult(metadata={"rows": rows})


@dg.asset(key=["staging", "doubled"], deps=[numbers])
def doubled(warehouse: Warehouse) -> None:
    with warehouse.transaction() as con:
        warehouse.replace_table(con, "staging.doubled", "SELECT n * 2 AS d FROM raw.numbers")
    if FAIL_AT_SECOND_ASSET["value"]:
        raise RuntimeError("boom in doubled")


def _run(path: Path, fail: bool) -> dg.ExecuteInProcessResult:
    FAIL_AT_SECOND_ASSET["value"] = fail
    return dg.materialize(
        [numbers, doubled],
        resources={"warehouse": Warehouse(path=str(path), tenant_id="tenant-a")},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_successful_run_publishes_tables_and_records_the_run(tmp_path: Path) -> None:
    db = tmp_path / "entra.duckdb"
    assert _run(db, fail=False).success
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT sum(d) FROM staging.doubled").fetchone() == (20,)
        run = con.execute(
            "SELECT tenant_id, status, rows_per_table::VARCHAR, error FROM ops.sync_runs"
        ).fetchall()
        assert [(t, s, json.loads(rows), e) for t, s, rows, e in run] == [
            ("tenant-a", "success", {"raw.numbers": 5, "staging.doubled": 5}, None)
        ]
        assert con.execute(
            "SELECT code, severity, details->>'$.rows' FROM ops.notifications"
        ).fetchall() == [("demo_note", "info", "5")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entra.duckdb", "entra.duckdb.lock"]


def test_failed_run_keeps_previous_tables_and_records_the_error(tmp_path: Path) -> None:
    db = tmp_path / "entra.duckdb"
    assert _run(db, fail=False).success
    with duckdb.connect(str(db)) as con:  # make the previous data recognisable
        con.execute("UPDATE raw.numbers SET n = n + 100")
    assert not _run(db, fail=True).success
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT min(n) FROM raw.numbers").fetchone() == (100,)
        statuses = con.execute(
            "SELECT status, error FROM ops.sync_runs ORDER BY started_at"
        ).fetchall()
        assert statuses == [
            ("success", None),
            ("failure", "step staging__doubled failed: RuntimeError: boom in doubled"),
        ]
        assert con.execute("SELECT count(*) FROM ops.notifications").fetchone() == (2,)
    assert not list(tmp_path.glob("entra.duckdb.run-*"))


READER = textwrap.dedent(
    """
    import sys, duckdb
    con = duckdb.connect(sys.argv[1], read_only=True)
    before = con.execute("SELECT count(*) FROM raw.numbers").fetchone()[0]
    print("open", before, flush=True)
    sys.stdin.readline()
    after = con.execute("SELECT count(*) FROM raw.numbers").fetchone()[0]
    print("still", after, flush=True)
    """
)


def test_reader_holding_the_file_is_never_refused_and_sees_complete_data(tmp_path: Path) -> None:
    db = tmp_path / "entra.duckdb"
    assert _run(db, fail=False).success
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None
        assert reader.stdin is not None
        assert reader.stdout.readline().strip() == "open 5"
        result = _run(db, fail=False)  # publishes while the reader holds its connection
        assert result.success
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == "still 5"
    finally:
        reader.wait(timeout=30)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM ops.sync_runs").fetchone() == (2,)


def test_warehouse_outside_a_run_says_how_to_use_it(tmp_path: Path) -> None:
    warehouse = Warehouse(path=str(tmp_path / "x.duckdb"))
    with pytest.raises(WarehouseError, match="used outside a Dagster run"), warehouse.transaction():
        pass


@dg.asset(key=["mdm", "other"])
def other_job_table(warehouse: Warehouse) -> None:
    with warehouse.transaction() as con:
        warehouse.replace_table(con, "mdm.other", "SELECT 42 AS answer")


@dg.asset(key=["raw", "slow"])
def publishes_while_another_run_finishes(warehouse: Warehouse) -> None:
    with warehouse.transaction() as con:
        warehouse.replace_table(con, "raw.slow", "SELECT 1 AS n")
    # Another job's run starts and publishes while this run is still building.
    other = dg.materialize(
        [other_job_table],
        resources={"warehouse": Warehouse(path=warehouse.path, tenant_id="tenant-a")},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert other.success


def test_runs_finishing_in_turn_keep_each_others_tables(tmp_path: Path) -> None:
    db = tmp_path / "entra.duckdb"
    assert _run(db, fail=False).success
    result = dg.materialize(
        [publishes_while_another_run_finishes],
        resources={"warehouse": Warehouse(path=str(db), tenant_id="tenant-a")},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT answer FROM mdm.other").fetchall() == [(42,)]
        assert con.execute("SELECT n FROM raw.slow").fetchall() == [(1,)]
        assert con.execute("SELECT count(*) FROM raw.numbers").fetchone() == (5,)
        assert con.execute("SELECT count(*) FROM ops.sync_runs").fetchone() == (3,)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_published_file_lock_and_created_folders_are_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "private" / "warehouse" / "entra.duckdb"
    chosen = _mode(tmp_path)
    assert _run(db, fail=False).success
    assert _run(db, fail=True).success is False  # a failed run publishes too (its ops rows)
    assert _mode(db) == 0o600
    assert _mode(db.with_name("entra.duckdb.lock")) == 0o600
    assert _mode(tmp_path / "private") == 0o700
    assert _mode(tmp_path / "private" / "warehouse") == 0o700
    assert _mode(tmp_path) == chosen  # a folder the user chose is left as it is


SPILLED: list[Spill] = []


@dg.asset(key=["raw", "spilled"])
def spilled(warehouse: Warehouse) -> None:
    """A temporary table larger than the run's memory limit: DuckDB writes part of it to disk."""
    with warehouse.transaction() as con:
        SPILLED.append(spill(con))
        warehouse.replace_table(con, "raw.spilled", "SELECT count(*) AS n FROM spilled")


def test_what_duckdb_spills_during_a_run_is_owner_only_and_removed_after(tmp_path: Path) -> None:
    db = tmp_path / "entra.duckdb"
    resources = {"warehouse": Warehouse(path=str(db), tenant_id="tenant-a", memory_limit="48MB")}
    SPILLED.clear()
    result = dg.materialize([spilled], resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    (seen,) = SPILLED
    assert seen.bytes > 0
    assert seen.folder.parent == tmp_path
    assert seen.folder.name.startswith("entra.duckdb.run-")
    assert seen.folder.name.endswith(".tmp")
    assert seen.mode == 0o700  # DuckDB's own default folder is 0755, its files 0644
    assert seen.files  # the spill files are in it, out of others' reach
    assert not seen.folder.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entra.duckdb", "entra.duckdb.lock"]


def test_work_copies_and_spill_folders_a_day_old_are_removed_by_the_next_run(
    tmp_path: Path,
) -> None:
    db = tmp_path / "entra.duckdb"
    old_copy, old_spill = tmp_path / "entra.duckdb.run-old", tmp_path / "entra.duckdb.run-old.tmp"
    recent = tmp_path / "entra.duckdb.run-recent.tmp"
    old_copy.write_bytes(b"work")
    for folder in (old_spill, recent):
        folder.mkdir()
        (folder / "duckdb_temp_storage_DEFAULT-0.tmp").write_bytes(b"spilled")
    two_days_ago = time.time() - 2 * 24 * 3600
    for path in (old_copy, old_spill):
        os.utime(path, (two_days_ago, two_days_ago))
    assert _run(db, fail=False).success
    assert not old_copy.exists()
    assert not old_spill.exists()
    assert recent.exists()  # another run's, maybe still at work


def test_a_file_published_before_permissions_were_tightened_becomes_owner_only(
    tmp_path: Path,
) -> None:
    db = tmp_path / "entra.duckdb"
    assert _run(db, fail=False).success
    db.chmod(0o644)
    assert _run(db, fail=False).success
    assert _mode(db) == 0o600


@dg.asset(key=["raw", "documented"])
def documented_while_another_run_finishes(warehouse: Warehouse) -> None:
    with warehouse.transaction() as con:
        warehouse.replace_table(con, "raw.documented", "SELECT 1 AS n")
        document_table(con, "raw.documented", "A documented table.", {"n": "The number one."})
        warehouse.replace_view(
            con,
            "raw.documented_v",
            "SELECT n AS number_one FROM raw.documented",
            "A documented view.",
            {"number_one": "n, renamed."},
        )
    other = dg.materialize(
        [other_job_table],
        resources={"warehouse": Warehouse(path=warehouse.path, tenant_id="tenant-a")},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert other.success


def test_tables_and_views_keep_their_documentation_when_copied_into_a_newer_file(
    tmp_path: Path,
) -> None:
    # Another run published while this one built: its tables and views are copied into the
    # newer file (CREATE TABLE AS copies no comment), documented as they were built.
    db = tmp_path / "entra.duckdb"
    result = dg.materialize(
        [documented_while_another_run_finishes],
        resources={"warehouse": Warehouse(path=str(db), tenant_id="tenant-a")},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT answer FROM mdm.other").fetchall() == [(42,)]
        assert con.execute("FROM raw.documented_v").fetchall() == [(1,)]
        assert table_comment(con, "raw.documented") == "A documented table."
        assert column_comments(con, "raw.documented") == {"n": "The number one."}
        assert table_comment(con, "raw.documented_v") == "A documented view."
        assert column_comments(con, "raw.documented_v") == {"number_one": "n, renamed."}
        assert table_comment(con, "ops.sync_runs").startswith("One row per sync run")


def test_a_view_with_an_undocumented_column_is_refused(tmp_path: Path) -> None:
    @dg.asset(key=["raw", "half_documented"])
    def half_documented(warehouse: Warehouse) -> None:
        with warehouse.transaction() as con:
            warehouse.replace_view(con, "raw.half_v", "SELECT 1 AS a, 2 AS b", "Half.", {"a": "A."})

    result = dg.materialize(
        [half_documented],
        resources={"warehouse": Warehouse(path=str(tmp_path / "e.duckdb"))},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "raw.half_v: columns b are undocumented" in str(failure.step_failure_data.error)
    with duckdb.connect(str(tmp_path / "e.duckdb"), read_only=True) as con:
        assert con.execute(
            "SELECT count(*) FROM duckdb_views() WHERE view_name = 'half_v'"
        ).fetchone() == (0,)


def test_ops_tables_written_before_the_connector_column_get_it(tmp_path: Path) -> None:
    db = tmp_path / "old.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE SCHEMA ops")
        con.execute(
            "CREATE TABLE ops.sync_runs (tenant_id VARCHAR, run_id VARCHAR, job VARCHAR, source "
            "VARCHAR, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, status VARCHAR, "
            "rows_per_table JSON, graph_requests BIGINT, graph_retries BIGINT, error VARCHAR)"
        )
        con.execute(
            "INSERT INTO ops.sync_runs VALUES ('t', 'r1', 'entra_id_sync', 'connector', now(), "
            "now(), 'success', '{}', 1, 0, NULL)"
        )
        create_ops_tables(con)
        assert con.execute("SELECT run_id, connector FROM ops.sync_runs").fetchall() == [
            ("r1", None)
        ]
        [(comment,)] = con.execute(
            "SELECT comment FROM duckdb_columns() WHERE table_name = 'sync_runs' AND "
            "column_name = 'connector'"
        ).fetchall()
        assert comment.startswith("The connector_name of the config")


SEEN_LIMITS: dict[str, str] = {}


@dg.asset(key=["mdm", "budgeted"])
def budgeted(warehouse: Warehouse) -> None:
    for name, limit in (("user_source", USER_SOURCE_MEMORY_LIMIT), ("warehouse", None)):
        with warehouse.transaction(limit) as con:
            [(SEEN_LIMITS[name],)] = con.execute(
                "SELECT current_setting('memory_limit')"
            ).fetchall()
            warehouse.replace_table(con, f"mdm.{name}", "SELECT 1 AS n")


def test_a_transaction_works_within_the_memory_limit_it_asks_for(tmp_path: Path) -> None:
    """The user source's steps ask DuckDB for a smaller budget than the warehouse's; a later
    transaction is back at the warehouse's."""
    result = dg.materialize(
        [budgeted],
        resources={"warehouse": Warehouse(path=str(tmp_path / "e.duckdb"), tenant_id="t")},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success

    def as_duckdb_says(limit: str) -> str:
        with duckdb.connect(config={"memory_limit": limit}) as con:
            [(said,)] = con.execute("SELECT current_setting('memory_limit')").fetchall()
            return str(said)

    assert {
        "warehouse": as_duckdb_says(DEFAULT_MEMORY_LIMIT),
        "user_source": as_duckdb_says(USER_SOURCE_MEMORY_LIMIT),
    } == SEEN_LIMITS
    assert SEEN_LIMITS["warehouse"] != SEEN_LIMITS["user_source"]
