"""Fixtures for the Graph layer tests (helpers live in graph_fixtures.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from entra_pipeline.emulator import Emulator
from entra_pipeline.graph.auth import TokenProvider
from entra_pipeline.graph.client import GraphClient
from tests.graph.graph_fixtures import FAST_RETRY, SleepRecorder, provider_for


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def client_factory(sleeps: SleepRecorder) -> Iterator[Callable[..., GraphClient]]:
    """`client_factory(emu, retry=..., timeout=...)`: a GraphClient on `emu`, closed afterwards."""
    opened: list[tuple[GraphClient, TokenProvider]] = []

    def make(emu: Emulator, **options: object) -> GraphClient:
        tokens = provider_for(emu)
        options.setdefault("retry", FAST_RETRY)
        client = GraphClient(
            emu.graph_url, tokens, ca_bundle=emu.ca_bundle, sleep=sleeps, **options
        )
        opened.append((client, tokens))
        return client

    yield make
    for client, tokens in opened:
        client.close()
        tokens.close()


@pytest.fixture
def graph(emulator: Emulator, client_factory: Callable[..., GraphClient]) -> GraphClient:
    """A client on the shared 60-user / 40-device emulator."""
    return client_factory(emulator)
