"""One app registration's Graph budget across connectors (docs/scaling-out.md): Graph's limit for
signInActivity holds per app across tenants, so two connectors of one app read it in turns, on
a Dagster concurrency pool of one slot per app. Two emulators (two tenants) share one app's
sign-in budget here (one `Faults`, whose sign-in window is then the app's), and the two
connectors run at once in separate processes, as two workers would.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dagster as dg
import duckdb
import sqlalchemy
import yaml

from entra_pipeline.connector.sign_in_pool import sign_in_pool, sign_in_slot
from entra_pipeline.emulator import Emulator, EmulatorConfig, Faults, running_emulator

MAPPING = Path(__file__).resolve().parents[1] / "mappings" / "entra_id.csv"
APP = "5a1f0c3e-7d2b-4c11-9e8a-00000000a99b"
# A Graph minute lasts 3 s here; Graph allows the app 10 sign-in reads a minute; each connector
# paces itself at 150 a (real) minute, 7.5 in 3 s: alone within the budget, two at once not.
TIME_SCALE = 0.05
APP_SIGN_IN_PER_MINUTE = 10
CONNECTOR_PACE = 150
USERS = 2_600  # 6 sign-in pages of 500 each


def _sync_both(tmp_path: Path, home: Path | None) -> tuple[list[Emulator], int, list[Any]]:
    """Both connectors synced at once; (emulators, sign-in 429s, their sign-in requests)."""
    faults = Faults(sign_in_per_minute=APP_SIGN_IN_PER_MINUTE)
    faults.time_scale = TIME_SCALE
    with ExitStack() as stack:
        emulators = [
            stack.enter_context(
                running_emulator(
                    EmulatorConfig(
                        users=USERS, devices=5, seed=31 + n, client_id=APP, faults=faults
                    )
                )
            )
            for n in range(2)
        ]
        env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
        if home is not None:
            env["DAGSTER_HOME"] = str(home)
            with dg.DagsterInstance.from_config(str(home)):
                pass  # its storage created once, before two processes open it at once
        processes = []
        for n, emu in enumerate(emulators):
            env[f"TEST_APP_SECRET_{n}"] = emu.client_secret
            config = tmp_path / f"tenant{n}.yaml"
            document = {
                "connector_name": f"Tenant {n}",
                **emu.connection_settings(f"TEST_APP_SECRET_{n}"),
                "duckdb_path": str(tmp_path / f"tenant{n}.duckdb"),
                "mapping_path": str(MAPPING),
                "users": {"sign_in_requests_per_minute": CONNECTOR_PACE},
                "user_source": {"enabled": False},
            }
            config.write_text(yaml.safe_dump(document, sort_keys=False))
        for n in range(2):
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "entra_pipeline.cli",
                        "sync",
                        "--config",
                        str(tmp_path / f"tenant{n}.yaml"),
                    ],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        for process in processes:
            output, _ = process.communicate(timeout=600)
            assert process.returncode == 0, output
        sign_ins = [
            [r for r in emu.requests if "signInActivity" in r.query.get("$select", "")]
            for emu in emulators
        ]
        return emulators, faults.injected["throttle"], sign_ins


def _overlap(first: list[Any], second: list[Any]) -> bool:
    a = (min(r.at for r in first), max(r.at for r in first))
    b = (min(r.at for r in second), max(r.at for r in second))
    return a[0] < b[1] and b[0] < a[1]


def test_two_connectors_of_one_app_read_sign_in_activity_in_turns(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    emulators, throttled, sign_ins = _sync_both(tmp_path, home)
    assert all(len(requests) >= 6 for requests in sign_ins)
    assert not _overlap(*sign_ins)  # one pass, then the other
    assert throttled == 0
    for n, emu in enumerate(emulators):
        with duckdb.connect(str(tmp_path / f"tenant{n}.duckdb"), read_only=True) as con:
            assert con.execute("SELECT count(*) FROM raw.sign_in_activity").fetchall() == [
                (emu.tenant.user_count,)
            ]
    # The pool is the app's, with one slot, free again.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        info = instance.event_log_storage.get_concurrency_info(sign_in_pool(APP))
        assert (info.slot_count, info.active_slot_count) == (1, 0)


def test_without_the_pool_they_throttle_each_other(tmp_path: Path) -> None:
    """The control: an instance that keeps no pools (in memory), both passes at once."""
    _, throttled, sign_ins = _sync_both(tmp_path, None)
    assert _overlap(*sign_ins)
    assert throttled > 0


def _claim_in_turn(home: str, run: int, meetings: dict[str, Any], held: Any) -> None:
    """One process's sign-in pass (a connector run on this machine) against the instance at
    `home`, holding the slot 0.2 s; each statement that starts with a key of `meetings` first
    waits (up to its timeout) at its barrier for the other process."""

    def before_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        for prefix, meeting in meetings.items():
            if statement.startswith(prefix):
                with contextlib.suppress(threading.BrokenBarrierError):
                    meeting.wait()

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", before_execute)
    with dg.DagsterInstance.from_config(home) as instance:
        context: Any = SimpleNamespace(
            instance=instance,
            run=SimpleNamespace(run_id=f"run-{run}"),
            log=logging.getLogger(__name__),
        )
        with sign_in_slot(context, APP):
            start = time.time()
            time.sleep(0.2)
            held.put((start, time.time()))


def test_two_processes_claiming_at_the_same_moment_never_both_hold_the_slot(
    tmp_path: Path,
) -> None:
    """The interleaving CI hit by chance, made certain. Dagster serializes an instance's SQLite
    connections within a process, not across processes, and SQLite ignores SELECT ... FOR
    UPDATE: two processes that both count the one free slot before either queues its step, and
    both select it before either writes itself into it, both hold it."""
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(tmp_path)):
        pass  # its storage created once, before two processes open it at once
    spawn = multiprocessing.get_context("spawn")
    meetings = {
        "INSERT INTO pending_steps ": spawn.Barrier(2, timeout=2.0),
        "UPDATE concurrency_slots SET run_id=?, step_key=? ": spawn.Barrier(2, timeout=2.0),
    }
    held = spawn.Queue()
    processes = [
        spawn.Process(target=_claim_in_turn, args=(str(tmp_path), n, meetings, held))
        for n in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    (_, first_end), (second_start, _) = sorted(held.get(timeout=5) for _ in processes)
    assert first_end <= second_start  # one, then the other
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        info = instance.event_log_storage.get_concurrency_info(sign_in_pool(APP))
        assert (info.slot_count, info.active_slot_count) == (1, 0)
