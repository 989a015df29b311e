"""Benchmark of the whole `entra_id_sync` job against a large emulator tenant in a subprocess.

The emulator runs in its own process so that this process's peak RSS is the pipeline's alone.
Run: /usr/bin/time -v .venv/bin/python benchmarks/sync_job.py [USERS] [DEVICES]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import yaml
from extract_raw import start_emulator  # the sibling benchmark: same emulator subprocess

from entra_pipeline.config_file import load_settings
from entra_pipeline.definitions import build_definitions
from entra_pipeline.names import CONNECTOR_JOB

REPO = Path(__file__).resolve().parents[1]


class RssSampler(threading.Thread):
    """Samples this process's resident memory, so each step's peak can be told apart: its RSS
    every 0.1 s, and its high-water mark (VmHWM), which also catches a peak between samples."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int, int]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.1):
            with open("/proc/self/status") as status:
                kib = {
                    name: int(rest.split()[0])
                    for name, _, rest in (line.partition(":") for line in status)
                    if name in ("VmRSS", "VmHWM")
                }
            self.samples.append((time.time(), kib["VmRSS"] // 1024, kib["VmHWM"] // 1024))

    def peak_between(self, start: float, end: float) -> int:
        """The highest RSS sampled from `start` to `end`, or the high-water mark the process
        reached in that span when it rose there (a peak shorter than a sample's interval)."""
        inside = [(rss, hwm) for t, rss, hwm in self.samples if start <= t <= end]
        before = [hwm for t, _, hwm in self.samples if t < start]
        sampled = max((rss for rss, _ in inside), default=0)
        if inside and inside[-1][1] > (before[-1] if before else 0):
            return max(sampled, inside[-1][1])
        return sampled


def write_config(config: Path, env: dict[str, str], db: Path, **options: object) -> None:
    """A connector config for the emulator `env` describes (the secret from the environment)."""
    os.environ["BENCH_SECRET"] = env["ENTRA_CLIENT_SECRET"]
    config.write_text(
        yaml.safe_dump(
            {
                "tenant_id": env["ENTRA_TENANT_ID"],
                "client_id": env["ENTRA_CLIENT_ID"],
                "client_secret": "${BENCH_SECRET}",
                "authority_host": env["ENTRA_AUTHORITY_HOST"],
                "graph_url": env["ENTRA_GRAPH_URL"],
                "ca_bundle": env["ENTRA_CA_BUNDLE"],
                "duckdb_path": str(db),
                "mapping_path": str(REPO / "mappings" / "entra_id.csv"),
                **options,
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("users", type=int, nargs="?", default=200_000)
    parser.add_argument("devices", type=int, nargs="?", default=400_000)
    args = parser.parse_args()
    emulator, env = start_emulator(args.users, args.devices)
    try:
        with tempfile.TemporaryDirectory() as folder:
            db = Path(folder) / "bench.duckdb"
            config = Path(folder) / "connector.yaml"
            write_config(config, env, db)
            definitions = build_definitions(load_settings(config), str(config))
            started = time.monotonic()
            sampler = RssSampler()
            sampler.start()
            instance = dg.DagsterInstance.ephemeral()
            result = definitions.resolve_job_def(CONNECTOR_JOB).execute_in_process(
                instance=instance,
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
            seconds = time.monotonic() - started
            sampler.stopped.set()
            step_starts = {
                entry.step_key: entry.timestamp
                for entry in instance.all_logs(
                    result.run_id, of_type=dg.DagsterEventType.STEP_START
                )
            }
            steps = {
                entry.step_key: entry.timestamp
                for entry in instance.all_logs(
                    result.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS
                )
            }
            with duckdb.connect(str(db), read_only=True) as con:
                counts = {
                    table: con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                    for table in ("raw.users", "raw.devices", "neurons.users", "neurons.devices")
                }
                requests = con.execute(
                    "SELECT graph_requests, graph_retries, status FROM ops.sync_runs"
                ).fetchall()
            first = min(steps.values())
            print(f"success={result.success} seconds={seconds:.1f} runs={requests}")
            print("rows:", counts)
            raw_done = steps.get("raw_entra", first)
            print(
                f"after raw (staging+filter+map+checks+publish): {max(steps.values()) - raw_done:.1f}s"
            )
            for step, begun in sorted(step_starts.items(), key=lambda item: item[1]):
                ended = steps.get(step, time.time())
                print(
                    f"  {step:<48} {ended - begun:6.1f}s  peak RSS "
                    f"{sampler.peak_between(begun, ended)} MiB"
                )
            last_step = max(steps.values())
            print(
                f"  {'publication (after the last step)':<48} peak RSS "
                f"{sampler.peak_between(last_step, time.time())} MiB"
            )
            print(
                f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
            )
            print(f"db size: {db.stat().st_size / 2**20:.0f} MiB")
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)
    return 0 if result.success else 1


if __name__ == "__main__":
    raise SystemExit(main())
