"""Fixtures for the MDM user source tests (helpers live in mdm_fixtures.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from entra_pipeline.emulator import EmulatorConfig, FileTenant, running_emulator
from tests.user_source.mdm_fixtures import UserSource, contoso


@pytest.fixture
def user_source(tmp_path: Path) -> Iterator[Callable[..., UserSource]]:
    """`user_source(**options)`: an emulator over the hand-built Contoso tenant (or `tenant=`)
    and a user source configured against it; the emulators stop when the test ends."""
    with contextlib.ExitStack() as stack:

        def start(tenant: dict[str, Any] | None = None, **options: Any) -> UserSource:
            # Certificates outlive the emulator: a test that stops it still loads its config.
            certs = tmp_path / "certs"
            config = EmulatorConfig(tenant=FileTenant(tenant or contoso()), cert_dir=certs)
            emu = stack.enter_context(running_emulator(config))
            return UserSource(emu, tmp_path, dict(options))

        yield start
