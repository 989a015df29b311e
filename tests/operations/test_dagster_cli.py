"""The project loads in Dagster's own tools, from the repo root, configured or not:
`dg check defs` and `dagster definitions validate -w workspace.yaml` as subprocesses."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.operations.operate_fixtures import REPO, SHIPPED_MAPPING

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
