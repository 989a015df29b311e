"""TokenProvider against the emulator's token service: caching, refresh, and every AADSTS failure.

Each failure must be its own type with a message that says what to fix, and never the secret.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable

import pytest

from entra_pipeline.emulator import Emulator, Faults
from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.errors import (
    GraphRequestError,
    InvalidClientSecretError,
    TokenError,
    TokenServiceUnreachableError,
    UnknownClientError,
    UnknownTenantError,
)
from tests.graph.graph_fixtures import provider_for, token_requests
from tests.support import unused_port

WRONG_SECRET = "Wr0ng8Q~notTheSecretAtAllButLongEnough12"


def assert_secret_absent(secret: str, client_id: str, *texts: str) -> None:
    # MSAL sends the secret in the form body or as HTTP Basic credentials: look for both.
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    for text in texts:
        assert secret not in text
        assert basic not in text


def test_token_is_acquired_once_and_reused(emulator: Emulator) -> None:
    tokens = provider_for(emulator)
    first = tokens.token()
    assert [tokens.token() for _ in range(5)] == [first] * 5
    assert token_requests(emulator) == 1
    tokens.close()


def test_token_close_to_expiry_is_acquired_again(emulator_factory: Callable[..., Emulator]) -> None:
    # MSAL treats a token with under five minutes left as expired: each call asks for a new one.
    emu = emulator_factory(users=3, devices=1, faults=Faults(token_expires_in=240))
    tokens = provider_for(emu)
    tokens.token()
    tokens.token()
    assert token_requests(emu) == 2
    tokens.close()


def test_invalidate_drops_only_the_rejected_token(emulator: Emulator) -> None:
    tokens = provider_for(emulator)
    first = tokens.token()
    tokens.invalidate("a-token-from-before")
    assert tokens.token() == first
    assert token_requests(emulator) == 1
    tokens.invalidate(first)
    second = tokens.token()
    assert second != first
    assert token_requests(emulator) == 2
    tokens.close()


def test_token_expired_server_side_is_refreshed_once_on_401(
    emulator_factory: Callable[..., Emulator], client_factory: Callable[..., GraphClient]
) -> None:
    # The token claims an hour but dies after 3 seconds, as a revoked or clock-skewed one would
    # (long enough for the requests around it on a loaded machine: 1 s was not).
    emu = emulator_factory(users=3, devices=1, faults=Faults(token_ttl=3.0))
    graph = client_factory(emu)
    assert len(graph.get_json("/users")["value"]) == 3
    time.sleep(3.1)
    assert len(graph.get_json("/users")["value"]) == 3
    assert token_requests(emu) == 2
    assert [r.status for r in emu.requests if r.path == "/v1.0/users"] == [200, 401, 200]
    assert graph.stats["/v1.0/users"].retries == 1


def test_token_rejected_again_after_refresh_is_an_error(
    emulator_factory: Callable[..., Emulator], client_factory: Callable[..., GraphClient]
) -> None:
    emu = emulator_factory(users=3, devices=1, faults=Faults(token_ttl=0.0))
    graph = client_factory(emu)
    with pytest.raises(GraphRequestError) as raised:
        graph.get_json("/users")
    error = raised.value
    assert error.status == 401
    assert str(error).startswith(
        "Graph rejected a freshly issued access token for GET /v1.0/users "
        "(InvalidAuthenticationToken: Lifetime validation failed, the token is expired.); check "
        "that graph_url and authority_host belong to the same cloud (request-id "
    )
    assert token_requests(emu) == 2


def test_tenant_by_verified_domain_gets_a_token(emulator: Emulator) -> None:
    tokens = provider_for(emulator, tenant_id=emulator.tenant.domain)
    assert tokens.token().count(".") == 2
    tokens.close()


def test_bad_secret_names_the_setting_and_never_the_secret(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = provider_for(emulator, client_credential=WRONG_SECRET)
    with pytest.raises(InvalidClientSecretError) as raised:
        tokens.token()
    error = raised.value
    trace = str(error).rsplit("(trace id ", 1)[1]
    assert str(error) == (
        f"The token service rejected the client secret of client id {emulator.client_id} in "
        f"tenant {emulator.tenant_id} (AADSTS7000215): check client_secret / "
        f"ENTRA_CLIENT_SECRET; it may have expired (trace id {trace}"
    )
    assert error.notification_code == "authentication_failed"
    assert_secret_absent(
        WRONG_SECRET, emulator.client_id, str(error), repr(error), repr(tokens), caplog.text
    )
    tokens.close()


def test_secret_never_logged_or_shown_on_success(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = provider_for(emulator)
    tokens.token()
    assert_secret_absent(emulator.client_secret, emulator.client_id, repr(tokens), caplog.text)
    tokens.close()


def test_unknown_client_id_is_named(emulator: Emulator) -> None:
    client_id = "11111111-2222-3333-4444-555555555555"
    tokens = provider_for(emulator, client_id=client_id)
    with pytest.raises(UnknownClientError) as raised:
        tokens.token()
    message = str(raised.value)
    assert message.startswith(
        f"The token service knows no application with client id {client_id} in tenant "
        f"{emulator.tenant_id} (AADSTS700016): check client_id / ENTRA_CLIENT_ID and that the "
        "app is registered in this tenant (trace id "
    )
    assert_secret_absent(emulator.client_secret, client_id, message)
    tokens.close()


def test_unknown_tenant_is_named(emulator: Emulator) -> None:
    tenant = "00000000-0000-0000-0000-000000000001"
    tokens = provider_for(emulator, tenant_id=tenant)
    with pytest.raises(UnknownTenantError) as raised:
        tokens.token()
    assert str(raised.value) == (
        f"The token service at {emulator.authority_host}/{tenant} does not know tenant "
        f"'{tenant}': check tenant_id / ENTRA_TENANT_ID (the directory's GUID or a verified "
        "domain such as contoso.onmicrosoft.com) and authority_host (national clouds have "
        "their own)"
    )
    assert isinstance(raised.value, TokenError)
    tokens.close()


def test_unreachable_token_service(emulator: Emulator) -> None:
    authority_host = f"https://127.0.0.1:{unused_port()}"
    tokens = provider_for(emulator, authority_host=authority_host)
    with pytest.raises(TokenServiceUnreachableError) as raised:
        tokens.token()
    message = str(raised.value)
    assert message.startswith(
        f"The token service at {authority_host}/{emulator.tenant_id} is unreachable (ConnectError: "
    )
    assert message.endswith("); check authority_host, the network or proxy, and ca_bundle")
    assert raised.value.notification_code == "service_unreachable"
    tokens.close()


def test_untrusted_certificate_asks_for_ca_bundle(emulator: Emulator) -> None:
    tokens = provider_for(emulator, ca_bundle=None)
    with pytest.raises(TokenServiceUnreachableError) as raised:
        tokens.token()
    assert str(raised.value) == (
        f"The token service at {emulator.authority} presented a TLS certificate this machine "
        "does not trust; set ca_bundle to the PEM of its CA (TLS-inspecting proxy, emulator)"
    )
    tokens.close()


def test_token_service_outage_is_retried_after_msal_replay_window(
    emulator: Emulator,
) -> None:
    # MSAL replays the 503 for its Retry-After (1 s here); the retry waits that out and succeeds.
    emulator.faults.unavailable_next(f"/{emulator.tenant_id}/oauth2", count=1, retry_after=1)
    tokens = provider_for(emulator, transient_wait=1.1)
    assert tokens.token()
    assert token_requests(emulator) == 2
    tokens.close()


def test_token_service_throttling_that_lasts_is_unreachable(emulator: Emulator) -> None:
    emulator.faults.throttle_next(f"/{emulator.tenant_id}/oauth2", count=5, retry_after=1)
    tokens = provider_for(emulator, transient_retries=1, transient_wait=1.1)
    with pytest.raises(TokenServiceUnreachableError) as raised:
        tokens.token()
    assert str(raised.value) == (
        f"The token service at {emulator.authority} is unreachable (temporarily_unavailable: "
        "AADSTS90033: A transient error has occurred. Please try again.); check "
        "authority_host, the network or proxy, and ca_bundle"
    )
    assert token_requests(emulator) == 2
    tokens.close()
