"""A run reads its connector config once: the code location's read and the run's connector
resource share one parse while nothing it reads changed; a changed file or variable is read
again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from entra_pipeline import config_file
from entra_pipeline.config_file import load_settings
from entra_pipeline.definitions import build_definitions
from entra_pipeline.emulator import Emulator
from entra_pipeline.names import CONNECTOR_JOB
from tests.operations.operate_fixtures import SECRET_VARIABLE


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    parsed: list[str] = []
    real = config_file.parse_settings

    def counted(document: dict[str, Any], **options: Any) -> Any:
        parsed.append(str(options.get("source")))
        return real(document, **options)

    monkeypatch.setattr(config_file, "parse_settings", counted)
    return parsed


def test_a_sync_run_parses_its_config_once(
    emulator: Emulator, config_for: Callable[..., Path], parses: list[str]
) -> None:
    config = config_for(emulator)
    definitions = build_definitions(load_settings(config), str(config))
    with dg.DagsterInstance.ephemeral() as instance:
        job = definitions.resolve_job_def(CONNECTOR_JOB)
        assert job.execute_in_process(instance=instance).success
    assert parses == [str(config)]


def test_a_changed_config_or_variable_is_read_again(
    emulator: Emulator,
    config_for: Callable[..., Path],
    parses: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = config_for(emulator)
    first = load_settings(config)
    assert load_settings(config) is first
    monkeypatch.setenv(SECRET_VARIABLE, "another-secret-value-for-this-test")
    assert load_settings(config).client_secret is not None
    assert len(parses) == 2
    config.write_text(config.read_text().replace("tenant_id", "tenant_id", 1) + "\n# edited\n")
    load_settings(config)
    assert len(parses) == 3
