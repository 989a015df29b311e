"""The emulated Entra token service through MSAL: success, AADSTS errors, discovery documents."""

from __future__ import annotations

import httpx
import pytest

from entra_pipeline.emulator import Emulator

from .helpers import msal_app


def test_msal_acquires_a_bearer_token_with_the_client_secret(emulator: Emulator) -> None:
    result = msal_app(emulator).acquire_token_for_client([f"{emulator.graph_url}/.default"])
    assert result["token_type"] == "Bearer"
    assert result["expires_in"] == 3599
    assert result["token_source"] == "identity_provider"
    assert result["access_token"].count(".") == 2


def test_verified_domain_is_accepted_in_place_of_the_tenant_guid(emulator: Emulator) -> None:
    app = msal_app(emulator, tenant=emulator.tenant.domain)
    assert "access_token" in app.acquire_token_for_client([f"{emulator.graph_url}/.default"])


def test_bad_secret_answers_aadsts7000215(emulator: Emulator) -> None:
    result = msal_app(emulator, secret="wrong").acquire_token_for_client(
        [f"{emulator.graph_url}/.default"]
    )
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]
    assert result["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    assert {"timestamp", "trace_id", "correlation_id"} <= result.keys()


def test_unknown_client_answers_aadsts700016(emulator: Emulator) -> None:
    other = "11111111-2222-3333-4444-555555555555"
    result = msal_app(emulator, client_id=other).acquire_token_for_client(
        [f"{emulator.graph_url}/.default"]
    )
    assert result["error"] == "unauthorized_client"
    assert result["error_codes"] == [700016]
    assert f"Application with identifier '{other}' was not found" in result["error_description"]


def test_unknown_tenant_makes_msal_raise_value_error(emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="Unable to get authority configuration") as raised:
        msal_app(emulator, tenant="00000000-0000-0000-0000-000000000bad")
    # MSAL chains the discovery failure, which carries Entra's 400 body.
    assert "AADSTS90002" in str(raised.value.__context__)
    assert "HTTP status: 400" in str(raised.value.__context__)


def test_token_endpoint_for_unknown_tenant_answers_invalid_request(emulator: Emulator) -> None:
    response = httpx.post(
        f"{emulator.authority_host}/nosuch.example/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": emulator.client_id},
        verify=emulator.ssl_context(),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.json()["error_codes"] == [90002]


def test_scope_without_default_suffix_is_rejected(emulator: Emulator) -> None:
    result = msal_app(emulator).acquire_token_for_client([f"{emulator.graph_url}/User.Read"])
    assert result["error"] == "invalid_scope"
    assert result["error_codes"] == [1002012]


def test_openid_configuration_points_at_the_emulator(emulator: Emulator) -> None:
    response = httpx.get(
        f"{emulator.authority_host}/{emulator.tenant.domain}/v2.0/.well-known/openid-configuration",
        verify=emulator.ssl_context(),
    )
    config = response.json()
    base = f"{emulator.authority_host}/{emulator.tenant_id}"
    assert config["token_endpoint"] == f"{base}/oauth2/v2.0/token"
    assert config["authorization_endpoint"] == f"{base}/oauth2/v2.0/authorize"
    assert config["issuer"] == f"{base}/v2.0"


def test_instance_discovery_answers_like_entra(emulator: Emulator) -> None:
    response = httpx.get(
        f"{emulator.authority_host}/common/discovery/instance",
        params={
            "api-version": "1.1",
            "authorization_endpoint": f"{emulator.authority}/oauth2/v2.0/authorize",
        },
        verify=emulator.ssl_context(),
    )
    body = response.json()
    assert body["tenant_discovery_endpoint"] == (
        f"{emulator.authority}/v2.0/.well-known/openid-configuration"
    )
    host = emulator.authority_host.removeprefix("https://")
    assert body["metadata"] == [
        {"preferred_network": host, "preferred_cache": host, "aliases": [host]}
    ]


def test_msal_with_instance_discovery_pointed_at_the_emulator_works(emulator: Emulator) -> None:
    import msal

    app = msal.ConfidentialClientApplication(
        emulator.client_id,
        client_credential=emulator.client_secret,
        authority=emulator.authority,
        http_client=httpx.Client(verify=emulator.ssl_context()),
        instance_discovery=f"{emulator.authority_host}/common/discovery/instance",
    )
    assert "access_token" in app.acquire_token_for_client([f"{emulator.graph_url}/.default"])
