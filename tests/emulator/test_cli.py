"""`entra-pipeline emulator` as a user runs it: a subprocess printing evalable exports, then serving."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import msal
import pytest

from entra_pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]


def _exports(process: subprocess.Popen[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    assert process.stdout is not None
    while len(env) < 7:
        line = process.stdout.readline()
        assert line, "emulator exited before printing its exports"
        (assignment,) = shlex.split(line.removeprefix("export "))
        name, _, value = assignment.partition("=")
        env[name] = value
    return env


def _start(*options: str) -> subprocess.Popen[str]:
    """`entra-pipeline emulator OPTIONS` in a subprocess, its stdout and stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "entra_pipeline.cli", "emulator", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _token(env: dict[str, str], http: httpx.Client) -> str:
    """An access token from the emulator's token service, through MSAL as the connector gets it."""
    app = msal.ConfidentialClientApplication(
        env["ENTRA_CLIENT_ID"],
        client_credential=env["ENTRA_CLIENT_SECRET"],
        authority=f"{env['ENTRA_AUTHORITY_HOST']}/{env['ENTRA_TENANT_ID']}",
        http_client=http,
        instance_discovery=False,
    )
    return app.acquire_token_for_client([f"{env['ENTRA_GRAPH_URL']}/.default"])["access_token"]


def test_cli_prints_evalable_exports_and_serves_until_sigterm(tmp_path: Path) -> None:
    process = _start("--users", "12", "--devices", "3", "--seed", "5", "--fault", "throttle=0",
                     "--permissions", "User.Read.All")  # fmt: skip
    try:
        env = _exports(process)
        assert sorted(env) == [
            "ENTRA_AUTHORITY_HOST", "ENTRA_CA_BUNDLE", "ENTRA_CLIENT_ID", "ENTRA_CLIENT_SECRET",
            "ENTRA_CONNECTOR_CONFIG", "ENTRA_GRAPH_URL", "ENTRA_TENANT_ID",
        ]  # fmt: skip
        assert env["ENTRA_CONNECTOR_CONFIG"] == str(REPO / "connector.emulator.yaml")
        assert process.stderr is not None
        assert "Graph emulator at https://127.0.0.1:" in process.stderr.readline()
        http = httpx.Client(verify=ssl.create_default_context(cafile=env["ENTRA_CA_BUNDLE"]))
        token = _token(env, http)
        headers = {"Authorization": f"Bearer {token}"}
        users = http.get(f"{env['ENTRA_GRAPH_URL']}/v1.0/users?$top=999", headers=headers).json()
        assert len(users["value"]) == 12
        assert (
            http.get(f"{env['ENTRA_GRAPH_URL']}/v1.0/devices", headers=headers).status_code == 403
        )
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_cli_rejects_a_bad_fault_with_the_allowed_names() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "entra_pipeline.cli", "emulator", "--fault", "meteor=1"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "unknown fault 'meteor=1'" in result.stderr
    assert "throttle, unavailable, gateway-timeout, drop, slow" in result.stderr


