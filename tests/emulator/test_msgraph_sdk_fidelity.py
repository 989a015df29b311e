"""Fidelity: Microsoft's msgraph-sdk (a client nobody here wrote) lists and parses the emulator's
users, devices and groups across pages, with azure-identity fetching tokens from the emulator."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

pytest.importorskip("msgraph")
pytest.importorskip("azure.identity")

from azure.identity.aio import ClientSecretCredential
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph_core import GraphClientFactory

from entra_pipeline.emulator import Emulator

# The SDK warns about its own deprecated request-configuration classes; not ours to fix.
pytestmark = [pytest.mark.fidelity, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def _when(value: str | None) -> dt.datetime | None:
    return None if not value else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _with_sdk(emu: Emulator, work: Callable[[GraphServiceClient], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        credential = ClientSecretCredential(
            emu.tenant_id,
            emu.client_id,
            emu.client_secret,
            authority=emu.authority_host,
            connection_verify=emu.ca_bundle,
            disable_instance_discovery=True,
        )
        auth = AzureIdentityAuthenticationProvider(
            credential, scopes=[f"{emu.graph_url}/.default"], allowed_hosts=[emu.host]
        )
        http = GraphClientFactory.create_with_default_middleware(
            client=httpx.AsyncClient(verify=emu.ssl_context())
        )
        adapter = GraphRequestAdapter(auth, client=http)
        adapter.base_url = f"{emu.graph_url}/v1.0"
        try:
            return await work(GraphServiceClient(request_adapter=adapter))
        finally:
            await credential.close()
            await http.aclose()

    return asyncio.run(run())


async def _all_pages(builder: Any, config: RequestConfiguration) -> tuple[list[Any], int]:
    page = await builder.get(request_configuration=config)
    items, pages = list(page.value), 1
    while page.odata_next_link:
        page = await builder.with_url(page.odata_next_link).get()
        items += page.value
        pages += 1
    return items, pages


def test_sdk_parses_users_across_pages(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory(users=130, devices=0, seed=4)
    from msgraph.generated.users.users_request_builder import UsersRequestBuilder

    select = [
        "id", "displayName", "userPrincipalName", "mail", "accountEnabled", "userType",
        "createdDateTime", "assignedLicenses", "onPremisesExtensionAttributes", "businessPhones",
        "signInActivity",
    ]  # fmt: skip
    query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(select=select, top=50)
    config = RequestConfiguration(query_parameters=query)
    users, pages = _with_sdk(emu, lambda client: _all_pages(client.users, config))
    expected = list(emu.tenant.users())
    assert pages == 3
    assert len(users) == len(expected) == 130
    for got, want in zip(users, expected, strict=True):
        assert got.id == want["id"]
        assert got.display_name == want["displayName"]
        assert got.user_principal_name == want["userPrincipalName"]
        assert got.mail == want.get("mail")
        assert got.account_enabled == want["accountEnabled"]
        assert got.user_type == want["userType"]
        assert got.created_date_time == _when(want["createdDateTime"])
        assert got.business_phones == want["businessPhones"]
        assert [(lic.sku_id, lic.disabled_plans) for lic in got.assigned_licenses] == [
            (uuid.UUID(lic["skuId"]), [uuid.UUID(p) for p in lic["disabledPlans"]])
            for lic in want["assignedLicenses"]
        ]
        attributes = want["onPremisesExtensionAttributes"]
        assert (
            got.on_premises_extension_attributes.extension_attribute1
            == attributes["extensionAttribute1"]
        )
        assert (
            got.on_premises_extension_attributes.extension_attribute15
            == attributes["extensionAttribute15"]
        )
        activity = want.get("signInActivity")
        if activity is None:
            assert got.sign_in_activity is None
        else:
            assert got.sign_in_activity.last_sign_in_date_time == _when(
                activity["lastSignInDateTime"]
            )


def test_sdk_parses_devices_and_groups_with_members(
    emulator_factory: Callable[..., Emulator],
) -> None:
    emu = emulator_factory(users=40, devices=120, seed=4)
    from msgraph.generated.devices.devices_request_builder import DevicesRequestBuilder

    async def work(client: GraphServiceClient) -> tuple[Any, ...]:
        query = DevicesRequestBuilder.DevicesRequestBuilderGetQueryParameters(top=50)
        devices, device_pages = await _all_pages(
            client.devices, RequestConfiguration(query_parameters=query)
        )
        groups = (await client.groups.get()).value
        everyone = next(g for g in groups if g.display_name == "All Employees")
        members_builder = client.groups.by_group_id(everyone.id).transitive_members.graph_user
        members, _ = await _all_pages(members_builder, RequestConfiguration())
        return devices, device_pages, groups, everyone.id, members

    devices, device_pages, groups, everyone_id, members = _with_sdk(emu, work)
    expected_devices = list(emu.tenant.devices())
    assert device_pages == 3
    assert len(devices) == 120
    for got, want in zip(devices, expected_devices, strict=True):
        assert (got.id, got.display_name, got.trust_type) == (
            want["id"],
            want["displayName"],
            want["trustType"],
        )
        assert got.operating_system == want["operatingSystem"]
        assert got.approximate_last_sign_in_date_time == _when(
            want["approximateLastSignInDateTime"]
        )
        assert got.registration_date_time == _when(want["registrationDateTime"])
        assert got.is_compliant == want["isCompliant"]
    expected_groups = list(emu.tenant.groups())
    assert [(g.id, g.display_name, g.group_types, g.security_enabled) for g in groups] == [
        (g["id"], g["displayName"], g["groupTypes"], g["securityEnabled"]) for g in expected_groups
    ]
    expected_members = [
        m
        for m in emu.tenant.transitive_members(everyone_id)
        if m["@odata.type"] == "#microsoft.graph.user"
    ]
    assert [(m.id, m.user_principal_name) for m in members] == [
        (m["id"], m["userPrincipalName"]) for m in expected_members
    ]
