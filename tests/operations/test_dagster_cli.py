"""The project loads in Dagster's own tools, from the repo root, configured or not:
`dg check defs` and `dagster definitions validate -w workspace.yaml` as subprocesses."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
import tomllib
from pathlib import Path

import dagster as dg
import httpx
import pytest
import yaml

from tests.operations.operate_fixtures import REPO, SHIPPED_MAPPING
from tests.support import unused_port

BIN = REPO / ".venv" / "bin"
COMMANDS = {
    "dg check defs": [str(BIN / "dg"), "check", "defs"],
    "dagster definitions validate": [
        str(BIN / "dagster"),
        "definitions",
        "validate",
        "-w",
        "workspace.yaml",
    ],
}
NOT_CONFIGURED = "entra-pipeline is not configured yet"
SECRET = "cli-test-secret-value-5c1b"


def configured(tmp_path: Path) -> Path:
    config = tmp_path / "connector.yaml"
    config.write_text(
        "tenant_id: contoso.onmicrosoft.com\n"
        "client_id: 9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d\n"
        "client_secret: ${ENTRA_CLI_TEST_SECRET}\n"
        f"duckdb_path: {tmp_path / 'entra.duckdb'}\n"
        f"mapping_path: {SHIPPED_MAPPING}\n"
        "schedule: {repeats: weekly, start_time: '03:30', timezone: Europe/Berlin}\n"
    )
    return config


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("with_config", [True, False], ids=["configured", "not-configured"])
def test_definitions_load_in_dagsters_tools(
    command: str, with_config: bool, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ENTRA_CONNECTOR_CONFIG"}
    env["DAGSTER_HOME"] = str(tmp_path)
    env["ENTRA_CLI_TEST_SECRET"] = SECRET
    if with_config:
        env["ENTRA_CONNECTOR_CONFIG"] = str(configured(tmp_path))
    else:
        assert not (REPO / "connector.yaml").exists(), "./connector.yaml would configure it"

    result = subprocess.run(
        COMMANDS[command], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert (NOT_CONFIGURED in output) is not with_config
    assert SECRET not in output


def test_dg_and_the_workspace_file_name_one_code_location() -> None:
    # Schedule and sensor state is kept per location name: dg dev and dagster dev must agree.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    [location] = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"]
    assert project["code_location_name"] == location["python_module"]["location_name"]
    assert project["code_location_name"] == "entra_pipeline"


def test_dev_script_creates_an_owner_only_dagster_home_and_serves_the_ui(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    port = unused_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("ENTRA_CONNECTOR_CONFIG", "VIRTUAL_ENV")
    }
    env["DAGSTER_HOME"] = str(home)
    env["ENTRA_CLI_TEST_SECRET"] = SECRET
    env["ENTRA_CONNECTOR_CONFIG"] = str(configured(tmp_path))
    log = tmp_path / "dev.log"
    with log.open("w") as out:
        dev = subprocess.Popen(
            ["bash", "scripts/dev.sh", "--port", str(port), "--host", "127.0.0.1"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        query = {"query": "{ version repositoriesOrError { __typename } }"}
        deadline = time.monotonic() + 180
        while True:
            assert dev.poll() is None, log.read_text()
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/graphql", json=query, timeout=5)
                if answer.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(1)
        assert answer.json()["data"]["repositoriesOrError"]["__typename"] == "RepositoryConnection"
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        dev.wait(timeout=60)

    output = log.read_text()
    assert (home / "dagster.yaml").read_text() == (REPO / "deploy" / "dagster.yaml").read_text()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert "active virtual environment" not in output
    assert "No dagster instance configuration file" not in output
    assert "SupersessionWarning" not in output
    assert SECRET not in output


def test_the_shipped_instance_settings_queue_runs_per_warehouse(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text((REPO / "deploy" / "dagster.yaml").read_text())
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_max_resume_run_attempts == 0
    assert not instance.telemetry_enabled
    limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    # The tags every sync run carries (run_tags.run_tags): one run per published file at a time,
    # and at most 9 per app registration (its budget across tenants, README).
    assert limits == [
        {
            "key": "entra_pipeline/warehouse",
            "value": {"applyLimitPerUniqueValue": True},
            "limit": 1,
        },
        {"key": "entra_pipeline/app", "value": {"applyLimitPerUniqueValue": True}, "limit": 9},
    ]


def test_the_celery_instance_settings_launch_runs_on_celery_and_queue_them_alike(
    tmp_path: Path,
) -> None:
    (tmp_path / "dagster.yaml").write_text(
        (REPO / "deploy" / "celery" / "dagster.yaml").read_text().split("\nstorage:")[0]
        + "\nrun_queue:"
        + (REPO / "deploy" / "celery" / "dagster.yaml").read_text().split("\nrun_queue:")[1]
    )
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    assert type(instance.run_launcher).__name__ == "CeleryRunLauncher"
    keys = [
        limit["key"]
        for limit in instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    ]
    assert keys == ["entra_pipeline/warehouse", "entra_pipeline/app"]
