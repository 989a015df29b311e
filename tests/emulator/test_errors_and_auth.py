"""Graph error bodies and headers, bearer-token checks, per-app permissions, non-premium tenants."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from entra_pipeline.emulator import Emulator, Faults

from .helpers import graph, msal_app, token


def test_missing_token_is_401_with_graphs_error_body_and_ids(emulator: Emulator) -> None:
    response = httpx.get(
        f"{emulator.graph_url}/v1.0/users",
        headers={"client-request-id": "c0ffee00-0000-4000-8000-000000000001"},
        verify=emulator.ssl_context(),
    )
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "InvalidAuthenticationToken"
    assert error["message"] == "Access token is empty."
    assert error["innerError"]["client-request-id"] == "c0ffee00-0000-4000-8000-000000000001"
    assert error["innerError"]["request-id"] == response.headers["request-id"]
    assert response.headers["client-request-id"] == "c0ffee00-0000-4000-8000-000000000001"
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}


def test_forged_token_is_401(emulator: Emulator) -> None:
    header, payload, _ = token(emulator).split(".")
    response = graph(emulator).get(
        "/users", headers={"Authorization": f"Bearer {header}.{payload}.AAAA"}
    )
    assert response.status_code == 401
    assert response.json()["error"]["message"].startswith("Access token validation failure")


def test_token_expired_server_side_while_claiming_an_hour(
    emulator_factory: Callable[..., Emulator],
) -> None:
    emu = emulator_factory(users=3, devices=0, faults=Faults(token_ttl=0))
    result = msal_app(emu).acquire_token_for_client([f"{emu.graph_url}/.default"])
    assert result["expires_in"] == 3599
    response = httpx.get(
        f"{emu.graph_url}/v1.0/users",
        headers={"Authorization": f"Bearer {result['access_token']}"},
        verify=emu.ssl_context(),
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert (
        response.json()["error"]["message"] == "Lifetime validation failed, the token is expired."
    )
    emu.faults.token_ttl = None
    assert graph(emu).get("/users").status_code == 200


def test_honest_short_expires_in(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory(users=1, devices=0, faults=Faults(token_expires_in=120))
    result = msal_app(emu).acquire_token_for_client([f"{emu.graph_url}/.default"])
    assert result["expires_in"] == 120


def test_missing_permissions_answer_403_authorization_request_denied(
    emulator_factory: Callable[..., Emulator],
) -> None:
    emu = emulator_factory(users=5, devices=5, permissions={"User.Read.All"})
    client = graph(emu)
    assert client.get("/users").status_code == 200
    for path in ("/devices", "/groups", "/subscribedSkus"):
        response = client.get(path)
        assert response.status_code == 403, path
        assert response.json()["error"]["code"] == "Authorization_RequestDenied"
        assert (
            response.json()["error"]["message"]
            == "Insufficient privileges to complete the operation."
        )
    emu.permissions = {
        "User.Read.All",
        "Device.Read.All",
        "Organization.Read.All",
        "AuditLog.Read.All",
    }
    for path in ("/devices", "/subscribedSkus", "/users?$select=id,signInActivity"):
        assert client.get(path).status_code == 200, path


def test_sign_in_activity_without_audit_log_answers_403_msgraph_permission_missing(
    emulator_factory: Callable[..., Emulator],
) -> None:
    # Not Authorization_RequestDenied: Graph's own code for this call.
    emu = emulator_factory(users=5, devices=5, permissions={"User.Read.All"})
    response = graph(emu).get("/users?$select=id,signInActivity")
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "Authentication_MSGraphPermissionMissing"
    assert error["message"] == (
        "Calling principal does not have required MSGraph permissions AuditLog.Read.All"
    )
    assert set(error["innerError"]) >= {"date", "request-id", "client-request-id"}


def test_members_the_app_may_not_read_come_back_as_type_and_id(
    emulator_factory: Callable[..., Emulator],
) -> None:
    emu = emulator_factory(users=20, devices=10, permissions={"GroupMember.Read.All"})
    group = next(g for g in emu.tenant.groups() if g["displayName"] == "Project Phoenix")
    members = graph(emu).get(f"/groups/{group['id']}/transitiveMembers?$top=999").json()["value"]
    expected = emu.tenant.transitive_members(group["id"])
    assert [m["id"] for m in members] == [m["id"] for m in expected]
    for got, want in zip(members, expected, strict=True):
        if want["@odata.type"] == "#microsoft.graph.group":
            assert got["displayName"] == want["displayName"]  # GroupMember.Read.All reads groups
        else:
            assert got == {"@odata.type": want["@odata.type"], "id": want["id"]}
    assert {m["@odata.type"] for m in members} == {
        "#microsoft.graph.user",
        "#microsoft.graph.device",
        "#microsoft.graph.group",
    }


def test_non_premium_tenant_refuses_sign_in_activity(
    emulator_factory: Callable[..., Emulator],
) -> None:
    emu = emulator_factory(users=5, devices=0, premium=False)
    client = graph(emu)
    for path in (
        "/users?$select=id,signInActivity",
        "/users?$filter=signInActivity/lastSignInDateTime le 2024-01-01T00:00:00Z",
    ):
        response = client.get(path)
        assert response.status_code == 403
        assert (
            response.json()["error"]["code"]
            == "Authentication_RequestFromNonPremiumTenantOrB2CTenant"
        )
    assert client.get("/users?$select=id,displayName").status_code == 200
    emu.premium = True
    assert client.get("/users?$select=id,signInActivity").status_code == 200


def test_unknown_segment_is_400_bad_request(emulator: Emulator) -> None:
    response = graph(emulator).get("/printers")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"
