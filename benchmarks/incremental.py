"""What a nightly incremental run costs against the full run it follows, on the emulator's Graph
cost model.

Starts the emulator in its own process (`--cost-model TIME_SCALE --churn FRACTION`), runs
`entra_id_sync` once (the first run: a full round that stores the delta links), signals the
emulator to change FRACTION of the users and devices (a night of hires, leavers, licences,
managers, stale and re-joined devices), and runs it again (delta rounds, owners of the changed
devices, the incremental sign-in pass). Printed per run: Graph requests (from `ops.sync_runs`),
per collection requests and the Graph time projected from each answer's modeled latency; the
sign-in pass's paced time; the ratios. `--verify` also runs a full sync of the changed tenant
into another file and compares every staging and neurons table with the incremental run's.

Run: .venv/bin/python benchmarks/incremental.py [USERS] [DEVICES] [--time-scale 0.05]
"""

from __future__ import annotations

import argparse
import math
import signal
import tempfile
import time
from pathlib import Path

import dagster as dg
import duckdb
import httpx
from extract_raw import start_emulator
from graph_time import GraphClock, _materializations
from sync_job import write_config

import entra_pipeline.graph.client as graph_client
from entra_pipeline.config_file import load_settings
from entra_pipeline.definitions import build_definitions
from entra_pipeline.emulator.costs import CostModel
from entra_pipeline.graph.collections import SIGN_IN_ACTIVITY
from entra_pipeline.names import CONNECTOR_JOB
from entra_pipeline.resources import ConnectorResource

TABLES = ("users", "devices", "groups", "subscribed_skus", "group_members", "sign_in_activity")
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _run(config: Path, scale: float) -> tuple[bool, float, int]:
    """(success, wall seconds, requests of the sign-in pass) of one connector run."""
    connector = ConnectorResource(config_path=str(config), graph_time_scale=scale)
    job = build_definitions(load_settings(config), str(config), connector).resolve_job_def(
        CONNECTOR_JOB
    )
    started = time.monotonic()
    instance = dg.DagsterInstance.ephemeral()
    result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET)
    seconds = time.monotonic() - started
    meta = _materializations(instance, result.run_id).get("raw/sign_in_activity", {})
    return result.success, seconds, int(meta.get("graph_requests", 0))


