"""`entra-pipeline demo`: the whole sync against the bundled Graph emulator, no tenant needed.

Starts the emulator with a synthetic tenant, writes a connector config for it, runs the jobs
in-process through the real MSAL and httpx code, and prints what was published.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shlex
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import dagster as dg
import duckdb
import yaml
from rich.console import Console

from entra_pipeline.config_file import load_settings
from entra_pipeline.definitions import build_definitions
from entra_pipeline.emulator import Emulator, EmulatorConfig
from entra_pipeline.emulator.churn import churn
from entra_pipeline.names import CONNECTOR_JOB, USER_SOURCE_JOB
from entra_pipeline.run_log import RunProgress, short_log, with_short_log
from entra_pipeline.warehouse.failures import failure_causes
from entra_pipeline.warehouse.files import folder_problem, private_directories
from entra_pipeline.warehouse.sql import table_exists

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET_VARIABLE = "ENTRA_DEMO_CLIENT_SECRET"
DEMO_JOBS = (CONNECTOR_JOB, USER_SOURCE_JOB)
NIGHTLY_CHURN = 0.02  # of users and devices changed before the demo's incremental run


@dataclass(frozen=True)
class DemoTenant:
    """The demo's synthetic tenant, kept beside its database (`<db>.tenant.json`) so that the
    next demo on that database serves the same directory: the same seed and size, the same clock
    its dates are relative to, the nights of changes applied so far replayed, and its tokens
    sealed with the same key, so the delta links the database holds stay valid. A second demo
    then records only the night it adds itself."""

    seed: int
    users: int
    devices: int
    clock: str  # ISO 8601, UTC, to the second
    nights: int = 0
    # The emulator's port: the delta links the database keeps name it (a link for another
    # endpoint is not followed), so a restarted emulator takes the same one when it is free.
    port: int = 0

    @classmethod
    def for_demo(cls, args: argparse.Namespace, db: Path) -> DemoTenant:
        """The tenant the last demo on `db` left, when it was one of this seed and size and `db`
        still exists; else a new one whose clock is now."""
        wanted = cls(args.seed, args.users, args.devices, _utc_now())
        try:
            kept = cls(**json.loads(cls.file(db).read_text()))
        except (OSError, ValueError, TypeError):
            return wanted
        same = (kept.seed, kept.users, kept.devices) == (wanted.seed, wanted.users, wanted.devices)
        return kept if same and db.exists() else wanted

    @staticmethod
    def file(db: Path) -> Path:
        return db.with_name(f"{db.stem}.tenant.json")

    def save(self, db: Path) -> None:
        self.file(db).write_text(json.dumps(asdict(self), indent=2) + "\n")

    def emulator_config(self, port: int) -> EmulatorConfig:
        key = hashlib.sha256(f"entra-pipeline demo {self.seed} {self.clock}".encode()).digest()
        return EmulatorConfig(
            users=self.users,
            devices=self.devices,
            seed=self.seed,
            now=dt.datetime.fromisoformat(self.clock),
            token_key=key,
            port=port,
        )

    def start(self) -> tuple[Emulator, DemoTenant]:
        """The emulator on this tenant (on its port when free), nights replayed, and the state
        to keep with the port it took."""
        try:
            emulator = Emulator(self.emulator_config(self.port))
        except OSError:
            if not self.port:
                raise
            print(f"Port {self.port} is taken: the emulator takes another (a full read follows)")
            emulator = Emulator(self.emulator_config(0))
        self.replay(emulator)
        return emulator, replace(self, port=emulator.port)

    def night_seed(self, night: int) -> int:
        return self.seed * 1000 + night

    def replay(self, emulator: Emulator) -> None:
        """Apply again the nights earlier demos applied (deterministic: same changes, same
        ids, same change counter)."""
        for night in range(1, self.nights + 1):
            churn(emulator.tenant, NIGHTLY_CHURN, seed=self.night_seed(night))


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def run_demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    problem = folder_problem(Path(args.db).resolve())
    if problem is not None:
        print(f"demo --db {args.db}: {problem}")
        return 2
    with short_log(Console(stderr=True, highlight=False, soft_wrap=True)) as progress:
        return _run_demo(args, started, progress)


def _run_demo(args: argparse.Namespace, started: float, progress: RunProgress) -> int:
    db = Path(args.db).resolve()
    private_directories(db.parent)
    tenant = DemoTenant.for_demo(args, db)
    nights = f"{tenant.nights} night{'s' if tenant.nights > 1 else ''}"
    again = f", as the last demo left it: {nights} of changes" if tenant.nights else ""
    print(
        f"Starting the Graph emulator: {args.users} users, {args.devices} devices "
        f"(seed {args.seed}{again})"
    )
    emulator, tenant = tenant.start()
    try:
        tenant.save(db)
        config_file = db.with_name(f"{db.stem}.connector.yaml")
        os.environ[SECRET_VARIABLE] = emulator.client_secret
        config_file.write_text(yaml.safe_dump(_demo_config(emulator, db), sort_keys=False))
        print(f"Connector config: {config_file} (secret from ${SECRET_VARIABLE})")
        definitions = build_definitions(load_settings(config_file), str(config_file))
        failed = []
        with dg.DagsterInstance.ephemeral() as instance:
            for job_name in DEMO_JOBS:
                print(f"Running job {job_name} ...", flush=True)
                if not _run_job(definitions, job_name, instance, progress):
                    failed.append(job_name)
            if not failed:
                # A night later: the directory changed a little; the connector reads only that.
                night = replace(tenant, nights=tenant.nights + 1)
                changes = churn(emulator.tenant, NIGHTLY_CHURN, seed=night.night_seed(night.nights))
                print(
                    f"\nA night later: {changes.total} changes in the tenant ("
                    + ", ".join(f"{n} {kind}" for kind, n in sorted(changes.counts.items()))
                    + f"). Running job {CONNECTOR_JOB} again (incremental) ...",
                    flush=True,
                )
                if _run_job(definitions, CONNECTOR_JOB, instance, progress):
                    night.save(db)  # the database now holds this night
                else:
                    failed.append(f"{CONNECTOR_JOB} (incremental)")
    finally:
        emulator.stop()
    _print_summary(db, time.monotonic() - started)
    if failed:
        print(f"FAILED: {', '.join(failed)}; the cause is above and in ops.sync_runs.error")
        return 1
    return 0


def _run_job(
    definitions: dg.Definitions,
    job_name: str,
    instance: dg.DagsterInstance,
    progress: RunProgress,
) -> bool:
    progress.begin(job_name)
    job, run_config = with_short_log(definitions.resolve_job_def(job_name), progress)
    result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=run_config)
    if not result.success:
        print(f"{job_name} failed; nothing was published: " + "; ".join(failure_causes(result)))
    return result.success


def _demo_config(emulator: Emulator, db: Path) -> dict[str, object]:
    return {
        "connector_name": "Demo (Graph emulator)",
        **emulator.connection_settings(SECRET_VARIABLE),
        "duckdb_path": str(db),
        "mapping_path": str(REPO_ROOT / "mappings" / "entra_id.csv"),
        # The demo's emulator has no cost model, so no sign-in limit: pacing would only wait.
        "users": {"sign_in_requests_per_minute": 10_000},
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
            [len(DEMO_JOBS) + 1],
        ).fetchall()
        print("\nRuns:")
        for job, status, requests, retries, error in reversed(runs):
            line = f"  {job:<24} {status:<8} {requests} Graph requests, {retries} retries"
            print(line + (f"\n    error: {error}" if error else ""))
        _print_user_source(con)
        _print_changes(con)
        notes = con.execute(
            "SELECT source, severity, code, message FROM ops.notifications "
            "WHERE run_id IN (SELECT run_id FROM ops.sync_runs ORDER BY started_at DESC LIMIT ?) "
            "ORDER BY notified_at",
            [len(DEMO_JOBS) + 1],
        ).fetchall()
        print(f"\nNotifications: {len(notes)}")
        for source, severity, code, message in notes:
            print(f"  [{source} {severity}] {code}: {message}")
    print(f"\nDone in {seconds:.1f}s. Query it (read-only, safe while a sync runs):")
    print(f'  .venv/bin/duckdb -readonly {shlex.quote(str(db))} -c "FROM neurons.users_v LIMIT 5"')


def _print_changes(con: duckdb.DuckDBPyConnection) -> None:
    """What the last connector run recorded in history.changes."""
    if not table_exists(con, "history.changes"):
        return
    last_run = con.execute(
        "SELECT run_id FROM ops.sync_runs WHERE job = ? AND status = 'success' "
        "ORDER BY started_at DESC LIMIT 1",
        [CONNECTOR_JOB],
    ).fetchone()
    counts = con.execute(
        "SELECT entity, change, count(*) FROM history.changes WHERE run_id = ? "
        "GROUP BY ALL ORDER BY ALL",
        [last_run[0] if last_run else None],
    ).fetchall()
    print("\nWhat the incremental run changed (history.changes):")
    for entity, change, count in counts or [("nothing", "", 0)]:
        print(f"  {entity:<17} {change:<8} {count:>6}")
    examples = con.execute(
        "SELECT DISTINCT ON (entity, attribute) entity, change, attribute, old_value, "
        "new_value FROM history.changes WHERE run_id = ? AND change = 'updated' AND entity "
        "IN ('user', 'device') ORDER BY entity DESC, attribute, object_id LIMIT 6",
        [last_run[0] if last_run else None],
    ).fetchall()
    for entity, _, attribute, old, new in examples:
        print(f"  e.g. {entity} {attribute}: {old!r} -> {new!r}")


def _print_user_source(con: duckdb.DuckDBPyConnection) -> None:
    if not table_exists(con, "mdm.users"):
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
