"""A run killed with -9: Dagster shows it FAILURE, ops.sync_runs records it, and the next run
removes its leftovers (work copy, scratch folder, owner lock) as soon as its process is gone, and
keeps Dagster's run retries from launching it again (it is redone already)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from entra_pipeline.config_file import load_settings
from entra_pipeline.definitions import build_definitions
from entra_pipeline.emulator import Emulator
from entra_pipeline.names import CONNECTOR_JOB, WILL_RETRY_TAG

SYNC = textwrap.dedent(
    """
    import sys
    import dagster as dg
    from entra_pipeline.definitions import build_definitions
    from entra_pipeline.names import CONNECTOR_JOB
    from entra_pipeline.config_file import load_settings

    config = sys.argv[1]
    definitions = build_definitions(load_settings(config), config)
    with dg.DagsterInstance.get() as instance:
        definitions.resolve_job_def(CONNECTOR_JOB).execute_in_process(instance=instance)
    """
)


def wait_for(condition: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_killed_run_is_failed_recorded_and_cleaned_up_by_the_next_run(
    emulator: Emulator,
    config_for: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    # Run retries on, as deploy/celery/dagster.yaml ships them: the dead run, being redone by
    # the run that found it, must not be retried as well.
    (home / "dagster.yaml").write_text("run_retries:\n  enabled: true\n  max_retries: 1\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    config = config_for(emulator)
    db = tmp_path / "entra.duckdb"
    # The run hangs on its device listing: killed there, mid-extraction.
    emulator.faults.slow_next("/devices", seconds=6)
    worker = subprocess.Popen([sys.executable, "-c", SYNC, str(config)], env=dict(os.environ))
    try:
        wait_for(lambda: any(tmp_path.glob("extract-*")) and any(tmp_path.glob("*.run-*")))
        wait_for(lambda: any(r.path == "/v1.0/devices" for r in emulator.requests))
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    [work] = [p for p in tmp_path.glob("entra.duckdb.run-*") if not p.name.endswith(".tmp")]
    dead = work.name.split(".run-")[1]
    assert (tmp_path / f"entra.duckdb.owner-{dead}").exists()

    emulator.faults.clear()
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.STARTED
        definitions = build_definitions(load_settings(config), str(config))
        result = definitions.resolve_job_def(CONNECTOR_JOB).execute_in_process(instance=instance)
        assert result.success
        failed = instance.get_run_by_id(dead)
        assert failed.status == dg.DagsterRunStatus.FAILURE
        assert failed.tags[WILL_RETRY_TAG] == "false"

    assert sorted(p.name for p in tmp_path.iterdir() if dead in p.name) == []
    assert not any(tmp_path.glob("extract-*"))
    with duckdb.connect(str(db), read_only=True) as con:
        runs = dict(con.execute("SELECT run_id, status FROM ops.sync_runs").fetchall())
        [(error,)] = con.execute(
            "SELECT error FROM ops.sync_runs WHERE run_id = ?", [dead]
        ).fetchall()
        [(code,)] = con.execute(
            "SELECT code FROM ops.notifications WHERE run_id = ?", [dead]
        ).fetchall()
    assert runs == {dead: "failure", result.run_id: "success"}
    assert "the run's process ended without finishing" in error
    assert code == "run_died"
