"""Benchmark of raw extraction: a large emulator tenant streamed from Graph over HTTPS into DuckDB.

Starts `entra-pipeline emulator` in a subprocess (so its memory is not counted here), runs
`read_in_full` (the connector's sync units) and loads every raw table into a temporary DuckDB file in one transaction, then prints
rows, pages, seconds, this process's peak RSS, and the extraction's CPU per 100k rows against a bare
httpx + json.loads loop over the same first pages (the floor of any client).
Run: .venv/bin/python benchmarks/extract_raw.py [USERS] [DEVICES] [--member-groups N] [--bare-sample N]
     [--no-sign-in]
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx

from entra_pipeline.connector.raw_layer import LANDED
from entra_pipeline.connector.units import read_in_full
from entra_pipeline.graph.auth import TokenProvider
from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.collections import DEVICES, USERS
from entra_pipeline.warehouse.loading import load_landed_table

_ENV_NAMES = {
    "ENTRA_AUTHORITY_HOST",
    "ENTRA_GRAPH_URL",
    "ENTRA_TENANT_ID",
    "ENTRA_CLIENT_ID",
    "ENTRA_CLIENT_SECRET",
    "ENTRA_CA_BUNDLE",
}


def start_emulator(
    users: int, devices: int, *extra: str
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """The emulator subprocess (with `extra` arguments) and the ENTRA_* settings it printed."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "entra_pipeline.cli",
            "emulator",
            "--users",
            str(users),
            "--devices",
            str(devices),
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    settings: dict[str, str] = {}
    while not settings.keys() >= _ENV_NAMES:
        line = process.stdout.readline()
        if not line:
            raise SystemExit(f"the emulator exited ({process.wait()}) before printing its settings")
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").strip().partition("=")
            settings[name] = shlex.split(value)[0] if value else ""
    return process, settings


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_loop_cpu(env: dict[str, str], sample: int) -> tuple[float, int]:
    """The floor of a client's CPU: the job's users and devices first pages (same `$select`,
    `$expand`, `$top`) paged with bare httpx and json.loads, `sample` objects of each, against
    the same emulator. Returns (CPU seconds, objects). The token is fetched before timing."""
    token = httpx.post(
        f"{env['ENTRA_AUTHORITY_HOST']}/{env['ENTRA_TENANT_ID']}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": env["ENTRA_CLIENT_ID"],
            "client_secret": env["ENTRA_CLIENT_SECRET"],
            "scope": "https://graph.microsoft.com/.default",
        },
        verify=env["ENTRA_CA_BUNDLE"],
    ).json()["access_token"]
    objects = 0
    with httpx.Client(
        verify=env["ENTRA_CA_BUNDLE"],
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(600.0),
    ) as client:
        before = resource.getrusage(resource.RUSAGE_SELF)
        for collection in (USERS, DEVICES):
            url: str | None = f"{env['ENTRA_GRAPH_URL']}/v1.0{collection.path}"
            params: dict[str, str | int] | None = collection.first_page
            seen = 0
            while url and seen < sample:
                response = client.get(url, params=params)
                response.raise_for_status()
                page = json.loads(response.content)
                seen += len(page["value"])
                url, params = page.get("@odata.nextLink"), None
            objects += seen
        after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, objects


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("users", type=int, nargs="?", default=200_000)
    parser.add_argument("devices", type=int, nargs="?", default=400_000)
    parser.add_argument(
        "--member-groups",
        type=int,
        default=0,
        help="also list the transitive members of the tenant's first N groups",
    )
    parser.add_argument(
        "--bare-sample",
        type=int,
        default=100_000,
        help="users and devices each that the bare httpx loop pages, for the CPU floor",
    )
    parser.add_argument(
        "--no-sign-in",
        action="store_true",
        help="skip the sign-in pass (paced at 10 requests a minute: 10 min for 50,000 users)",
    )
    args = parser.parse_args()

    emulator, env = start_emulator(args.users, args.devices)
    try:
        tokens = TokenProvider(
            tenant_id=env["ENTRA_TENANT_ID"],
            client_id=env["ENTRA_CLIENT_ID"],
            client_credential=env["ENTRA_CLIENT_SECRET"],
            authority_host=env["ENTRA_AUTHORITY_HOST"],
            graph_url=env["ENTRA_GRAPH_URL"],
            ca_bundle=env["ENTRA_CA_BUNDLE"],
        )
        ca_bundle = env["ENTRA_CA_BUNDLE"]
        with (
            GraphClient(env["ENTRA_GRAPH_URL"], tokens, ca_bundle=ca_bundle) as client,
            tempfile.TemporaryDirectory(prefix="extract-raw-") as tmp,
        ):
            group_ids: list[str] = []
            if args.member_groups:
                params = {"$select": "id", "$top": args.member_groups}
                group_ids = [g["id"] for g in client.get_json("/groups", params)["value"]]
            started = time.monotonic()
            cpu_before = resource.getrusage(resource.RUSAGE_SELF)
            reports = read_in_full(
                client,
                Path(tmp) / "work",
                group_ids=group_ids,
                import_sign_in=not args.no_sign_in,
            )
            cpu_after = resource.getrusage(resource.RUSAGE_SELF)
            extracted = time.monotonic()
            rss_after_extract = peak_rss_mib()
            con = duckdb.connect(str(Path(tmp) / "entra.duckdb"))
            con.begin()
            landed = {entry.table: entry for entry in LANDED}
            rows = {
                table: load_landed_table(
                    con, landed[table], report.files, env["ENTRA_TENANT_ID"], datetime.now(UTC)
                )
                for table, report in reports.items()
            }
            con.commit()
            con.close()
            loaded = time.monotonic()
            tokens.close()
        bare_cpu, bare_objects = bare_loop_cpu(env, args.bare_sample)
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)

    print(f"tenant: {args.users} users, {args.devices} devices, {len(group_ids)} member groups")
    print(f"{'table':<18}{'rows':>10}{'pages':>8}{'requests':>10}{'retries':>9}{'seconds':>9}")
    for table, report in reports.items():
        print(
            f"{table:<18}{rows[table]:>10}{report.pages:>8}{report.requests:>10}"
            f"{report.retries:>9}{report.seconds:>9.1f}"
        )
    print(f"extract (concurrent): {extracted - started:.1f} s")
    print(f"load into DuckDB (one transaction): {loaded - extracted:.1f} s")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"CPU of this process (emulator excluded): {usage.ru_utime + usage.ru_stime:.1f} s")
    extract_cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (
        cpu_after.ru_stime - cpu_before.ru_stime
    )
    per_100k = extract_cpu / (sum(rows.values()) / 100_000)
    bare = bare_cpu / (bare_objects / 100_000)
    print(
        f"extraction CPU: {extract_cpu:.1f} s, {per_100k:.2f} s per 100k rows; a bare httpx + "
        f"json.loads loop of the same first pages ({bare_objects:,} objects): {bare:.2f} s per "
        f"100k; extraction / bare loop = {per_100k / bare:.2f}"
    )
    print(
        f"peak RSS: {rss_after_extract:.0f} MiB after extraction, {peak_rss_mib():.0f} MiB overall"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