def _requests(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        [(total,)] = con.execute(
            "SELECT graph_requests FROM ops.sync_runs ORDER BY started_at DESC LIMIT 1"
        ).fetchall()
    return int(total)


def _same_tables(mine: Path, reference: Path) -> list[str]:
    """The staging and neurons tables whose rows differ between the two files."""
    differ = []
    with duckdb.connect() as con:
        con.execute(f"ATTACH '{mine}' AS mine (READ_ONLY)")
        con.execute(f"ATTACH '{reference}' AS ref (READ_ONLY)")
        tables = con.execute(
            "SELECT schema_name || '.' || table_name FROM duckdb_tables() WHERE database_name = "
            "'ref' AND schema_name IN ('staging', 'neurons')"
        ).fetchall()
        for (table,) in tables:
            [(a, b)] = con.execute(
                f"SELECT (SELECT count(*) FROM (FROM mine.{table} EXCEPT ALL FROM ref.{table})), "
                f"(SELECT count(*) FROM (FROM ref.{table} EXCEPT ALL FROM mine.{table}))"
            ).fetchall()
            if a or b:
                differ.append(f"{table} ({a} extra, {b} missing)")
    return differ


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("users", type=int, nargs="?", default=200_000)
    parser.add_argument("devices", type=int, nargs="?", default=400_000)
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--churn", type=float, default=0.01)
    parser.add_argument("--verify", action="store_true", help="compare with a full sync")
    args = parser.parse_args()
    scale = args.time_scale
    model = CostModel(time_scale=scale)
    clocks: list[GraphClock] = []
    original_init = graph_client.GraphClient.__init__

    def observed_init(self, *a, **kw):  # type: ignore[no-untyped-def]
        kw["timeout"] = httpx.Timeout(connect=600.0, read=1800.0, write=600.0, pool=1800.0)
        original_init(self, *a, **kw)
        self.observer = clocks[-1]

    graph_client.GraphClient.__init__ = observed_init  # type: ignore[method-assign]
    emulator, env = start_emulator(
        args.users,
        args.devices,
        "--cost-model",
        str(scale),
        "--churn",
        str(args.churn),
        "--seed",
        "42",
    )
    figures: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as folder:
            db = Path(folder) / "bench.duckdb"
            config = Path(folder) / "connector.yaml"
            write_config(config, env, db, user_source={"enabled": False})
            for name in ("full", "incremental"):
                if name == "incremental":
                    emulator.send_signal(signal.SIGUSR1)
                    assert emulator.stdout is not None
                    line = ""
                    while not line.startswith("churned"):  # the export lines come first
                        line = emulator.stdout.readline().strip()
                    print(f"emulator: {line}", flush=True)
                clocks.append(GraphClock(model))
                ok, seconds, sign_ins = _run(config, scale)
                if not ok:
                    print(f"{name} run FAILED")
                    return 1
                total = _requests(db)
                clock = clocks[-1]
                per = {t: clock.collection(t) for t in TABLES}
                figures[name] = {
                    "sign_in_requests": sign_ins,
                    "requests": total,
                    "wall": seconds,
                    "extraction": max(per[t] for t in TABLES if t != "sign_in_activity"),
                    **{f"t:{t}": v for t, v in per.items()},
                }
                print(
                    f"{name}: {total:,} Graph requests, {seconds:.0f} s here; projected Graph "
                    f"time of the extraction (sign-in pass apart) "
                    f"{figures[name]['extraction'] / 60:.1f} min",
                    flush=True,
                )
                for table in TABLES:
                    print(f"  {table:<18} {per[table] / 60:>7.2f} min of modeled latency")
            if args.verify:
                reference = Path(folder) / "reference.duckdb"
                full_config = Path(folder) / "full.yaml"
                write_config(
                    full_config,
                    env,
                    reference,
                    user_source={"enabled": False},
                    sync={"mode": "full"},
                )
                clocks.append(GraphClock(model))
                ok, _, _ = _run(full_config, scale)
                differ = _same_tables(db, reference)
                print(
                    "equivalence with a full sync of the same tenant: "
                    + ("every staging and neurons table equal" if ok and not differ else "DIFFERS")
                    + ("" if not differ else f": {', '.join(differ)}")
                )
                if differ or not ok:
                    return 1
    finally:
        emulator.terminate()
        emulator.wait(timeout=60)
    full, incremental = figures["full"], figures["incremental"]

    def paced(run: dict[str, float]) -> float:  # the sign-in pass at 10 requests a minute
        return max(0.0, run["sign_in_requests"] - 1) / 10 * 60

    def whole(run: dict[str, float]) -> float:
        return max(run["extraction"], paced(run) + run["t:sign_in_activity"])

    print(
        f"\nrequests: incremental / full = {incremental['requests']:,.0f} / "
        f"{full['requests']:,.0f} = {incremental['requests'] / full['requests']:.3f}"
    )
    print(
        f"sign-in pass: {incremental['sign_in_requests']:.0f} / {full['sign_in_requests']:.0f} "
        f"requests (ceil({args.users:,} / {SIGN_IN_ACTIVITY.page_size}) = "
        f"{math.ceil(args.users / SIGN_IN_ACTIVITY.page_size):,} in full), paced at 10 a minute"
    )
    print(
        f"projected extraction time, sign-in pass apart: {incremental['extraction'] / 60:.2f} / "
        f"{full['extraction'] / 60:.2f} min = {incremental['extraction'] / full['extraction']:.3f}"
    )
    print(
        f"projected whole extraction, sign-in pass included: {whole(incremental) / 60:.2f} / "
        f"{whole(full) / 60:.1f} min = {whole(incremental) / whole(full):.3f}"
    )
    print(
        f"wall time here (CPU of this machine included): {incremental['wall']:.0f} s / "
        f"{full['wall']:.0f} s = {incremental['wall'] / full['wall']:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
