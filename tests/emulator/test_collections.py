"""Graph v1.0 collections over httpx: paging, $select defaults, $top bounds, $expand caps, members."""

from __future__ import annotations

from collections.abc import Callable

from entra_pipeline.emulator import Emulator
from entra_pipeline.emulator.schema import USER_DEFAULT_SELECT

from .helpers import all_values, graph, pages

USER_DEFAULTS = {
    "businessPhones", "displayName", "givenName", "id", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName",
}  # fmt: skip


def test_users_without_select_answer_graphs_default_property_set(emulator: Emulator) -> None:
    body = graph(emulator).get("/users").json()
    assert set(USER_DEFAULT_SELECT) == USER_DEFAULTS
    assert all(set(user) == USER_DEFAULTS for user in body["value"])
    assert body["@odata.context"] == f"{emulator.graph_url}/v1.0/$metadata#users"


def test_paging_with_top_returns_every_user_once_in_tenant_order(emulator: Emulator) -> None:
    client = graph(emulator)
    bodies = list(pages(client, "/users?$top=7&$select=id,displayName"))
    assert len(bodies) == 9  # 60 users / 7 per page
    assert [len(b["value"]) for b in bodies] == [7] * 8 + [4]
    assert all(
        b["@odata.nextLink"].startswith(f"{emulator.graph_url}/v1.0/users?") for b in bodies[:-1]
    )
    assert "$skiptoken=" in bodies[0]["@odata.nextLink"]
    assert "@odata.nextLink" not in bodies[-1]
    got = [u["id"] for b in bodies for u in b["value"]]
    assert got == [u["id"] for u in emulator.tenant.users()]


