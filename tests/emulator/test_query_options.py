"""$filter, $count and ConsistencyLevel as Graph applies them, on hand-built and synthetic tenants."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from entra_pipeline.emulator import Emulator, FileTenant
from entra_pipeline.emulator.filters import parse_datetime

from .helpers import all_values, graph, pages

E3 = "05e9a617-0261-4cee-bb44-138d3ef5d965"
E5 = "06ebc4ee-1bb5-47dd-8120-11324bc54e06"


def _user(n: int, name: str, **props: Any) -> dict[str, Any]:
    return {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "displayName": name,
        "userPrincipalName": f"user{n}@contoso.com",
        "accountEnabled": True,
        "userType": "Member",
        "assignedLicenses": [],
        "createdDateTime": "2023-01-01T00:00:00Z",
        **props,
    }


USERS = [
    _user(1, "Conan O'Brien", assignedLicenses=[{"skuId": E3, "disabledPlans": []}],
          signInActivity={"lastSignInDateTime": "2024-05-01T10:00:00Z"}),
    _user(2, "Zoë Ærø", accountEnabled=False, createdDateTime="2024-06-01T00:00:00Z",
          signInActivity={"lastSignInDateTime": "0001-01-01T00:00:00Z"}),
    _user(3, "Guest Person", userType="Guest", assignedLicenses=[{"skuId": E5, "disabledPlans": []}],
          signInActivity={"lastSignInDateTime": ""}),
    _user(4, "conan obrien", department="Sales", signInActivity=None),
    _user(5, "Adele Vance", department="Sales", assignedLicenses=[{"skuId": E3, "disabledPlans": []}],
          signInActivity={"lastSignInDateTime": "2023-02-01T00:00:00Z"}),
]  # fmt: skip


@pytest.fixture
def hand_built(emulator_factory: Callable[..., Emulator]) -> Emulator:
    return emulator_factory(tenant=FileTenant({"users": USERS}))


def _names(emu: Emulator, query: str, **headers: str) -> list[str]:
    return [u["displayName"] for u in all_values(graph(emu, **headers), f"/users?{query}")]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("displayName eq 'Conan O''Brien'", ["Conan O'Brien"]),
        ("displayName eq 'CONAN O''BRIEN'", ["Conan O'Brien"]),  # directory strings ignore case
        ("startswith(displayName,'conan')", ["Conan O'Brien", "conan obrien"]),
        ("accountEnabled eq false", ["Zoë Ærø"]),
        ("userType eq 'Guest' or department eq 'Sales'", ["Guest Person", "conan obrien", "Adele Vance"]),
        ("department eq 'Sales' and (startswith(displayName,'A') or userType eq 'Guest')", ["Adele Vance"]),
        ("userType in ('Guest','Nobody')", ["Guest Person"]),
        ("displayName eq 'Zoë Ærø'", ["Zoë Ærø"]),
        ("createdDateTime ge 2024-01-01T00:00:00Z", ["Zoë Ærø"]),
        ("createdDateTime lt 2024-01-01T00:00:00Z", ["Conan O'Brien", "Guest Person", "conan obrien", "Adele Vance"]),
        (f"assignedLicenses/any(x:x/skuId eq {E3})", ["Conan O'Brien", "Adele Vance"]),
        ("signInActivity/lastSignInDateTime ge 2024-01-01T00:00:00Z", ["Conan O'Brien"]),
        # Year 1 ("never") sorts before everything; "" and a null signInActivity match nothing.
        ("signInActivity/lastSignInDateTime le 2023-06-01T00:00:00Z", ["Zoë Ærø", "Adele Vance"]),
        ("signInActivity/lastSignInDateTime gt 2024-05-01T10:00:00Z", []),
    ],
)  # fmt: skip
def test_filter_expressions(hand_built: Emulator, expression: str, expected: list[str]) -> None:
    assert _names(hand_built, f"$filter={expression}") == expected


@pytest.mark.parametrize(
    "expression",
    [
        "assignedLicenses/$count ne 0",
        "department ne 'Sales'",
        "not(userType eq 'Guest')",
        "endswith(userPrincipalName,'@contoso.com')",
    ],
)
def test_advanced_queries_need_consistency_level_and_count(
    hand_built: Emulator, expression: str
) -> None:
    plain = graph(hand_built).get(f"/users?$filter={expression}&$count=true")
    assert plain.status_code == 400
    assert plain.json()["error"]["code"] == "Request_UnsupportedQuery"
    header_only = graph(hand_built, ConsistencyLevel="eventual").get(f"/users?$filter={expression}")
    assert header_only.status_code == 400
    advanced = graph(hand_built, ConsistencyLevel="eventual").get(
        f"/users?$filter={expression}&$count=true"
    )
    assert advanced.status_code == 200


def test_count_ne_zero_lists_licensed_users_with_count_on_first_page_only(
    hand_built: Emulator,
) -> None:
    client = graph(hand_built, ConsistencyLevel="eventual")
    bodies = list(
        pages(
            client,
            "/users?$filter=assignedLicenses/$count ne 0&$count=true&$top=2&$select=id,displayName",
        )
    )
    assert [u["displayName"] for b in bodies for u in b["value"]] == [
        "Conan O'Brien",
        "Guest Person",
        "Adele Vance",
    ]
    assert bodies[0]["@odata.count"] == 3
    assert "@odata.count" not in bodies[1]


def test_count_without_consistency_level_is_silently_ignored(hand_built: Emulator) -> None:
    body = graph(hand_built).get("/users?$count=true").json()
    assert "@odata.count" not in body
    assert len(body["value"]) == 5
    counted = graph(hand_built, ConsistencyLevel="eventual").get("/users?$count=true").json()
    assert counted["@odata.count"] == 5


def test_bad_filters_are_400(hand_built: Emulator) -> None:
    client = graph(hand_built)
    unknown = client.get("/users?$filter=shoeSize eq 42")
    assert unknown.status_code == 400
    assert "shoeSize" in unknown.json()["error"]["message"]
    assert client.get("/users?$filter=displayName eq").status_code == 400
    assert (
        client.get("/users?$orderby=displayName").json()["error"]["code"]
        == "Request_UnsupportedQuery"
    )


def test_filters_on_a_synthetic_tenant_match_python(
    emulator_factory: Callable[..., Emulator],
) -> None:
    emu = emulator_factory(users=300, devices=0, seed=11)
    tenant = emu.tenant
    cutoff = tenant.now.replace(microsecond=0) - __import__("datetime").timedelta(days=90)
    stamp = cutoff.strftime("%Y-%m-%dT%H:%M:%SZ")
    got = all_values(
        graph(emu),
        f"/users?$top=999&$select=id&$filter=signInActivity/lastSignInDateTime ge {stamp} and accountEnabled eq true",
    )

    def recent(user: dict[str, Any]) -> bool:
        when = parse_datetime((user.get("signInActivity") or {}).get("lastSignInDateTime"))
        return when is not None and when >= cutoff and user["accountEnabled"]

    expected = [u["id"] for u in tenant.users() if recent(u)]
    assert [u["id"] for u in got] == expected
    assert 50 < len(expected) < 300
    guests = all_values(graph(emu), "/users?$top=999&$select=id&$filter=userType eq 'Guest'")
    assert [u["id"] for u in guests] == [
        u["id"] for u in tenant.users() if u["userType"] == "Guest"
    ]


@pytest.mark.parametrize(
    ("expression", "low", "high"),
    [
        ("userPrincipalName ge 'm'", "m", None),
        ("userPrincipalName le 'm'", None, "m"),
        ("userPrincipalName ge 'f' and userPrincipalName le 'p'", "f", "p"),
        ("userPrincipalName le 'p' and userPrincipalName ge 'f'", "f", "p"),
    ],
)
def test_key_ranges_are_read_from_the_sorted_keys_with_the_answer_of_a_scan(
    emulator_factory: Callable[..., Emulator],
    monkeypatch: pytest.MonkeyPatch,
    expression: str,
    low: str | None,
    high: str | None,
) -> None:
    """A partition's range (one bound or two) is served from the tenant's sorted keys, never by
    scanning the whole collection a page at a time (at 1M users each open-ended partition did)."""
    emu = emulator_factory(users=400, devices=0, seed=3)
    expected = [
        u["id"]
        for u in emu.tenant.users()
        if (low is None or u["userPrincipalName"].casefold() >= low)
        and (high is None or u["userPrincipalName"].casefold() <= high)
    ]
    scans: list[str] = []
    real_scan = emu.tenant.scan

    def counted_scan(kind: str, *args: Any, **kwargs: Any) -> Any:
        scans.append(kind)
        return real_scan(kind, *args, **kwargs)

    monkeypatch.setattr(emu.tenant, "scan", counted_scan)
    emu.tenant.key_order("user", "userPrincipalName")  # built once, as the first range does
    scans.clear()
    got = all_values(graph(emu), f"/users?$top=50&$select=id&$filter={expression}")
    assert [u["id"] for u in got] == expected
    assert 100 < len(expected) < 400
    assert scans == []


def test_a_groups_members_in_a_key_range_are_read_from_the_sorted_keys(
    emulator_factory: Callable[..., Emulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large group's members by type and key range (how the pipeline partitions them) are the
    members in that range, in the members' order, counted on the first page, without scanning
    the group's members a page at a time; filtering members needs the advanced query headers."""
    emu = emulator_factory(users=400, devices=300, seed=3)
    everyone = next(g for g in emu.tenant.groups() if g["displayName"] == "All Employees")
    members = [
        m["id"]
        for m in emu.tenant.transitive_members(everyone["id"])
        if m["@odata.type"] == "#microsoft.graph.user"
    ]
    upn = {u["id"]: u["userPrincipalName"].casefold() for u in emu.tenant.users()}
    expected = [m for m in members if "f" <= upn[m] <= "p"]
    assert 50 < len(expected) < len(members)
    path = f"/groups/{everyone['id']}/transitiveMembers/microsoft.graph.user"
    query = "$top=40&$select=id&$filter=userPrincipalName ge 'f' and userPrincipalName le 'p'"
    refused = graph(emu).get(f"{path}?{query}")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "Request_UnsupportedQuery"

    scans: list[int] = []
    real_scan = emu.tenant.member_scan

    def counted_scan(group: int, **kwargs: Any) -> Any:
        scans.append(group)
        return real_scan(group, **kwargs)

    monkeypatch.setattr(emu.tenant, "member_scan", counted_scan)
    client = graph(emu, ConsistencyLevel="eventual")
    got = list(pages(client, f"{path}?{query}&$count=true"))
    assert [m["id"] for page in got for m in page["value"]] == expected
    assert got[0]["@odata.count"] == len(expected)
    assert "@odata.count" not in got[1]
    assert scans == []


def test_a_cast_to_groups_on_a_microsoft_365_group_is_refused(
    emulator_factory: Callable[..., Emulator],
) -> None:
    emu = emulator_factory(users=60, devices=0, seed=3)
    team = next(g for g in emu.tenant.groups() if "Unified" in g["groupTypes"])
    answer = graph(emu, ConsistencyLevel="eventual").get(
        f"/groups/{team['id']}/transitiveMembers/microsoft.graph.group?$count=true"
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "Request_UnsupportedQuery"
    users = graph(emu, ConsistencyLevel="eventual").get(
        f"/groups/{team['id']}/transitiveMembers/microsoft.graph.user?$count=true&$select=id"
    )
    assert users.status_code == 200
    assert users.json()["@odata.count"] == len(emu.tenant.transitive_members(team["id"]))
