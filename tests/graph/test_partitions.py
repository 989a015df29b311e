"""Partitioned listings: a large collection, or a large group's members, split into disjoint key
ranges paged concurrently lands exactly the rows one page chain lands, whatever its keys start
with, and the plan's counts prove that every object is in a partition."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from entra_pipeline.emulator import Emulator, EmulatorConfig, FileTenant, running_emulator
from entra_pipeline.graph import group_members
from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.collections import DEVICES, USERS
from entra_pipeline.graph.group_members import extract_group_members
from entra_pipeline.graph.listing import extract_collection, extract_partitioned
from entra_pipeline.graph.partitions import plan_partitions, range_filter, shortfall
from tests.graph.graph_fixtures import client_for

# Every kind of first character a UPN or a device name starts with: digits, _, ', -, #EXT#
# guests, upper and lower case, non-ASCII, and names that equal a cut point exactly.
STARTS = [
    "0",
    "7",
    "9z",
    "_svc",
    "'quote",
    "-dash",
    ".dot",
    "a",
    "A",
    "ab",
    "Zed",
    "zz",
    "z",
    "émile",
    "Ørsted",
    "ßeta",
    "日本",
    "#hash",
    "m",
    "mm",
    "m#",
    "m'",
    "y",
]


def _upn(start: str, number: int) -> str:
    if start == "#hash":
        return f"guest{number}_gmail.com#EXT#@contoso.onmicrosoft.com"
    return f"{start}.user{number}@contoso.com"


def hostile_tenant(size: int = 230, groups: tuple[dict, ...] = ()) -> dict:
    users, devices = [], []
    for number, start in enumerate(itertools.islice(itertools.cycle(STARTS), size)):
        user_id = str(uuid.UUID(int=number + 1))
        users.append(
            {
                "id": user_id,
                "userPrincipalName": _upn(start, number),
                "displayName": None if number % 7 == 0 else f"{start} {number}",
                "accountEnabled": True,
                "userType": "Guest" if start == "#hash" else "Member",
                "createdDateTime": "2024-01-15T08:30:00Z",
                **({"manager": str(uuid.UUID(int=number))} if number else {}),
            }
        )
        devices.append(
            {
                "id": str(uuid.UUID(int=10_000 + number)),
                "deviceId": str(uuid.UUID(int=20_000 + number)),
                # Some devices have no name at all: no range holds them.
                "displayName": None if number % 9 == 0 else f"{start}-{number}",
                "operatingSystem": "Windows",
                "trustType": "AzureAd",
                "accountEnabled": True,
                "registrationDateTime": "2024-02-01T10:00:00Z",
                "registeredOwners": [user_id],
            }
        )
    return {
        "tenant_id": "3c1f9a2e-5b7d-4e8f-9a0b-1c2d3e4f5a6b",
        "domain": "contoso.com",
        "users": users,
        "devices": devices,
        "groups": list(groups),
    }


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with running_emulator(EmulatorConfig(tenant=FileTenant(hostile_tenant()))) as emu:
        yield emu


@pytest.fixture
def client(emulator: Emulator) -> Iterator[GraphClient]:
    with client_for(emulator) as graph:
        yield graph


def _rows(files: tuple[Path, ...]) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for file in files:
        for line in file.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            assert rows.get(row["id"], row) == row  # a row listed twice is the same row
            rows[row["id"]] = row
    return rows


@pytest.mark.parametrize("collection", [USERS, DEVICES], ids=["users", "devices"])
def test_partitions_land_exactly_the_rows_of_one_chain(
    client: GraphClient, emulator: Emulator, tmp_path: Path, collection
) -> None:
    one_chain = extract_collection(client, collection, tmp_path / "chain")
    partitioned = extract_partitioned(client, collection, tmp_path / "parts", target=12, workers=4)
    assert len(partitioned.files) > 10
    assert _rows(partitioned.files) == _rows(one_chain.files)
    assert len(_rows(one_chain.files)) == 230


@pytest.mark.parametrize("collection", [USERS, DEVICES], ids=["users", "devices"])
def test_the_plans_counts_add_up_to_the_collection(client: GraphClient, collection) -> None:
    plan = plan_partitions(
        client,
        collection,
        collection.partition_key,
        target=12,
        nullable=collection.partition_nullable,
    )
    assert plan.total == 230
    # Every object is in a partition: the counts add up to at least the collection's. Neighbours
    # share only their boundary value, so a key equal to a cut point is counted twice (and
    # landed once).
    on_cuts = sum(
        1
        for p, q in itertools.combinations(plan.partitions, 2)
        if p.filter and q.filter and _shared_bound(p.filter, q.filter)
    )
    assert plan.total <= plan.covered <= plan.total + on_cuts
    assert shortfall(plan) == 0
    assert max(p.count for p in plan.partitions) <= 12 or len(plan.partitions) > 1
    unnamed = [p for p in plan.partitions if p.advanced]
    if collection is DEVICES:
        assert [p.filter for p in unnamed] == ["displayName eq null"]
        assert unnamed[0].count == 26  # numbers 0, 9, 18, ... 225
    else:
        assert unnamed == []


def _shared_bound(first: str, second: str) -> bool:
    """Whether one range's upper bound is the other's lower bound."""

    def bounds(text: str) -> tuple[str | None, str | None]:
        low = text.split(" ge ", 1)[1].split(" and ")[0] if " ge " in text else None
        high = text.split(" le ", 1)[1] if " le " in text else None
        return low, high

    (low1, high1), (low2, high2) = bounds(first), bounds(second)
    return (high1 is not None and high1 == low2) or (high2 is not None and high2 == low1)


def test_a_small_collection_is_one_chain(client: GraphClient) -> None:
    plan = plan_partitions(client, USERS, "userPrincipalName", target=1_000)
    assert [(p.filter, p.count) for p in plan.partitions] == [(None, 230)]
    assert plan.requests == 1


def test_range_filters_quote_and_leave_open_ends() -> None:
    assert range_filter("userPrincipalName", None, "m") == "userPrincipalName le 'm'"
    assert range_filter("displayName", "o'b", None) == "displayName ge 'o''b'"
    assert range_filter("displayName", "a", "b") == "displayName ge 'a' and displayName le 'b'"
    assert range_filter("displayName", None, None) is None


def test_a_filter_graph_refuses_falls_back_to_one_chain(
    client: GraphClient, caplog: pytest.LogCaptureFixture
) -> None:
    refused = replace(USERS, partition_key="noSuchProperty")
    plan = plan_partitions(client, refused, "noSuchProperty", target=12)
    assert [(p.filter, p.count) for p in plan.partitions] == [(None, 230)]
    assert "Graph refused the partition filters" in caplog.text


# Large groups: more members than one page of 999, so they are listed after the $batch of first
# pages, by member type and key range. "Everyone" holds every user (half of them through the
# nested "Inner"), every device and "Inner"; "Team" is a Microsoft 365 group (Graph refuses the
# cast to groups on it); "Three" fits a page.
MEMBERS_SIZE = 1_300
EVERYONE, INNER, TEAM, THREE = (str(uuid.UUID(int=90_000 + n)) for n in range(4))


def _user_id(number: int) -> str:
    return str(uuid.UUID(int=number + 1))


def _device_id(number: int) -> str:
    return str(uuid.UUID(int=10_000 + number))


def member_tenant() -> dict:
    return hostile_tenant(
        MEMBERS_SIZE,
        (
            {
                "id": EVERYONE,
                "displayName": "Everyone",
                "members": [_user_id(n) for n in range(0, MEMBERS_SIZE, 2)]
                + [_device_id(n) for n in range(MEMBERS_SIZE)]
                + [INNER],
            },
            {
                "id": INNER,
                "displayName": "Inner",
                "members": [_user_id(n) for n in range(1, MEMBERS_SIZE, 2)]
                + [_device_id(n) for n in range(100)],
            },
            {
                "id": TEAM,
                "displayName": "Team",
                "groupTypes": ["Unified"],
                "members": [_user_id(n) for n in range(1_100)],
            },
            {"id": THREE, "displayName": "Three", "members": [_user_id(n) for n in range(3)]},
        ),
    )


@pytest.fixture(scope="module")
def member_emulator() -> Iterator[Emulator]:
    with running_emulator(EmulatorConfig(tenant=FileTenant(member_tenant()))) as emu:
        yield emu


def _member_rows(files: tuple[Path, ...]) -> set[tuple[str, str, str]]:
    rows = set()
    for file in files:
        for line in file.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            rows.add((row["group_id"], row["member_id"], row["member_type"]))
    return rows


def _expected_members(emu: Emulator, groups: list[str]) -> set[tuple[str, str, str]]:
    return {
        (group, member["id"], member["@odata.type"].removeprefix("#microsoft.graph."))
        for group in groups
        for member in emu.tenant.transitive_members(group)
    }


def _range_requests(emu: Emulator) -> list[str]:
    return [
        r.path
        for r in emu.requests
        if "/transitiveMembers/microsoft.graph." in r.path and "$filter" in r.query
    ]


def test_large_groups_by_member_type_and_range_land_exactly_their_members(
    member_emulator: Emulator, tmp_path: Path
) -> None:
    groups = [EVERYONE, TEAM, THREE]
    expected = _expected_members(member_emulator, groups)
    assert len(expected) == 2 * MEMBERS_SIZE + 1 + 1_100 + 3
    with client_for(member_emulator) as client:
        one_chain = extract_group_members(client, groups, tmp_path / "chain", target=10**6)
        assert _range_requests(member_emulator) == []
        partitioned = extract_group_members(
            client, groups, tmp_path / "parts", target=150, workers=4
        )
    assert _member_rows(one_chain.files) == expected
    assert _member_rows(partitioned.files) == expected
    ranges = _range_requests(member_emulator)
    # Everyone: its users and devices in ranges of at most ~150 (devices without a name in one
    # of their own), its one group in one listing; Team: its users only (no group cast).
    assert len(partitioned.files) > 20
    assert {path.rsplit("/", 1)[1] for path in ranges} == {
        "microsoft.graph.user",
        "microsoft.graph.device",
    }
    assert any(f"/groups/{TEAM}/" in path for path in ranges)
    assert not any(f"/groups/{THREE}/" in path for path in ranges)


def test_a_large_group_with_a_member_type_it_cannot_cast_to_is_one_chain(
    member_emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When the types the pipeline casts to do not add up to the group's count (a contact or a
    service principal is a member), the group is listed whole, as one chain."""
    monkeypatch.setattr(group_members, "MEMBER_TYPES", {"user": USERS, "device": DEVICES})
    with client_for(member_emulator) as client:
        ranges = group_members.plan_group_members(client, EVERYONE, target=150)
        landed = extract_group_members(client, [EVERYONE], tmp_path, target=150)
    assert [(r.member_type, r.partition.filter, r.partition.count) for r in ranges] == [
        (None, None, 2 * MEMBERS_SIZE + 1)
    ]
    assert (
        f"group {EVERYONE} has {2 * MEMBERS_SIZE + 1} members but its users, devices and groups "
        f"count {2 * MEMBERS_SIZE}" in caplog.text
    )
    assert _member_rows(landed.files) == _expected_members(member_emulator, [EVERYONE])
