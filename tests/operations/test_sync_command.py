"""`entra-pipeline sync` ends a failed run with one line that names the root cause, in its own
words (not Dagster's wrapper around it), and publishes nothing."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from entra_pipeline.emulator import Emulator
from entra_pipeline.preflight import check_connector
from entra_pipeline.run_once import run_sync
from tests.graph.graph_fixtures import graph_requests, token_requests
from tests.operations.operate_fixtures import SECRET_VARIABLE


def test_a_wrong_client_secret_is_the_last_line_of_a_failed_sync(
    emulator: Emulator,
    config_for: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = config_for(emulator)
    monkeypatch.setenv(SECRET_VARIABLE, "a-wrong-secret-for-this-test")
    assert run_sync(argparse.Namespace(config=str(config), full=False)) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(
        "entra_id_sync (incremental) failed; nothing was published: The token service rejected "
        f"the client secret of client id {emulator.client_id} in tenant {emulator.tenant_id} "
        "(AADSTS7000215): check client_secret / ENTRA_CLIENT_SECRET"
    )
    assert "a-wrong-secret-for-this-test" not in last
    assert "Dagster" not in last
    # Nothing published but the failure's own record.
    with duckdb.connect(str(config.with_name("entra.duckdb")), read_only=True) as con:
        found = con.execute("SELECT DISTINCT schema_name FROM duckdb_tables()").fetchall()
        [(status, error)] = con.execute("SELECT status, error FROM ops.sync_runs").fetchall()
    assert found == [("ops",)]
    assert status == "failure"
    assert "AADSTS7000215" in error


def test_a_missing_mapping_fails_the_sync_before_it_reads_graph(
    emulator: Emulator,
    config_for: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = tmp_path / "no-such-mapping.csv"
    config = config_for(emulator, mapping_path=str(missing))
    assert run_sync(argparse.Namespace(config=str(config), full=False)) == 1
    out = capsys.readouterr().out
    assert f"mapping {missing} is invalid (1 problem):" in out
    assert "the mapping CSV cannot be read ([Errno 2] No such file or directory" in out
    assert graph_requests(emulator) == []
    assert token_requests(emulator) == 0


def test_a_successful_sync_prints_the_short_log_and_verbose_prints_dagsters(
    emulator: Emulator,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = config_for(emulator)
    assert run_sync(argparse.Namespace(config=str(config), full=False, verbose=False)) == 0
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1] == (
        f"entra_id_sync (incremental) published to {config.with_name('entra.duckdb')}"
    )
    lines = err.splitlines()
    # Steps as they start and the Graph layer's progress; not Dagster's DEBUG events.
    assert "  step raw_entra" in lines
    assert any(line.startswith("  users: 1 pages, 60 rows in ") for line in lines), err
    assert not [line for line in lines if "DEBUG" in line or "STEP_SUCCESS" in line]
    assert len(lines) < 60
    assert run_sync(argparse.Namespace(config=str(config), full=False, verbose=True)) == 0
    verbose = capsys.readouterr().err
    assert " - DEBUG - entra_id_sync - " in verbose
    assert "STEP_SUCCESS" in verbose


def test_a_failed_sync_prints_no_stack_trace_unless_verbose(
    emulator: Emulator,
    config_for: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = config_for(emulator)
    monkeypatch.setenv(SECRET_VARIABLE, "a-wrong-secret-for-this-test")
    assert run_sync(argparse.Namespace(config=str(config), full=False, verbose=False)) == 1
    out, err = capsys.readouterr()
    assert '  File "' not in out + err  # no stack frame
    assert "  step raw_entra failed" in err.splitlines()
    assert run_sync(argparse.Namespace(config=str(config), full=False, verbose=True)) == 1
    assert 'entra_pipeline/graph/auth.py", line ' in capsys.readouterr().err


def _beside(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    ("where", "cause"),
    [
        (
            "parent_is_a_file",
            "{tmp}/a-file is a file, not a folder: name a duckdb_path in a folder",
        ),
        ("unwritable", "cannot create files in /sys/kernel ("),
        ("damaged", "duckdb_path {tmp}/entra.duckdb is damaged: DuckDB cannot read it (IO Error"),
    ],
)
def test_a_duckdb_path_that_cannot_be_written_is_named_by_check_and_sync(
    where: str,
    cause: str,
    emulator: Emulator,
    config_for: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A folder that is a file, one nobody may write in, a DuckDB file cut in half: `check`
    fails on it, and `sync` ends with its cause, makes no Graph request and leaves nothing of
    the run beside the file."""
    db = tmp_path / "entra.duckdb"
    if where == "damaged":
        assert run_sync(argparse.Namespace(config=str(config_for(emulator)), full=False)) == 0
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    (tmp_path / "a-file").write_text("")
    path = {
        "parent_is_a_file": tmp_path / "a-file" / "x.duckdb",
        "unwritable": Path("/sys/kernel/entra.duckdb"),
    }.get(where, db)
    config = config_for(emulator, duckdb_path=str(path))
    before = _beside(tmp_path)
    assert check_connector(str(config)).exit_code == 1
    capsys.readouterr()
    seen = len(graph_requests(emulator))
    assert run_sync(argparse.Namespace(config=str(config), full=False)) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("entra_id_sync (incremental) failed; nothing was published: ")
    assert cause.format(tmp=tmp_path) in last
    assert _beside(tmp_path) == before  # nothing of the run stays behind
    assert graph_requests(emulator)[seen:] == []


def test_a_mapping_row_naming_no_column_fails_the_sync_before_it_reads_graph(
    emulator: Emulator,
    config_for: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A source attribute that is no column of the filtered tables: the run checks the mapping
    against the columns the models build (in memory, offline) before any token or Graph
    request, and says what check says."""
    mapping = tmp_path / "mapping.csv"
    shipped = (Path(__file__).resolve().parents[2] / "mappings" / "entra_id.csv").read_text()
    mapping.write_text(shipped + "User,acountEnabled,User.Typo,a typo\n")
    config = config_for(emulator, mapping_path=str(mapping))
    assert run_sync(argparse.Namespace(config=str(config), full=False)) == 1
    said = capsys.readouterr().out.strip().splitlines()
    assert said[-2].endswith(f"nothing was published: mapping {mapping} is invalid (1 problem):")
    assert said[-1] == (
        "  - row 38: source_attribute 'acountEnabled' is not a column of staging.filtered_users; "
        "nearest valid: accountEnabled"
    )
    assert graph_requests(emulator) == []
    assert token_requests(emulator) == 0
