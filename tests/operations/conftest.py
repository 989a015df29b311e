"""Fixtures for the operations tests: a connector config written for an emulator (helpers live in
operate_fixtures.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from entra_pipeline.emulator import Emulator
from tests.operations.operate_fixtures import SECRET_VARIABLE, write_config


@pytest.fixture
def config_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """`config_for(emulator, **overrides)`: a connector YAML for that emulator, secret in the env."""

    def write(emulator: Emulator, **overrides: Any) -> Path:
        monkeypatch.setenv(SECRET_VARIABLE, emulator.client_secret)
        return write_config(tmp_path / "connector.yaml", emulator, **overrides)

    return write
