"""The token service honours HTTPS_PROXY / NO_PROXY like Graph calls do (httpx skips them when a
transport is given, so the provider resolves them itself)."""

from __future__ import annotations

import pytest

from entra_pipeline.emulator import Emulator
from entra_pipeline.graph.auth import TokenProvider, environment_proxy
from entra_pipeline.graph.errors import TokenServiceUnreachableError
from tests.support import unused_port


def _provider(emu: Emulator) -> TokenProvider:
    return TokenProvider(
        tenant_id=emu.tenant_id,
        client_id=emu.client_id,
        client_credential=emu.client_secret,
        authority_host=emu.authority_host,
        graph_url=emu.graph_url,
        ca_bundle=str(emu.ca_bundle),
        connect_retries=0,
        transient_retries=0,
    )


def test_environment_proxy_follows_https_proxy_and_no_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert environment_proxy("https://login.microsoftonline.com") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    assert environment_proxy("https://login.microsoftonline.com") == "http://proxy.corp:3128"
    monkeypatch.setenv("NO_PROXY", "login.microsoftonline.com,.corp")
    assert environment_proxy("https://login.microsoftonline.com") is None


def test_token_requests_go_through_the_configured_proxy(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("https_proxy", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{unused_port()}")
    with pytest.raises(TokenServiceUnreachableError):
        _provider(emulator).token()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert _provider(emulator).token()
