"""Helpers for the Graph layer tests: token providers and clients wired to an emulator.

Retries sleep through a recorder (the delays are asserted, never waited), so fault tests are fast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from entra_pipeline.emulator import Emulator
from entra_pipeline.graph.auth import TokenProvider
from entra_pipeline.graph.client import GraphClient, RetryPolicy

# Tiny backoff: a retried request waits at most a few milliseconds.
FAST_RETRY = RetryPolicy(max_retries=4, backoff_base=0.001, backoff_max=0.004, max_restarts=2)


class SleepRecorder:
    """Stands in for time.sleep: remembers each requested delay, waits none of it."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def provider_for(emu: Emulator, **overrides: Any) -> TokenProvider:
    settings: dict[str, Any] = {
        "tenant_id": emu.tenant_id,
        "client_id": emu.client_id,
        "client_credential": emu.client_secret,
        "authority_host": emu.authority_host,
        "graph_url": emu.graph_url,
        "ca_bundle": emu.ca_bundle,
        "connect_retries": 0,
    }
    return TokenProvider(**{**settings, **overrides})


def token_requests(emu: Emulator) -> int:
    return sum(1 for r in emu.requests if r.path.endswith("/oauth2/v2.0/token"))


def graph_requests(emu: Emulator) -> list[Any]:
    return [r for r in emu.requests if r.path.startswith("/v1.0/")]


@contextlib.contextmanager
def client_for(emu: Emulator, **overrides: Any) -> Iterator[GraphClient]:
    """A GraphClient on `emu` with the fast retry policy, its token provider closed after;
    `overrides` go to the token provider (another app: client_id, client_credential)."""
    tokens = provider_for(emu, **overrides)
    try:
        with GraphClient(emu.graph_url, tokens, ca_bundle=emu.ca_bundle, retry=FAST_RETRY) as graph:
            yield graph
    finally:
        tokens.close()