def test_default_page_size_is_100(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory(users=130, devices=0)
    assert [len(b["value"]) for b in pages(graph(emu), "/users?$select=id")] == [100, 30]


def test_select_answers_exactly_the_selected_properties_with_nulls(emulator: Emulator) -> None:
    tenant = emulator.tenant
    cost_center = tenant.extension_property("costCenter")
    select = f"id,mail,department,employeeId,assignedLicenses,onPremisesExtensionAttributes,{cost_center}"
    users = all_values(graph(emulator), f"/users?$top=999&$select={select}")
    expected = list(tenant.users())
    assert len(users) == len(expected) == 60
    for got, want in zip(users, expected, strict=True):
        assert got["id"] == want["id"]
        assert got["mail"] == want.get("mail")
        assert got["department"] == want.get("department")
        assert got["assignedLicenses"] == want["assignedLicenses"]
        assert got["onPremisesExtensionAttributes"] == want["onPremisesExtensionAttributes"]
        # Directory extensions are omitted, not null, when a user has no value.
        assert got.get(cost_center) == want.get(cost_center)
        assert (cost_center in got) == (cost_center in want)
    assert any(u["mail"] is None for u in users)


def test_select_is_case_insensitive_and_unknown_property_is_400(emulator: Emulator) -> None:
    client = graph(emulator)
    user = client.get("/users?$select=DISPLAYNAME&$top=1").json()["value"][0]
    assert set(user) == {"displayName", "id"}
    response = client.get("/users?$select=id,shoeSize")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "Request_BadRequest"
    assert "shoeSize" in response.json()["error"]["message"]


def test_top_outside_1_to_999_is_400(emulator: Emulator) -> None:
    client = graph(emulator)
    for top in ("0", "1000", "x"):
        response = client.get(f"/users?$top={top}")
        assert response.status_code == 400, top
        assert response.json()["error"]["code"] == "Request_BadRequest"
    assert client.get("/users?$top=999").status_code == 200


def test_expand_caps_pages_at_100_even_with_top_999(
    emulator_factory: Callable[..., Emulator],
) -> None:
    emu = emulator_factory(users=230, devices=0)
    client = graph(emu)
    url = (
        "/users?$top=999&$select=id,userPrincipalName&$expand=manager($select=id,userPrincipalName)"
    )
    bodies = list(pages(client, url))
    assert [len(b["value"]) for b in bodies] == [100, 100, 30]
    for user in (u for b in bodies for u in b["value"]):
        manager = emu.tenant.manager_of(user["id"])
        if manager is None:
            assert "manager" not in user
        else:
            assert user["manager"] == {
                "@odata.type": "#microsoft.graph.user",
                "id": manager["id"],
                "userPrincipalName": manager["userPrincipalName"],
            }


def test_selecting_sign_in_activity_caps_pages_at_500(
    emulator_factory: Callable[..., Emulator],
) -> None:
    emu = emulator_factory(users=620, devices=0)
    bodies = list(pages(graph(emu), "/users?$top=999&$select=id,signInActivity"))
    assert [len(b["value"]) for b in bodies] == [500, 120]
    by_id = {u["id"]: u.get("signInActivity") for u in emu.tenant.users()}
    assert all(u["signInActivity"] == by_id[u["id"]] for b in bodies for u in b["value"])


def test_devices_expand_registered_owners(emulator: Emulator) -> None:
    url = "/devices?$top=999&$select=id,trustType&$expand=registeredOwners($select=id,userPrincipalName)"
    devices = all_values(graph(emulator), url)
    assert len(devices) == 40
    for device in devices:
        owners = emulator.tenant.registered_owners(device["id"])
        assert device["registeredOwners"] == [
            {
                "@odata.type": "#microsoft.graph.user",
                "id": o["id"],
                "userPrincipalName": o["userPrincipalName"],
            }
            for o in owners
        ]
    assert {d["trustType"] for d in devices} == {"AzureAd", "Workplace", "ServerAd", None}


def test_groups_and_transitive_members_with_casts(emulator: Emulator) -> None:
    client = graph(emulator)
    groups = all_values(client, "/groups?$select=id,displayName")
    assert [g["displayName"] for g in groups] == [
        g["displayName"] for g in emulator.tenant.groups()
    ]
    all_employees = next(g for g in groups if g["displayName"] == "All Employees")
    members = all_values(
        client, f"/groups/{all_employees['id']}/transitiveMembers?$top=5&$select=id"
    )
    expected = emulator.tenant.transitive_members(all_employees["id"])
    assert [m["id"] for m in members] == [m["id"] for m in expected]
    assert {m["@odata.type"] for m in members} == {
        "#microsoft.graph.user",
        "#microsoft.graph.group",
    }
    users_only = all_values(
        client, f"/groups/{all_employees['id']}/transitiveMembers/microsoft.graph.user?$top=999"
    )
    assert [m["id"] for m in users_only] == [
        m["id"] for m in expected if m["@odata.type"] == "#microsoft.graph.user"
    ]
    direct = all_values(client, f"/groups/{all_employees['id']}/members")
    assert [m["displayName"] for m in direct] == ["Region - EMEA", "Region - Americas"]


def test_device_group_members_cast_to_device(emulator: Emulator) -> None:
    client = graph(emulator)
    managed = next(g for g in emulator.tenant.groups() if g["displayName"] == "All Managed Devices")
    devices = all_values(
        client,
        f"/groups/{managed['id']}/transitiveMembers/microsoft.graph.device?$select=id,trustType",
    )
    assert devices
    assert {d["trustType"] for d in devices} == {"AzureAd", "ServerAd"}
    expected = [
        m["id"]
        for m in emulator.tenant.transitive_members(managed["id"])
        if m["@odata.type"] == "#microsoft.graph.device"
    ]
    assert [d["id"] for d in devices] == expected


def test_subscribed_skus(emulator: Emulator) -> None:
    body = graph(emulator).get("/subscribedSkus").json()
    assert [s["skuPartNumber"] for s in body["value"]] == [
        "SPE_E3", "ENTERPRISEPACK", "SPE_E5", "EMS", "POWER_BI_PRO", "FLOW_FREE",
    ]  # fmt: skip
    assert body["value"] == emulator.tenant.subscribed_skus()


def test_single_objects_manager_and_owners(emulator: Emulator) -> None:
    client = graph(emulator)
    tenant = emulator.tenant
    user = tenant.user(9)
    assert client.get(f"/users/{user['id']}?$select=id,department").json()[
        "department"
    ] == user.get("department")
    by_upn = client.get(f"/users/{user['userPrincipalName']}").json()
    assert by_upn["id"] == user["id"]
    manager = client.get(f"/users/{user['id']}/manager").json()
    assert manager["id"] == tenant.manager_of(user["id"])["id"]
    assert manager["@odata.type"] == "#microsoft.graph.user"
    root = client.get(f"/users/{tenant.user(0)['id']}/manager")
    assert root.status_code == 404
    assert root.json()["error"]["code"] == "Request_ResourceNotFound"
    missing = client.get("/users/00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404
    device = next(d for d in tenant.devices() if tenant.registered_owners(d["id"]))
    owners = client.get(f"/devices/{device['id']}/registeredOwners").json()["value"]
    assert [o["id"] for o in owners] == [o["id"] for o in tenant.registered_owners(device["id"])]


def test_groups_expand_members_lists_at_most_20(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory(users=400, devices=0)
    groups = (
        graph(emu).get("/groups?$select=id,displayName&$expand=members($select=id)").json()["value"]
    )
    for group in groups:
        expected = emu.tenant.direct_members(group["id"])[:20]
        assert group["members"] == [
            {"@odata.type": m["@odata.type"], "id": m["id"]} for m in expected
        ]
    assert max(len(g["members"]) for g in groups) == 20


def test_prefer_maxpagesize_and_group_lookup_by_name(emulator: Emulator) -> None:
    client = graph(emulator)
    body = client.get("/users?$select=id", headers={"Prefer": "odata.maxpagesize=25"}).json()
    assert len(body["value"]) == 25
    found = client.get(
        "/groups?$filter=displayName eq 'Dept - Sales'&$select=id,displayName"
    ).json()
    assert [g["displayName"] for g in found["value"]] == ["Dept - Sales"]


def test_page_tokens_are_tamper_proof_and_bound_to_their_query(emulator: Emulator) -> None:
    client = graph(emulator)
    link = client.get("/users?$top=5&$select=id").json()["@odata.nextLink"]
    token = link.split("$skiptoken=")[1]
    tampered = client.get(f"/users?$top=5&$select=id&$skiptoken={token[:-3]}abc")
    assert tampered.status_code == 400
    other_query = client.get(f"/users?$top=5&$select=id,displayName&$skiptoken={token}")
    assert other_query.status_code == 400
    assert client.get(link).status_code == 200
