"""The connector resource every source's assets use: the connector configuration, parsed once per
run from the YAML named by ENTRA_CONNECTOR_CONFIG, and the Graph client it describes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dagster as dg
from pydantic import PrivateAttr

from entra_pipeline.config_file import load_settings
from entra_pipeline.graph.auth import TokenProvider
from entra_pipeline.graph.client import GraphClient, RetryPolicy
from entra_pipeline.graph.throttle import ThrottleGate
from entra_pipeline.settings import ConnectorSettings


class ConnectorResource(dg.ConfigurableResource):
    """The connector configuration, read from the YAML named by ENTRA_CONNECTOR_CONFIG, and the
    Graph client it describes."""

    config_path: str | None = None
    # How hard Graph calls are retried; tests shorten the backoff.
    max_retries: int = 6
    backoff_base_seconds: float = 1.0
    # Benchmarks only: real seconds per Graph second, as the emulator's cost model runs them
    # (every wait the client makes, Retry-After and pacing included, is scaled by it).
    graph_time_scale: float = 1.0

    _parsed: ConnectorSettings | None = PrivateAttr(default=None)

    def with_settings(self, settings: ConnectorSettings) -> ConnectorResource:
        """This resource with `settings` already parsed from its config (a folder's connector,
        read once for the run), so that the run does not read the file again."""
        self._parsed = settings
        return self

    @property
    def settings(self) -> ConnectorSettings:
        """The run's connector settings: parsed once per run (per resource instance)."""
        if self._parsed is None:
            self._parsed = load_settings(self.config_path)
        return self._parsed

    @contextlib.contextmanager
    def graph_client(self) -> Iterator[GraphClient]:
        """A Graph client authenticated as the app registration (closed on exit)."""
        settings = self.settings
        tokens = TokenProvider(
            tenant_id=settings.tenant_id,
            client_id=settings.client_id,
            client_credential=settings.client_credential(),
            credential_description=settings.credential_description(),
            authority_host=settings.authority_host,
            graph_url=settings.graph_url,
            ca_bundle=settings.ca_bundle,
        )
        retry = RetryPolicy(max_retries=self.max_retries, backoff_base=self.backoff_base_seconds)
        try:
            with GraphClient(
                settings.graph_url,
                tokens,
                ca_bundle=settings.ca_bundle,
                retry=retry,
                gate=ThrottleGate(time_scale=self.graph_time_scale),
            ) as client:
                yield client
        finally:
            tokens.close()
