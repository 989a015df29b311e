"""The emulator's writes on device and people records, as Graph answers them: each checks the
calling app's own permissions (the sync app reads only), refuses what Graph refuses (an
on-premises-synced object, a user holding a directory role, a non-Windows device's
accountEnabled by an app), and keeps the change for the next read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from entra_pipeline.emulator import AppRegistration, Emulator, EmulatorConfig, running_emulator
from entra_pipeline.graph.errors import GraphError
from tests.graph.graph_fixtures import client_for

ACTION_APP = AppRegistration(
    client_id="5f0c8c1e-2b7a-4d55-9a63-0d1e2f3a4b5c",
    client_secret="action-app-secret-for-tests",
    permissions=frozenset(
        {"Device.ReadWrite.All", "User.EnableDisableAccount.All", "User.Read.All"}
    ),
)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with running_emulator(EmulatorConfig(users=40, devices=40, seed=5, apps=(ACTION_APP,))) as e:
        yield e


def _as_action_app(emu: Emulator) -> Any:
    return client_for(
        emu, client_id=ACTION_APP.client_id, client_credential=ACTION_APP.client_secret
    )


def _device(emu: Emulator, *, windows: bool, synced: bool = False) -> dict[str, Any]:
    return next(
        d
        for d in emu.tenant.devices()
        if str(d.get("operatingSystem") or "").startswith("Windows") == windows
        and bool(d.get("onPremisesSyncEnabled")) == synced
        and d.get("accountEnabled")
    )


def _refusal(call: Any) -> tuple[int | None, str | None]:
    with pytest.raises(GraphError) as refused:
        call()
    return refused.value.status, refused.value.code


def test_the_action_app_disables_a_windows_device_and_the_next_read_sees_it(emu: Emulator) -> None:
    device = _device(emu, windows=True)
    with _as_action_app(emu) as graph:
        answer = graph.write(
            "PATCH", f"/devices/{device['id']}", {"accountEnabled": False}, label="disable"
        )
        assert answer.status_code == 204
        assert answer.headers["request-id"]
        read = graph.get_json(f"/devices/{device['id']}", {"$select": "id,accountEnabled"})
    assert read["accountEnabled"] is False


def test_the_sync_app_cannot_write(emu: Emulator) -> None:
    device = _device(emu, windows=True)
    with client_for(emu) as graph:
        refused = _refusal(
            lambda: graph.write(
                "PATCH", f"/devices/{device['id']}", {"accountEnabled": False}, label="x"
            )
        )
    assert refused == (403, "Authorization_RequestDenied")
    assert emu.tenant.object_at(*emu.tenant.locate(device["id"]))["accountEnabled"] is True


def test_graph_refuses_what_it_refuses(emu: Emulator) -> None:
    other = _device(emu, windows=False)
    admin = emu.tenant.object_at("user", 0)
    synced_user = next(u for u in emu.tenant.users() if u.get("onPremisesSyncEnabled"))
    with _as_action_app(emu) as graph:
        assert _refusal(
            lambda: graph.write(
                "PATCH", f"/devices/{other['id']}", {"accountEnabled": False}, label="x"
            )
        ) == (403, "Authorization_RequestDenied")
        assert _refusal(
            lambda: graph.write(
                "PATCH", f"/users/{admin['id']}", {"accountEnabled": False}, label="x"
            )
        ) == (403, "Authorization_RequestDenied")
        assert _refusal(
            lambda: graph.write(
                "PATCH", f"/users/{synced_user['id']}", {"accountEnabled": False}, label="x"
            )
        ) == (400, "Request_BadRequest")
        # Not granted User.RevokeSessions.All.
        assert _refusal(
            lambda: graph.write(
                "POST", f"/users/{synced_user['id']}/revokeSignInSessions", label="x"
            )
        ) == (403, "Authorization_RequestDenied")
        assert _refusal(lambda: graph.write("DELETE", "/devices/nope", label="x"))[0] == 404


def test_the_action_apps_token_names_its_permissions(emu: Emulator) -> None:
    with _as_action_app(emu) as graph:
        token = graph.access_token()
    import base64
    import json

    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["roles"] == sorted(ACTION_APP.permissions)
    assert claims["appid"] == ACTION_APP.client_id
