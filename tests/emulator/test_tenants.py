"""The tenant interface: a seeded synthetic tenant's variety and laziness, and hand-built ones."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from entra_pipeline.emulator import Emulator, FileTenant, SyntheticTenant

from .helpers import all_values, graph

CLOCK = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def synthetic() -> SyntheticTenant:
    return SyntheticTenant(users=2000, devices=1000, seed=3, now=CLOCK)


def test_same_seed_same_tenant_other_seed_other_tenant() -> None:
    first = SyntheticTenant(users=50, devices=20, seed=9, now=CLOCK)
    again = SyntheticTenant(users=50, devices=20, seed=9, now=CLOCK)
    other = SyntheticTenant(users=50, devices=20, seed=10, now=CLOCK)
    assert list(first.users()) == list(again.users())
    assert list(first.devices()) == list(again.devices())
    assert first.tenant_id == again.tenant_id != other.tenant_id
    assert [u["id"] for u in first.users()] != [u["id"] for u in other.users()]


def test_users_have_realistic_variety(synthetic: SyntheticTenant) -> None:
    users = list(synthetic.users())
    assert len(users) == synthetic.user_count == 2000
    guests = [u for u in users if u["userType"] == "Guest"]
    assert 50 < len(guests) < 200
    assert all("#EXT#@contoso.onmicrosoft.com" in g["userPrincipalName"] for g in guests)
    assert all(not g["assignedLicenses"] for g in guests)
    assert 100 < sum(not u["accountEnabled"] for u in users) < 250
    licensed = [u for u in users if u["assignedLicenses"]]
    assert 1200 < len(licensed) < 1600
    sku_ids = {s["skuId"] for s in synthetic.subscribed_skus()}
    assert {lic["skuId"] for u in licensed for lic in u["assignedLicenses"]} == sku_ids
    names = "".join(u["displayName"] for u in users)
    for char in "éøüßÅ李佐김":
        assert char in names, char
    assert any(u["mail"] is None for u in users)
    assert any(u.get("department") is None for u in users)
    synced = [u for u in users if u.get("onPremisesSyncEnabled")]
    assert 600 < len(synced) < 900
    assert all(u["onPremisesExtensionAttributes"]["extensionAttribute1"] for u in synced)
    assert all(u["onPremisesExtensionAttributes"]["extensionAttribute1"] is None for u in guests)
    cost_center = synthetic.extension_property("costCenter")
    assert cost_center == f"extension_{synthetic.extension_app_id.replace('-', '')}_costCenter"
    assert 900 < sum(cost_center in u for u in users) < 1300


def test_sign_in_ages_and_never_values(synthetic: SyntheticTenant) -> None:
    def bucket(user: dict[str, Any]) -> str:
        activity = user.get("signInActivity")
        if activity is None:
            return "null"
        value = activity["lastSignInDateTime"]
        if value in (None, "", "0001-01-01T00:00:00Z"):
            return repr(value)
        age = CLOCK - dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return "recent" if age.days < 30 else "30-90" if age.days <= 90 else "stale"

    buckets = Counter(bucket(u) for u in synthetic.users())
    assert set(buckets) == {
        "null",
        "None",
        "''",
        "'0001-01-01T00:00:00Z'",
        "recent",
        "30-90",
        "stale",
    }
    assert buckets["recent"] > buckets["stale"] > 100
    created = [
        dt.datetime.fromisoformat(u["createdDateTime"].replace("Z", "+00:00"))
        for u in synthetic.users()
    ]
    assert max(created) <= CLOCK
    assert (CLOCK - min(created)).days > 2000


def test_devices_cover_every_trust_type_owner_and_check_in_age(synthetic: SyntheticTenant) -> None:
    devices = list(synthetic.devices())
    assert Counter(d["trustType"] for d in devices).keys() == {
        "AzureAd",
        "Workplace",
        "ServerAd",
        None,
    }
    assert any(d["approximateLastSignInDateTime"] is None for d in devices)
    assert any(d["registrationDateTime"] is None for d in devices)
    ages = [
        (
            CLOCK
            - dt.datetime.fromisoformat(d["approximateLastSignInDateTime"].replace("Z", "+00:00"))
        ).days
        for d in devices
        if d["approximateLastSignInDateTime"]
    ]
    assert min(ages) < 30
    assert max(ages) > 90
    owner_counts = Counter(len(synthetic.registered_owners(d["id"])) for d in devices)
    assert set(owner_counts) == {0, 1, 2}
    assert all(d["onPremisesLastSyncDateTime"] for d in devices if d["trustType"] == "ServerAd")


def test_groups_nest_several_levels_and_mix_member_types(synthetic: SyntheticTenant) -> None:
    by_name = {g["displayName"]: g for g in synthetic.groups()}
    chain = ["All Employees", "Region - Americas", "Dept - Engineering", "Team - Platform"]
    for parent, child in itertools.pairwise(chain):
        assert by_name[child]["id"] in {
            m["id"] for m in synthetic.direct_members(by_name[parent]["id"])
        }
    everyone = synthetic.transitive_members(by_name["All Employees"]["id"])
    ids = [m["id"] for m in everyone]
    assert len(ids) == len(set(ids))  # Platform engineers are in two groups but listed once
    assert by_name["Team - Platform"]["id"] in ids
    members = [u for u in synthetic.users() if u["userType"] == "Member" and u.get("department")]
    assert {m["id"] for m in everyone if m["@odata.type"] == "#microsoft.graph.user"} == {
        u["id"] for u in members
    }
    phoenix = synthetic.transitive_members(by_name["Project Phoenix"]["id"])
    assert {m["@odata.type"] for m in phoenix} == {
        "#microsoft.graph.user", "#microsoft.graph.device", "#microsoft.graph.group",
    }  # fmt: skip
    assert synthetic.direct_members(by_name["Empty Group"]["id"]) == []


def test_a_million_users_cost_no_memory() -> None:
    tracemalloc.start()
    tenant = SyntheticTenant(users=1_000_000, devices=500_000, seed=1)
    last = tenant.user(999_999)
    assert tenant.get_user(last["id"]) == last
    assert tenant.manager_of(last["id"]) is not None
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert tenant.user_count == 1_000_000
    assert peak < 5_000_000


def _hand_built() -> dict[str, Any]:
    return {
        "tenant_id": "11111111-1111-4111-8111-111111111111",
        "domain": "fabrikam.com",
        "now": "2025-01-01T00:00:00Z",
        "users": [
            {"id": "a0000000-0000-4000-8000-000000000001", "displayName": "Boss", "userPrincipalName": "boss@fabrikam.com",
             "signInActivity": {"lastSignInDateTime": "2024-12-30T00:00:00Z"},
             "assignedLicenses": [{"skuId": "05e9a617-0261-4cee-bb44-138d3ef5d965", "disabledPlans": []}]},
            {"id": "a0000000-0000-4000-8000-000000000002", "displayName": "Worker", "userPrincipalName": "w@fabrikam.com",
             "manager": "a0000000-0000-4000-8000-000000000001"},
        ],
        "devices": [
            {"id": "d0000000-0000-4000-8000-000000000001", "displayName": "PC-1", "trustType": "AzureAd",
             "registeredOwners": ["a0000000-0000-4000-8000-000000000002"]},
        ],
        "groups": [
            {"id": "90000000-0000-4000-8000-000000000001", "displayName": "Outer",
             "members": ["90000000-0000-4000-8000-000000000002", "a0000000-0000-4000-8000-000000000001"]},
            {"id": "90000000-0000-4000-8000-000000000002", "displayName": "Inner",
             "members": ["a0000000-0000-4000-8000-000000000001", "d0000000-0000-4000-8000-000000000001"]},
        ],
        "subscribedSkus": [{"skuId": "05e9a617-0261-4cee-bb44-138d3ef5d965", "skuPartNumber": "SPE_E3"}],
    }  # fmt: skip


def test_file_tenant_answers_its_relationships(tmp_path: Path) -> None:
    path = tmp_path / "tenant.json"
    path.write_text(json.dumps(_hand_built()), encoding="utf-8")
    tenant = FileTenant.from_file(path)
    assert (tenant.tenant_id, tenant.domain, tenant.user_count, tenant.now) == (
        "11111111-1111-4111-8111-111111111111", "fabrikam.com", 2, dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    )  # fmt: skip
    assert "manager" not in tenant.user(1)  # relationships are not properties
    assert tenant.manager_of("a0000000-0000-4000-8000-000000000002")["displayName"] == "Boss"
    assert [
        o["displayName"] for o in tenant.registered_owners("d0000000-0000-4000-8000-000000000001")
    ] == ["Worker"]
    outer = "90000000-0000-4000-8000-000000000001"
    assert [m["displayName"] for m in tenant.direct_members(outer)] == ["Boss", "Inner"]
    assert [(m["@odata.type"], m["displayName"]) for m in tenant.transitive_members(outer)] == [
        ("#microsoft.graph.user", "Boss"),
        ("#microsoft.graph.group", "Inner"),
        ("#microsoft.graph.device", "PC-1"),
    ]


def test_file_tenant_rejects_dangling_references() -> None:
    data = _hand_built()
    data["groups"][0]["members"].append("ffffffff-0000-4000-8000-000000000000")
    with pytest.raises(ValueError, match="unknown object id ffffffff"):
        FileTenant(data)


def test_file_tenant_served_by_the_emulator(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory(tenant=FileTenant(_hand_built()))
    client = graph(emu)
    assert emu.tenant_id == "11111111-1111-4111-8111-111111111111"
    users = all_values(
        client, "/users?$select=id,signInActivity,assignedLicenses&$expand=manager($select=id)"
    )
    assert users[0]["signInActivity"] == {"lastSignInDateTime": "2024-12-30T00:00:00Z"}
    assert users[1]["manager"] == {
        "@odata.type": "#microsoft.graph.user",
        "id": "a0000000-0000-4000-8000-000000000001",
    }
    assert users[1]["signInActivity"] is None
    assert users[1]["assignedLicenses"] == []
    (sku,) = client.get("/subscribedSkus").json()["value"]
    # Properties the file leaves out answer null, or [] for collections, as Graph does.
    assert (sku["skuPartNumber"], sku["consumedUnits"], sku["servicePlans"]) == ("SPE_E3", None, [])


@pytest.mark.parametrize(
    "properties",
    [
        frozenset({"id"}),
        frozenset({"id", "userPrincipalName", "mail", "userType"}),
        frozenset({"id", "signInActivity"}),
        frozenset({"id", "displayName", "accountEnabled"}),
    ],
)
def test_objects_built_for_a_few_properties_agree_with_full_objects(
    synthetic: SyntheticTenant, properties: frozenset[str]
) -> None:
    for index in range(300):
        full = synthetic.user(index)
        partial = synthetic.object_at("user", index, properties)
        assert full is not None
        assert partial is not None
        assert {p: partial.get(p) for p in properties} == {p: full.get(p) for p in properties}
