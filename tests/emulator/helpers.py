"""Small clients for emulator tests: an MSAL app, a token, and an authenticated httpx client.

They go through the same msal/httpx code paths the pipeline uses against Microsoft.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import msal

from entra_pipeline.emulator import Emulator


def msal_app(
    emu: Emulator,
    *,
    secret: str | None = None,
    client_id: str | None = None,
    tenant: str | None = None,
) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client_id or emu.client_id,
        client_credential=secret or emu.client_secret,
        authority=f"{emu.authority_host}/{tenant or emu.tenant_id}",
        http_client=httpx.Client(verify=emu.ssl_context()),
        instance_discovery=False,
    )


def token(emu: Emulator) -> str:
    result = msal_app(emu).acquire_token_for_client([f"{emu.graph_url}/.default"])
    return result["access_token"]


def graph(emu: Emulator, **headers: str) -> httpx.Client:
    """An httpx client on `{graph_url}/v1.0` with a fresh bearer token."""
    return httpx.Client(
        base_url=f"{emu.graph_url}/v1.0",
        verify=emu.ssl_context(),
        headers={"Authorization": f"Bearer {token(emu)}", **headers},
        timeout=30,
    )


def pages(client: httpx.Client, url: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every page of a collection, following @odata.nextLink as an opaque absolute URL."""
    next_url: str | None = url
    while next_url:
        response = client.get(next_url, **kwargs)
        assert response.status_code == 200, response.text
        body = response.json()
        yield body
        next_url = body.get("@odata.nextLink")


def all_values(client: httpx.Client, url: str, **kwargs: Any) -> list[dict[str, Any]]:
    return [item for page in pages(client, url, **kwargs) for item in page["value"]]
