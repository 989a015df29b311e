"""Many connectors at once (docs/scaling-out.md): N tenants' connectors synced in-process one after
another, as parallel processes on this machine (what the default run launcher does with a run
queue), and on Celery workers (dagster-celery's run launcher, Redis), into their DuckDB files or one
DuckLake catalog on PostgreSQL.

Each tenant is an emulator subprocess (`--cost-model TIME_SCALE`: Graph's latency and RU
throttling). Printed per mode and backend: wall time, Graph retries (429s and 5xx, from
`ops.sync_runs`), the peak RSS of each process that ran syncs, and how many reads a reader
polling the published tables had refused while the syncs ran, and how many tenants it saw
half-published (their `neurons.users` count changing once it had appeared).

Run: .venv/bin/python benchmarks/tenants.py [--connectors 20] [--users 20000] [--devices 40000]
     [--modes inprocess,processes,celery] [--backends duckdb,ducklake] [--workers 2]
Needs PostgreSQL's and Redis's programs (as CI installs them) for ducklake and celery.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import yaml
from extract_raw import start_emulator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from entra_pipeline.connector_folder import load_fleet  # noqa: E402
from entra_pipeline.names import CONNECTOR_JOB, CONNECTORS_PARTITIONS  # noqa: E402
from entra_pipeline.run_tags import run_tags  # noqa: E402
from entra_pipeline.warehouse.lake import LakeTarget, reading  # noqa: E402
from tests.celery_workers import Cluster, running_cluster  # noqa: E402  (the tests' servers)
from tests.postgres import running_postgres  # noqa: E402


def _write_fleet(
    folder: Path, envs: list[dict[str, str]], lake: LakeTarget | None
) -> dict[str, str]:
    """One config per tenant; returns the secrets' environment variables."""
    secrets = {}
    configs = folder / "connectors"
    configs.mkdir(parents=True)
    for n, env in enumerate(envs):
        variable = f"BENCH_TENANT_SECRET_{n}"
        secrets[variable] = env["ENTRA_CLIENT_SECRET"]
        document: dict[str, Any] = {
            "connector_name": f"Tenant {n:02d}",
            "tenant_id": env["ENTRA_TENANT_ID"],
            "client_id": env["ENTRA_CLIENT_ID"],
            "client_secret": f"${{{variable}}}",
            "authority_host": env["ENTRA_AUTHORITY_HOST"],
            "graph_url": env["ENTRA_GRAPH_URL"],
            "ca_bundle": env["ENTRA_CA_BUNDLE"],
            "duckdb_path": str(folder / f"tenant{n:02d}.duckdb"),
            "mapping_path": str(REPO / "mappings" / "entra_id.csv"),
            "user_source": {"enabled": False},
        }
        if lake is not None:
            document["warehouse"] = {
                "backend": "ducklake",
                "catalog": lake.catalog,
                "data_path": lake.data_path,
            }
        (configs / f"tenant{n:02d}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return secrets


class Reader(threading.Thread):
    """Reads every tenant's neurons.users while the syncs run; counts refused reads, and
    tenants whose row count changed once published (one full sync each: a tenant seen with two
    counts was read half-published)."""

    COUNTS = "SELECT tenant_id, count(*) FROM neurons.users GROUP BY tenant_id"

    def __init__(self, folder: Path, lake: LakeTarget | None) -> None:
        super().__init__(daemon=True)
        self.folder, self.lake = folder, lake
        self.stop = threading.Event()
        self.reads = self.refused = 0
        self.seen: dict[str, int] = {}
        self.half: set[str] = set()

    def _count(self, rows: list[tuple[Any, ...]]) -> None:
        for tenant, count in rows:
            if self.seen.setdefault(tenant, count) != count:
                self.half.add(tenant)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                if self.lake is not None:
                    with reading(self.lake) as con:
                        self._count(con.execute(self.COUNTS).fetchall())
                else:
                    for db in sorted(self.folder.glob("tenant*.duckdb")):
                        with duckdb.connect(str(db), read_only=True) as con:
                            self._count(con.execute(self.COUNTS).fetchall())
                self.reads += 1
            except duckdb.CatalogException:
                pass  # not published yet: not a refusal
            except duckdb.Error:
                self.refused += 1
            time.sleep(0.2)


def _in_process(folder: Path, env: dict[str, str]) -> list[float]:
    """Each connector's partition run in this process, one after another."""
    import resource

    import dagster as dg

    from entra_pipeline.fleet import fleet_definitions

    os.environ.update(env)
    fleet = load_fleet(folder / "connectors")
    job = fleet_definitions(fleet.folder).resolve_job_def(CONNECTOR_JOB)
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(CONNECTORS_PARTITIONS, list(fleet.connectors))
        for slug, connector in fleet.connectors.items():
            result = job.execute_in_process(
                instance=instance,
                partition_key=slug,
                raise_on_error=False,
                tags=run_tags(connector.settings, str(connector.path)),
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
            if not result.success:
                print(f"  {slug} FAILED")
    return [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]


def _processes(folder: Path, env: dict[str, str], parallel: int) -> list[float]:
    """`entra-pipeline sync --config <file>` per connector, `parallel` at a time."""
    files = sorted((folder / "connectors").glob("*.yaml"))
    running: list[subprocess.Popen[bytes]] = []
    peaks: list[float] = []
    full_env = {**os.environ, **env}
    full_env.pop("DAGSTER_HOME", None)

    seen: dict[int, float] = {}

    def reap_one() -> None:
        """Wait until one running sync ends; keep its peak RSS. VmHWM, read while it runs: a
        child's ru_maxrss would count this process's memory at the fork."""
        while True:
            for process in list(running):
                seen[process.pid] = max(seen.get(process.pid, 0.0), _peak_mib(process.pid))
                pid, status, _ = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    running.remove(process)
                    process.returncode = status
                    peaks.append(seen[process.pid])
                    if status:
                        print(f"  a sync process exited with status {status}")
                    return
            time.sleep(0.2)

    for file in files:
        while len(running) >= parallel:
            reap_one()
        running.append(
            subprocess.Popen(
                [sys.executable, "-m", "entra_pipeline.cli", "sync", "--config", str(file)],
                env=full_env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    while running:
        reap_one()
    return peaks


def _celery(folder: Path, env: dict[str, str], workers: int) -> list[float]:
    import dagster as dg

    from entra_pipeline.dagster_private import ReconstructableRepository

    configs = folder / "connectors"
    full_env = {**env, "ENTRA_CONNECTOR_CONFIG": str(configs)}
    with running_cluster(folder, full_env) as cluster:
        os.environ.update(full_env)
        os.environ["DAGSTER_HOME"] = str(cluster.home)
        for n in range(workers):
            cluster.start_worker(f"w{n + 1}")
        with dg.DagsterInstance.get() as instance:
            fleet = load_fleet(configs)
            instance.add_dynamic_partitions(CONNECTORS_PARTITIONS, list(fleet.connectors))
            recon = ReconstructableRepository.for_module(
                "entra_pipeline.definitions", "defs", working_directory=str(REPO)
            ).get_reconstructable_job(CONNECTOR_JOB)
            job = recon.get_definition()
            run_ids = []
            for slug, connector in fleet.connectors.items():
                run = instance.create_run_for_job(
                    job_def=job,
                    tags={
                        "dagster/partition": slug,
                        **run_tags(connector.settings, str(connector.path)),
                    },
                    job_code_origin=recon.get_python_origin(),
                )
                instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
                run_ids.append(run.run_id)
            while not all(instance.get_run_by_id(r).is_finished for r in run_ids):  # type: ignore[union-attr]
                time.sleep(1)
            failed = [r for r in run_ids if not instance.get_run_by_id(r).is_success]  # type: ignore[union-attr]
            if failed:
                print(f"  {len(failed)} runs FAILED (worker logs: {cluster.logs})")
            peaks = [_worker_peak(cluster, name) for name in sorted(cluster.workers)]
        os.environ.pop("DAGSTER_HOME", None)
    return peaks


def _worker_peak(cluster: Cluster, name: str) -> float:
    """The largest peak RSS (VmHWM) among a worker's processes, in MiB."""
    return max((_peak_mib(pid) for pid in cluster.worker_pids(name)), default=0.0)


def _peak_mib(pid: int) -> float:
    """A running process's peak RSS (VmHWM), in MiB; 0 once it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _retries(folder: Path) -> tuple[int, int]:
    """(Graph requests, retries) of every connector's last run, from its file."""
    requests = retries = 0
    for db in sorted(folder.glob("tenant*.duckdb")):
        with duckdb.connect(str(db), read_only=True) as con:
            [(a, b)] = con.execute(
                "SELECT coalesce(sum(graph_requests), 0), coalesce(sum(graph_retries), 0) "
                "FROM ops.sync_runs"
            ).fetchall()
            requests, retries = requests + int(a), retries + int(b)
    return requests, retries


@contextlib.contextmanager
def _lake(folder: Path, enabled: bool) -> Iterator[LakeTarget | None]:
    if not enabled:
        yield None
        return
    with running_postgres() as postgres:
        postgres.psql("CREATE DATABASE bench")
        os.environ["PGPASSWORD"] = postgres.password
        yield LakeTarget(postgres.catalog("bench"), str(folder / "lake-data") + "/")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connectors", type=int, default=20)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--devices", type=int, default=40_000)
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--modes", default="inprocess,processes,celery")
    parser.add_argument("--backends", default="duckdb,ducklake")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    emulators = []
    envs = []
    try:
        for n in range(args.connectors):
            process, env = start_emulator(
                args.users,
                args.devices,
                "--cost-model",
                str(args.time_scale),
                "--seed",
                str(100 + n),
            )
            emulators.append(process)
            envs.append(env)
        print(
            f"{args.connectors} tenants of {args.users:,} users / {args.devices:,} devices "
            f"(cost model, time scale {args.time_scale})",
            flush=True,
        )
        for backend in args.backends.split(","):
            for mode in args.modes.split(","):
                with tempfile.TemporaryDirectory() as scratch:
                    folder = Path(scratch)
                    with _lake(folder, backend == "ducklake") as lake:
                        secrets = _write_fleet(folder, envs, lake)
                        env = {
                            **secrets,
                            **({"PGPASSWORD": os.environ["PGPASSWORD"]} if lake else {}),
                        }
                        reader = Reader(folder, lake)
                        reader.start()
                        started = time.monotonic()
                        if mode == "inprocess":
                            peaks = _in_process(folder, env)
                        elif mode == "processes":
                            peaks = _processes(folder, env, args.workers)
                        else:
                            peaks = _celery(folder, env, args.workers)
                        seconds = time.monotonic() - started
                        reader.stop.set()
                        reader.join()
                        requests, retries = _retries(folder)
                        print(
                            f"{backend:<8} {mode:<10} {seconds:7.0f} s, {requests:,} Graph "
                            f"requests, {retries:,} retries (429/5xx), peak RSS "
                            + ", ".join(f"{p:.0f}" for p in peaks)
                            + f" MiB, reader: {reader.reads} reads, {reader.refused} refused, "
                            f"{len(reader.seen)} tenants seen, {len(reader.half)} half-published",
                            flush=True,
                        )
    finally:
        for process in emulators:
            process.terminate()
        for process in emulators:
            process.wait(timeout=60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
