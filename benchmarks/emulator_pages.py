"""Page through every `/users?$top=999` page of an emulator and report pages/s and its peak RSS.

Starts `entra-pipeline emulator` as a subprocess (so its RSS is its own), reads its exports,
gets a token with MSAL and follows @odata.nextLink with httpx until the collection ends.

    .venv/bin/python benchmarks/emulator_pages.py --users 1000000
"""

from __future__ import annotations

import argparse
import shlex
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msal

DEFAULT_SELECT = (
    "id,userPrincipalName,displayName,givenName,surname,mail,jobTitle,department,"
    "officeLocation,mobilePhone,businessPhones,employeeId,employeeType,accountEnabled,userType,"
    "createdDateTime,onPremisesSyncEnabled,onPremisesLastSyncDateTime,"
    "onPremisesExtensionAttributes,city,state,country,usageLocation,companyName,assignedLicenses"
)


def _start(users: int, devices: int) -> tuple[subprocess.Popen[str], dict[str, str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "entra_pipeline.cli", "emulator", "--users", str(users),
         "--devices", str(devices)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    env: dict[str, str] = {}
    assert process.stdout is not None
    while len(env) < 6:
        line = process.stdout.readline()
        if not line:
            raise SystemExit("the emulator exited before printing its exports")
        name, _, value = shlex.split(line.removeprefix("export "))[0].partition("=")
        env[name] = value
    return process, env


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--devices", type=int, default=0)
    parser.add_argument("--select", default=DEFAULT_SELECT, help="$select (default: raw.users')")
    parser.add_argument("--max-seconds", type=float, default=1800, help="stop after this long")
    args = parser.parse_args()

    process, env = _start(args.users, args.devices)
    try:
        verify = ssl.create_default_context(cafile=env["ENTRA_CA_BUNDLE"])
        http = httpx.Client(verify=verify, timeout=120)
        app = msal.ConfidentialClientApplication(
            env["ENTRA_CLIENT_ID"],
            client_credential=env["ENTRA_CLIENT_SECRET"],
            authority=f"{env['ENTRA_AUTHORITY_HOST']}/{env['ENTRA_TENANT_ID']}",
            http_client=http,
            instance_discovery=False,
        )
        token = app.acquire_token_for_client([f"{env['ENTRA_GRAPH_URL']}/.default"])
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        url: str | None = f"{env['ENTRA_GRAPH_URL']}/v1.0/users?$top=999&$select={args.select}"
        pages = users = 0
        started = time.monotonic()
        while url and time.monotonic() - started < args.max_seconds:
            response = http.get(url, headers=headers)
            response.raise_for_status()
            body = response.json()
            pages += 1
            users += len(body["value"])
            url = body.get("@odata.nextLink")
            if pages % 100 == 0:
                elapsed = time.monotonic() - started
                print(f"  {pages} pages, {users} users, {pages / elapsed:.1f} pages/s", flush=True)
        elapsed = time.monotonic() - started
        print(
            f"pages={pages} users={users} seconds={elapsed:.1f} pages_per_s={pages / elapsed:.1f} "
            f"users_per_s={users / elapsed:.0f} server_peak_rss_mb={_peak_rss_mb(process.pid):.1f} "
            f"complete={url is None}"
        )
        return 0 if url is None else 1
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
