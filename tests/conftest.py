"""Shared fixtures: a Graph emulator per test (small synthetic tenant) and a factory for others.

Every emulator listens on 127.0.0.1 with a free port and is stopped when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from entra_pipeline.emulator import Emulator, EmulatorConfig, running_emulator


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A running emulator over a 60-user, 40-device synthetic tenant (seed 7)."""
    with running_emulator(EmulatorConfig(users=60, devices=40, seed=7)) as emu:
        yield emu


@pytest.fixture
def emulator_factory() -> Iterator[Callable[..., Emulator]]:
    """Start emulators with any `EmulatorConfig` fields: `emulator_factory(users=5, premium=False)`."""
    started: list[Emulator] = []

    def start(**config: Any) -> Emulator:
        emu = Emulator(EmulatorConfig(**config))
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()
