"""`entra-pipeline demo` as a user runs it: the emulator, both jobs, progress as it goes, and a
published file the DuckDB CLI opens."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from rich.console import Console

from entra_pipeline import run_log

REPO = Path(__file__).resolve().parents[1]


def test_the_demo_publishes_both_jobs_and_says_what_it_does_as_it_goes(tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "entra_pipeline.cli",
            "demo",
            "--users",
            "300",
            "--devices",
            "400",
            "--db",
            str(db),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Each step as it starts, the Graph layer's lines, and the end of each run.
    for line in (
        "  step raw_entra",
        "  step staging__filtered_users",
        "  step neurons__users_neurons_users_valid",
        "  step mdm_directory",
    ):
        assert line in output.splitlines(), line
    assert re.search(r"^  users: 3 pages, 300 rows in \d+s .*\(done\)$", output, re.M)
    # The connector publishes 18 tables (3 of them reports), ops.delta_state and history.changes;
    # the user source 6 and ops.delta_state.
    assert len(re.findall(rf"^  Published 20 tables to {re.escape(str(db))}: ", output, re.M)) == 2
    assert re.search(rf"^  Published 7 tables to {re.escape(str(db))}: ", output, re.M)
    # Then a night of changes, and the connector again, by delta query: it says what changed.
    assert re.search(r"^A night later: \d+ changes in the tenant \(.*users deleted", output, re.M)
    assert "  step raw_entra" in output.split("A night later:")[1]
    assert re.search(
        r"^  users: delta round with \d+ changed and \d+ removed objects$", output, re.M
    )
    assert "What the incremental run changed (history.changes):" in output
    assert re.search(r"^  user\s+updated\s+\d+$", output, re.M)
    # A notification's [code] reaches the terminal as written (rich markup is off).
    assert "  [attributes_not_synchronized_some] Custom attribute(s) have no value" in output
    with duckdb.connect(str(db), read_only=True) as con:
        [(users,)] = con.execute("SELECT count(*) FROM neurons.users").fetchall()
    assert re.search(rf"^  neurons\.users\s+{users} rows$", output, re.M)
    with duckdb.connect(str(db), read_only=True) as con:
        runs = con.execute(
            "SELECT job, status, graph_requests FROM ops.sync_runs ORDER BY started_at"
        ).fetchall()
        [(changes,)] = con.execute("SELECT count(*) FROM history.changes").fetchall()
    assert [(job, status) for job, status, _ in runs] == [
        ("entra_id_sync", "success"),
        ("mdm_user_source_sync", "success"),
        ("entra_id_sync", "success"),
    ]
    assert runs[2][2] < runs[0][2] / 2  # the incremental run reads a fraction of the first
    assert changes > 0
    cli = subprocess.run(
        [
            str(Path(sys.executable).parent / "duckdb"),
            "-readonly",
            str(db),
            "-csv",
            "-noheader",
            "-c",
            "SELECT count(*) FROM neurons.users_v",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.strip() == str(users)


def test_without_a_terminal_a_status_line_fills_every_silence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run_log, "HEARTBEAT_SECONDS", 0.6)
    out = io.StringIO()
    progress = run_log.RunProgress(Console(file=out, force_terminal=False, width=200))
    progress.begin("entra_id_sync")
    progress.start_heartbeat()
    try:
        time.sleep(2.8)
    finally:
        progress.stop_heartbeat()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2
    assert all(
        re.fullmatch(r"  … entra_id_sync: starting \(\d+s; job \d+s\)", line) for line in lines
    )


def _demo(db: Path, *options: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "entra_pipeline.cli", "demo", *options, "--db", str(db)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _night(output: str) -> dict[str, int]:
    """What the demo says its night changed: {"users deleted": 2, ...}."""
    found = re.search(r"^A night later: \d+ changes in the tenant \((.*)\)\.", output, re.M)
    assert found, output
    return {kind: int(n) for n, kind in re.findall(r"(\d+) ([a-z -]+?)(?:,|$)", found.group(1))}


def test_a_second_demo_on_the_same_database_records_only_the_night_it_adds(
    tmp_path: Path,
) -> None:
    """The synthetic tenant is kept beside the database (seed, size, clock, nights): a second
    demo serves the same directory, follows the delta links the first left, and records only
    the changes of its own night."""
    db = tmp_path / "demo.duckdb"
    options = ("--users", "300", "--devices", "200")  # 6 users: every kind of user change
    _demo(db, *options)
    second = _demo(db, *options)
    assert "(seed 42, as the last demo left it: 1 night of changes)" in second
    night = _night(second)
    with duckdb.connect(str(db), read_only=True) as con:
        runs = con.execute("SELECT run_id, job FROM ops.sync_runs ORDER BY started_at").fetchall()
        assert [job for _, job in runs] == [
            "entra_id_sync",
            "mdm_user_source_sync",
            "entra_id_sync",
        ] * 2
        # Time alone may carry an object past a stale threshold between the demos (the history
        # records that flip); anything else would be a change the demo did not make.
        [(recorded,)] = con.execute(
            "SELECT count(*) FROM history.changes WHERE run_id = ? AND NOT (attribute = "
            "'stale' AND old_value = 'false' AND new_value = 'true')",
            [runs[3][0]],
        ).fetchall()
        last = dict(
            con.execute(
                "SELECT entity || ' ' || change, count(DISTINCT object_id) FROM history.changes "
                "WHERE run_id = ? AND entity IN ('user', 'device') GROUP BY ALL",
                [runs[5][0]],
            ).fetchall()
        )
        resyncs = con.execute(
            "SELECT count(*) FROM ops.notifications WHERE code = 'delta_resync'"
        ).fetchone()
    # The second demo's first runs find the database as the first demo left it: no change.
    assert recorded == 0
    assert resyncs == (0,)  # its delta links were followed, not read again in full
    # Its incremental run records exactly its own night: users deleted and added, devices
    # deleted or re-joined (a re-joined device is a new object: the old one removed).
    assert night["users deleted"] > 0
    assert night["users added"] > 0
    assert last["user removed"] == night["users deleted"]
    assert last["user added"] == night["users added"]
    rejoined = night.get("devices re-joined", 0)
    assert last.get("device removed", 0) == night.get("devices deleted", 0) + rejoined
    assert last.get("device added", 0) == rejoined


@pytest.mark.parametrize(
    ("db", "cause"),
    [
        ("{tmp}/a-file/demo.duckdb", "{tmp}/a-file is a file, not a folder"),
        ("/sys/kernel/demo.duckdb", "cannot create files in /sys/kernel ("),
    ],
)
def test_a_demo_database_in_a_folder_it_cannot_write_is_one_line(
    db: str, cause: str, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "entra_pipeline.cli", "demo", "--db", db.format(tmp=tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == ""
    [line] = result.stdout.splitlines()
    assert line.startswith(f"demo --db {db.format(tmp=tmp_path)}: {cause.format(tmp=tmp_path)}")
