"""The `entra-pipeline` command line: bad arguments end in argparse's one-line error, exit 2."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from entra_pipeline.cli import main


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as caught:
        main(list(argv))
    assert caught.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_demo_refuses_a_negative_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_error(capsys, "demo", "--users", "-5") == (
        "entra-pipeline demo: error: argument --users: -5 is negative; use 0 or more"
    )
    assert usage_error(capsys, "demo", "--devices", "many") == (
        "entra-pipeline demo: error: argument --devices: 'many' is not a whole number"
    )


def test_demo_refuses_a_folder_or_a_file_that_is_not_duckdb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert usage_error(capsys, "demo", "--db", str(tmp_path)) == (
        f"entra-pipeline demo: error: argument --db: {str(tmp_path)!r} is a directory; name a "
        "DuckDB file in it"
    )
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    assert usage_error(capsys, "demo", "--db", str(notes)) == (
        f"entra-pipeline demo: error: argument --db: {str(notes)!r} exists and is not a DuckDB "
        "database"
    )
    assert not any(tmp_path.glob("*.duckdb*"))


def test_version_names_the_installed_package(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == (
        f"entra-pipeline {importlib.metadata.version('entra-pipeline')}"
    )


@pytest.mark.parametrize("command", ["check", "sync"])
def test_an_empty_config_path_is_refused_not_read_as_the_default(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    assert usage_error(capsys, command, "--config", "") == (
        f"entra-pipeline {command}: error: argument --config: is empty: give the connector YAML "
        "(or a folder of them), or leave --config out to use $ENTRA_CONNECTOR_CONFIG, else "
        "./connector.yaml"
    )
