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


# The longest modules first. The suite runs in two processes (pytest-xdist, --dist loadscope: a
# module's tests stay in one process, in the order modules are collected); a long module handed
# out last keeps one process busy while the other has nothing left to do.
LONGEST_FIRST = (
    "tests/test_celery.py",
    "tests/test_incremental_sync.py",
    "tests/test_ducklake.py",
    "tests/actions/test_actions.py",
    "tests/test_app_budget.py",
    "tests/test_docs_commands.py",
    "tests/test_connector_job.py",
    "tests/operations/test_killed_run.py",
    "tests/test_demo.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::")[0]
        return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each module's tests keep their order