def test_worker_processes_share_one_sign_in_limit_and_stop_with_the_parent() -> None:
    # Graph time at 0.1: a Graph minute lasts 6 s, time enough for the reads below.
    process = _start("--users", "12", "--devices", "3", "--workers", "2", "--cost-model", "0.1",
                     "--fault", "signin-throttle=3")  # fmt: skip
    try:
        env = _exports(process)
        assert process.stderr is not None
        assert "in 2 worker processes" in process.stderr.readline()
        verify = ssl.create_default_context(cafile=env["ENTRA_CA_BUNDLE"])
        token = _token(env, httpx.Client(verify=verify))
        answers = []
        for _ in range(12):  # a connection each: the kernel hands each to one of the workers
            with httpx.Client(verify=verify) as http:
                answers.append(
                    http.get(
                        f"{env['ENTRA_GRAPH_URL']}/v1.0/users",
                        params={"$select": "id,signInActivity"},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                )
        servers = {json.loads(a.headers["x-ms-ags-diagnostic"])["ServerInfo"]["RoleInstance"]
                   for a in answers}  # fmt: skip
        assert servers == {"Loopback_IN_0", "Loopback_IN_1"}  # both workers answered...
        # ...and together let 3 reads through in the minute, as one Graph app gets.
        assert [a.status_code for a in answers] == [200] * 3 + [429] * 9
        workers = [int(pid) for pid in subprocess.run(
            ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
        ).stdout.split()]  # fmt: skip
        assert len(workers) == 2
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    for pid in workers:  # reaped by the parent: gone, not zombies
        assert not Path(f"/proc/{pid}").exists()


def test_cli_refuses_workers_with_churn() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "entra_pipeline.cli", "emulator", "--workers", "2",
         "--churn", "0.01"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--workers 2 cannot be combined with --churn" in result.stderr


def test_the_readme_flow_emulator_env_then_check_works_as_written(tmp_path: Path) -> None:
    # entra-pipeline emulator > emulator.env &  . ./emulator.env;  entra-pipeline check
    process = subprocess.Popen(
        [sys.executable, "-m", "entra_pipeline.cli", "emulator", "--users", "20", "--devices", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        exported = _exports(process)
        check = subprocess.run(
            [sys.executable, "-m", "entra_pipeline.cli", "check"],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, **exported},
            timeout=120,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.splitlines()[0] == "entra-pipeline check: Graph emulator"
    assert exported["ENTRA_CLIENT_SECRET"] not in check.stdout + check.stderr


def _usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The last line argparse prints for a refused `entra-pipeline emulator ARGV`."""
    with pytest.raises(SystemExit) as caught:
        main(["emulator", *argv])
    assert caught.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--port", "99999"], "argument --port: '99999' is out of range: a port from 0 to 65535"),
        (["--port", "-1"], "argument --port: '-1' is out of range: a port from 0 to 65535"),
        (["--users", "-5"], "argument --users: '-5' is out of range: a number of users 0 or more"),
        (
            ["--permissions", "User.Read.All,Bogus.Read"],
            "argument --permissions: unknown permission Bogus.Read; the emulator knows ",
        ),
        (
            ["--client-id", "not-a-guid"],
            "argument --client-id: 'not-a-guid' is not a GUID: an app (client) id looks like "
            "11111111-2222-3333-4444-555555555555",
        ),
        (
            ["--client-secret", ""],
            "argument --client-secret: is empty: leave it out for a random secret",
        ),
        (
            ["--churn", "5"],
            "argument --churn: '5' is a share of the tenant, more than 0 and at most 1 (0.01: 1 %)",
        ),
        (["--cost-model", "-1"], "argument --cost-model: '-1' must be more than 0"),
    ],
)
def test_a_bad_option_is_refused_naming_what_is_allowed(
    capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    assert _usage_error(capsys, *argv).startswith(f"entra-pipeline emulator: error: {said}")


@pytest.fixture
def temp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder the emulator's certificates would be written in (TMPDIR)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_a_port_in_use_is_said_plainly_and_leaves_no_key_behind(
    capsys: pytest.CaptureFixture[str], temp_folder: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["emulator", "--port", str(port)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"entra-pipeline emulator: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert list(temp_folder.iterdir()) == []  # no entra-emulator-* folder with the server key


def test_a_host_that_is_no_address_is_said_plainly(
    capsys: pytest.CaptureFixture[str], temp_folder: Path
) -> None:
    assert main(["emulator", "--host", "999.1.1.1"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("entra-pipeline emulator: cannot listen on 999.1.1.1:0: ")
    assert list(temp_folder.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[1, 2]", "holds a JSON list; it must be an object"),
        ("{not json", "is not valid JSON: Expecting property name enclosed in double quotes"),
    ],
)
def test_a_tenant_file_that_is_not_a_json_object_is_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, said: str
) -> None:
    tenant = tmp_path / "tenant.json"
    tenant.write_text(text)
    assert main(["emulator", "--tenant-file", str(tenant)]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith(f"entra-pipeline emulator: tenant file {str(tenant)!r} {said}")
    )
