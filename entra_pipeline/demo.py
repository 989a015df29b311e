"""`entra-pipeline demo`: the whole sync against the bundled Graph emulator, no tenant needed.

Starts the emulator with a synthetic tenant, writes a connector config for it, runs the jobs
in-process through the real MSAL and httpx code, and prints what was published.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import time
from pathlib import Path

import dagster as dg
import duckdb
import yaml
from rich.console import Console

from entra_pipeline.definitions import build_definitions
from entra_pipeline.emulator import Emulator, EmulatorConfig, running_emulator
from entra_pipeline.jobs import CONNECTOR_JOB, USER_SOURCE_JOB
from entra_pipeline.secrets import redact
from entra_pipeline.settings import load_settings
from entra_pipeline.warehouse.files import private_directories

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET_VARIABLE = "ENTRA_DEMO_CLIENT_SECRET"
DEMO_JOBS = (CONNECTOR_JOB, USER_SOURCE_JOB)


class _ProgressLines(logging.Handler):
    """The Graph layer's progress (pages, rows, rows/s, retries, waits) on the terminal while the
    demo's jobs run, through rich (installed with Dagster)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)

    def emit(self, record: logging.LogRecord) -> None:
        style = "yellow" if record.levelno >= logging.WARNING else "dim"
        self.console.print(f"  {redact(record.getMessage())}", style=style)


def run_demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    progress = _ProgressLines()
    graph_log = logging.getLogger("entra_pipeline.graph")
    graph_log.addHandler(progress)
    graph_log.setLevel(logging.INFO)
    try:
        return _run_demo(args, started)
    finally:
        graph_log.removeHandler(progress)


def _run_demo(args: argparse.Namespace, started: float) -> int:
    db = Path(args.db).resolve()
    private_directories(db.parent)
    print(
        f"Starting the Graph emulator: {args.users} users, {args.devices} devices (seed {args.seed})"
    )
    with running_emulator(
        EmulatorConfig(users=args.users, devices=args.devices, seed=args.seed)
    ) as emulator:
        config_file = db.with_name(f"{db.stem}.connector.yaml")
        os.environ[SECRET_VARIABLE] = emulator.client_secret
        config_file.write_text(yaml.safe_dump(_demo_config(emulator, db), sort_keys=False))
        print(f"Connector config: {config_file} (secret from ${SECRET_VARIABLE})")
        definitions = build_definitions(load_settings(config_file), str(config_file))
        failed = []
        with dg.DagsterInstance.ephemeral() as instance:
            for job_name in DEMO_JOBS:
                print(f"Running job {job_name} ...", flush=True)
                result = definitions.resolve_job_def(job_name).execute_in_process(
                    instance=instance,
                    raise_on_error=False,
                    run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                )
                if not result.success:
                    failed.append(job_name)
    _print_summary(db, time.monotonic() - started)
    if failed:
        print(f"FAILED: {', '.join(failed)} (see ops.sync_runs.error above)")
        return 1
    return 0


def _demo_config(emulator: Emulator, db: Path) -> dict[str, object]:
    return {
        "connector_name": "Demo (Graph emulator)",
        **emulator.connection_settings(SECRET_VARIABLE),
        "duckdb_path": str(db),
        "mapping_path": str(REPO_ROOT / "mappings" / "entra_id.csv"),
        # The MDM user source with one custom attribute of each kind; no SMTP, so invitations
        # are recorded, not sent.
        "user_source": {
            "name": "Demo",
            "managed_apple_id": "upn",
            "appleid_subdomain": True,
            "custom_attributes": [
                "employeeId",
                "extensionAttribute1",
                emulator.tenant.extension_property("costCenter"),
            ],
            "templates": {"device_name": "${userFirstName} (${extensionAttribute1})"},
            "smtp": None,
        },
    }


def _print_summary(db: Path, seconds: float) -> None:
    with duckdb.connect(str(db), read_only=True) as con:
        tables = con.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_catalog = current_database() ORDER BY 1"
        ).fetchall()
        print(f"\nPublished to {db}:")
        for (table,) in tables:
            count = con.execute(f"SELECT count(*) FROM {table}").fetchone()
            print(f"  {table:<32} {count[0] if count else 0:>9} rows")
        runs = con.execute(
            "SELECT job, status, graph_requests, graph_retries, error FROM ops.sync_runs "
            "ORDER BY started_at DESC LIMIT ?",
            [len(DEMO_JOBS)],
        ).fetchall()
        print("\nRuns:")
        for job, status, requests, retries, error in reversed(runs):
            line = f"  {job:<24} {status:<8} {requests} Graph requests, {retries} retries"
            print(line + (f"\n    error: {error}" if error else ""))
        _print_user_source(con)
        notes = con.execute(
            "SELECT source, severity, code, message FROM ops.notifications "
            "WHERE run_id IN (SELECT run_id FROM ops.sync_runs ORDER BY started_at DESC LIMIT ?) "
            "ORDER BY notified_at",
            [len(DEMO_JOBS)],
        ).fetchall()
        print(f"\nNotifications: {len(notes)}")
        for source, severity, code, message in notes:
            print(f"  [{source} {severity}] {code}: {message}")
    print(f"\nDone in {seconds:.1f}s. Query it (read-only, safe while a sync runs):")
    print(f'  .venv/bin/duckdb -readonly {shlex.quote(str(db))} -c "FROM neurons.users LIMIT 5"')


def _print_user_source(con: duckdb.DuckDBPyConnection) -> None:
    published = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'mdm'"
    ).fetchall()
    if not published[0][0]:
        return
    [(users, enabled, guests, apple_ids)] = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE accountEnabled), count(*) FILTER (WHERE is_guest), "
        "count(managed_apple_id) FROM mdm.users"
    ).fetchall()
    [(groups, memberships)] = con.execute(
        "SELECT (SELECT count(*) FROM mdm.groups), (SELECT count(*) FROM mdm.group_members)"
    ).fetchall()
    invitations = con.execute(
        "SELECT status, count(*), any_value(coalesce(error, note)) FROM mdm.invitations "
        "GROUP BY status ORDER BY status"
    ).fetchall()
    print("\nMDM user source:")
    print(
        f"  users        {users} ({enabled} enabled, {guests} guests), {apple_ids} Managed Apple IDs"
    )
    print(f"  groups       {groups}, {memberships} transitive memberships")
    for status, count, reason in invitations or [("none", 0, None)]:
        print(f"  invitations  {count} {status}" + (f" ({reason})" if reason else ""))
