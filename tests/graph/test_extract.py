"""Extraction into DuckDB against the emulator: exact rows per raw table, soft and hard failures.

Also group resolution (id, name, a name with an apostrophe, unknown, ambiguous) on a hand-built
tenant, and the loader's typing and de-duplication on files written by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from entra_pipeline.connector.raw_layer import LANDED
from entra_pipeline.connector.units import read_in_full
from entra_pipeline.emulator import Emulator, FileTenant
from entra_pipeline.emulator.handlers import ALL_PERMISSIONS
from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.collections import GROUP_MEMBERS, USERS
from entra_pipeline.graph.errors import (
    GraphPermissionError,
    GraphPremiumRequiredError,
    GroupNotFoundError,
)
from entra_pipeline.graph.extract import CollectionReport
from entra_pipeline.graph.group_members import extract_group_members, member_rows
from entra_pipeline.graph.groups import odata_string, resolve_groups
from entra_pipeline.warehouse.loading import PROVENANCE_COLUMNS, load_landed_table
from tests.graph.graph_fixtures import graph_requests

ClientFactory = Callable[..., GraphClient]
LANDED_BY_TABLE = {landed.table: landed for landed in LANDED}


def load_raw_table(
    con: duckdb.DuckDBPyConnection, table: str, files: Any, tenant_id: str, at: datetime
) -> int:
    """raw.<table> from extracted files, as the connector's raw layer loads it."""
    return load_landed_table(con, LANDED_BY_TABLE[table], files, tenant_id, at)


EXTRACTED_AT = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)

ANN = "a0000000-0000-4000-8000-000000000001"
BOB = "a0000000-0000-4000-8000-000000000002"
LAPTOP = "d0000000-0000-4000-8000-000000000001"
OBRIEN = "90000000-0000-4000-8000-000000000001"
NESTED = "90000000-0000-4000-8000-000000000002"
GUID_NAMED = "90000000-0000-4000-8000-000000000005"
GUID_NAME = "12345678-1234-4234-8234-123456789abc"  # a display name that looks like an id


def hand_built_tenant() -> FileTenant:
    return FileTenant(
        {
            "tenant_id": "f0000000-0000-4000-8000-00000000000f",
            "domain": "fabrikam.onmicrosoft.com",
            "users": [
                {"id": ANN, "userPrincipalName": "ann@fabrikam.com", "displayName": "Ann"},
                {
                    "id": BOB,
                    "userPrincipalName": "bob@fabrikam.com",
                    "displayName": "Bob",
                    "manager": ANN,
                },
            ],
            "devices": [
                {"id": LAPTOP, "displayName": "LAPTOP-1", "registeredOwners": [BOB]},
            ],
            "groups": [
                {"id": OBRIEN, "displayName": "O'Brien team", "members": [ANN, NESTED]},
                {"id": NESTED, "displayName": "Nested", "members": [BOB, LAPTOP]},
                {"id": "90000000-0000-4000-8000-000000000003", "displayName": "Twins"},
                {"id": "90000000-0000-4000-8000-000000000004", "displayName": "Twins"},
                {"id": GUID_NAMED, "displayName": GUID_NAME},
            ],
        }
    )


def run_extraction(
    graph: GraphClient, workdir: Path, *, sign_in_activity: bool = True, group_ids: Any = ()
) -> dict[str, CollectionReport]:
    return read_in_full(graph, workdir, group_ids=group_ids, import_sign_in=sign_in_activity)


def load_all(
    db: Path, reports: dict[str, CollectionReport], tenant_id: str
) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(db))
    con.begin()
    for table, report in reports.items():
        assert load_raw_table(con, table, report.files, tenant_id, EXTRACTED_AT) == report.rows
    con.commit()
    return con


def one(con: duckdb.DuckDBPyConnection, sql: str, *params: object) -> Any:
    [(value,)] = con.execute(sql, list(params)).fetchall()
    return value


def test_reading_in_full_lands_every_collection_with_exact_rows(
    emulator: Emulator, graph: GraphClient, tmp_path: Path
) -> None:
    tenant = emulator.tenant
    groups = [g["id"] for g in tenant.groups()][:3]
    reports = run_extraction(graph, tmp_path / "work", group_ids=groups)
    members = [(g, m["id"]) for g in groups for m in tenant.transitive_members(g)]
    assert {t: (r.status, r.rows) for t, r in reports.items()} == {
        "users": ("ok", 60),
        "devices": ("ok", 40),
        "groups": ("ok", tenant.group_count),
        "subscribed_skus": ("ok", len(tenant.subscribed_skus())),
        "sign_in_activity": ("ok", 60),
        GROUP_MEMBERS.table: ("ok", len(members)),
    }
    # $expand caps user and device pages at 100; 60 users fit one page. The other request is
    # the partition plan's $count, which finds them too few to split.
    assert (reports["users"].pages, reports["users"].requests, reports["users"].retries) == (
        1,
        2,
        0,
    )

    con = load_all(tmp_path / "entra.duckdb", reports, emulator.tenant_id)
    for table in reports:
        assert one(con, f"SELECT count(DISTINCT tenant_id) FROM raw.{table}") == 1
        assert one(con, f"SELECT min(extracted_at) FROM raw.{table}") == EXTRACTED_AT
    assert sorted(con.execute("SELECT id FROM raw.users").fetchall()) == sorted(
        (u["id"],) for u in tenant.users()
    )

    bob = next(u for u in tenant.users() if tenant.manager_of(u["id"]) is not None)
    manager = tenant.manager_of(bob["id"])
    assert manager is not None
    row = con.execute(
        "SELECT userPrincipalName, displayName, businessPhones, assignedLicenses, "
        "manager->>'userPrincipalName' FROM raw.users WHERE id = ?",
        [bob["id"]],
    ).fetchall()
    assert row == [
        (
            bob["userPrincipalName"],
            bob["displayName"],
            bob["businessPhones"],
            json.dumps(bob["assignedLicenses"], separators=(",", ":")),
            manager["userPrincipalName"],
        )
    ]
    device = next(d for d in tenant.devices() if tenant.registered_owners(d["id"]))
    owners = one(con, "SELECT registeredOwners FROM raw.devices WHERE id = ?", device["id"])
    assert [o["userPrincipalName"] for o in json.loads(owners)] == [
        o["userPrincipalName"] for o in tenant.registered_owners(device["id"])
    ]
    sign_in = one(con, "SELECT signInActivity FROM raw.sign_in_activity WHERE id = ?", bob["id"])
    assert json.loads(sign_in) == bob["signInActivity"]
    sku = tenant.subscribed_skus()[0]
    assert con.execute(
        "SELECT skuPartNumber, consumedUnits FROM raw.subscribed_skus WHERE skuId = ?",
        [sku["skuId"]],
    ).fetchall() == [(sku["skuPartNumber"], sku["consumedUnits"])]
    assert sorted(con.execute("SELECT group_id, member_id FROM raw.group_members").fetchall()) == (
        sorted(members)
    )


def test_sign_in_activity_unavailable_on_a_non_premium_tenant(
    emulator: Emulator, graph: GraphClient, tmp_path: Path
) -> None:
    emulator.premium = False
    reports = run_extraction(graph, tmp_path)
    sign_in = reports["sign_in_activity"]
    assert sign_in.status == "unavailable"
    assert isinstance(sign_in.error, GraphPremiumRequiredError)
    assert sign_in.reason == str(sign_in.error)
    assert (sign_in.files, sign_in.rows) == ((), 0)
    assert {t: r.status for t, r in reports.items() if t != "sign_in_activity"} == dict.fromkeys(
        ("users", "devices", "groups", "subscribed_skus"), "ok"
    )
    con = load_all(tmp_path / "entra.duckdb", reports, emulator.tenant_id)
    # The table still exists, empty, with its typed columns: staging joins it as usual.
    assert one(con, "SELECT count(*) FROM raw.sign_in_activity") == 0
    assert con.execute("DESCRIBE raw.sign_in_activity").fetchall()[-1][:2] == (
        "signInActivity",
        "JSON",
    )


def test_sign_in_activity_unavailable_without_audit_log_permission(
    emulator: Emulator, graph: GraphClient, tmp_path: Path
) -> None:
    emulator.permissions = set(ALL_PERMISSIONS) - {"AuditLog.Read.All"}
    reports = run_extraction(graph, tmp_path)
    sign_in = reports["sign_in_activity"]
    assert sign_in.status == "unavailable"
    assert isinstance(sign_in.error, GraphPermissionError)
    assert sign_in.error.permission == "AuditLog.Read.All"
    assert reports["users"].rows == 60


def test_sign_in_activity_skipped_when_not_asked(
    emulator: Emulator, graph: GraphClient, tmp_path: Path
) -> None:
    reports = run_extraction(graph, tmp_path, sign_in_activity=False)
    assert list(reports) == ["users", "devices", "groups", "subscribed_skus"]
    assert not any("signInActivity" in r.query.get("$select", "") for r in emulator.requests)


def test_missing_device_permission_fails_the_extraction(
    emulator: Emulator, graph: GraphClient, tmp_path: Path
) -> None:
    emulator.permissions = set(ALL_PERMISSIONS) - {
        "Device.Read.All",
        "Device.ReadWrite.All",
        "Directory.Read.All",
        "Directory.ReadWrite.All",
    }
    with pytest.raises(GraphPermissionError) as raised:
        run_extraction(graph, tmp_path)
    assert raised.value.permission == "Device.Read.All"
    assert str(raised.value).startswith(
        "Graph denied GET /v1.0/devices: the app registration lacks the application permission "
        "Device.Read.All; grant it with admin consent (request-id "
    )


def test_expired_page_token_mid_extraction_keeps_each_user_once(
    emulator_factory: Callable[..., Emulator], client_factory: ClientFactory, tmp_path: Path
) -> None:
    emu = emulator_factory(users=250, devices=3, seed=11)
    emu.faults.expire_page_token_next("/users", count=1)
    graph = client_factory(emu)
    reports = run_extraction(graph, tmp_path, sign_in_activity=False)
    users = reports["users"]
    # Page 1, then its next link expired; the restart read all three pages again.
    assert (users.rows, users.restarts, users.pages) == (250, 1, 1 + 3)
    # The file was cut back at the restart: no duplicate ever reached it.
    lines = users.files[0].read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(
        u["id"] for u in emu.tenant.users()
    )
    con = load_all(tmp_path / "entra.duckdb", reports, emu.tenant_id)
    assert one(con, "SELECT count(DISTINCT id) FROM raw.users") == 250


def test_transitive_members_typed_by_odata_type(
    emulator_factory: Callable[..., Emulator], client_factory: ClientFactory, tmp_path: Path
) -> None:
    emu = emulator_factory(tenant=hand_built_tenant())
    extracted = extract_group_members(client_factory(emu), [OBRIEN, NESTED], tmp_path)
    con = duckdb.connect()
    load_raw_table(con, GROUP_MEMBERS.table, extracted.files, emu.tenant_id, EXTRACTED_AT)
    rows = con.execute(
        "SELECT group_id, member_id, member_type FROM raw.group_members ORDER BY ALL"
    ).fetchall()
    assert rows == sorted(
        [
            (OBRIEN, ANN, "user"),
            (OBRIEN, NESTED, "group"),
            (OBRIEN, BOB, "user"),
            (OBRIEN, LAPTOP, "device"),
            (NESTED, BOB, "user"),
            (NESTED, LAPTOP, "device"),
        ]
    )


def test_groups_resolved_by_id_and_by_exact_name(
    emulator_factory: Callable[..., Emulator], client_factory: ClientFactory
) -> None:
    emu = emulator_factory(tenant=hand_built_tenant())
    graph = client_factory(emu)
    assert resolve_groups(graph, [NESTED, "O'Brien team", GUID_NAME]) == {
        NESTED: NESTED,
        "O'Brien team": OBRIEN,
        GUID_NAME: GUID_NAMED,
    }
    filters = [r.query["$filter"] for r in graph_requests(emu) if "$filter" in r.query]
    assert filters == [
        "displayName eq 'O''Brien team'",
        f"displayName eq '{GUID_NAME}'",
    ]


def test_unknown_and_ambiguous_groups_are_named(
    emulator_factory: Callable[..., Emulator], client_factory: ClientFactory
) -> None:
    emu = emulator_factory(tenant=hand_built_tenant())
    graph = client_factory(emu)
    missing_id = "90000000-0000-4000-8000-0000000000ff"
    with pytest.raises(GroupNotFoundError) as raised:
        resolve_groups(graph, ["O'Brien team", "Ghosts", missing_id, "Twins"])
    assert str(raised.value) == (
        "Groups in devices.groups / users.groups could not be resolved: no group has the object "
        f"id or exact display name 'Ghosts', '{missing_id}'; 2 groups are named 'Twins' "
        "(90000000-0000-4000-8000-000000000003, 90000000-0000-4000-8000-000000000004). Use the "
        "group's object id, or its display name exactly as Entra shows it."
    )
    assert raised.value.missing == ["Ghosts", missing_id, "Twins"]
    assert raised.value.notification_code == "group_not_found"


def test_odata_string_doubles_quotes() -> None:
    assert odata_string("O'Brien's team") == "'O''Brien''s team'"


def test_member_type_comes_from_odata_type() -> None:
    members = [
        {"@odata.type": "#microsoft.graph.user", "id": "u"},
        {"@odata.type": "#microsoft.graph.device", "id": "d"},
        {"@odata.type": "#microsoft.graph.servicePrincipal", "id": "s"},
    ]
    assert [r["member_type"] for r in member_rows("g", members)] == [
        "user",
        "device",
        "servicePrincipal",
    ]


def test_member_type_of_a_cast_row_without_odata_type_is_the_cast() -> None:
    # A cast (/transitiveMembers/microsoft.graph.device) lists one type: Graph may leave
    # @odata.type out of its rows, as its documented cast examples do.
    members = [{"id": "d1"}, {"@odata.type": "#microsoft.graph.device", "id": "d2"}]
    assert [(r["member_id"], r["member_type"]) for r in member_rows("g", members, "device")] == [
        ("d1", "device"),
        ("d2", "device"),
    ]
    assert next(member_rows("g", [{"id": "x"}]))["member_type"] is None


def test_loader_types_every_column_and_keeps_each_id_once(tmp_path: Path) -> None:
    # Two rows for one id (a listing that changed under us) and properties no row carries.
    rows = [
        {"id": "u1", "displayName": "Ann", "businessPhones": ["+1 555"], "manager": None},
        {"id": "u2", "accountEnabled": False, "@odata.type": "#microsoft.graph.user"},
        {"id": "u1", "displayName": "Ann, listed again"},
    ]
    path = tmp_path / "users.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    con = duckdb.connect()
    assert load_raw_table(con, "users", [path], "t1", EXTRACTED_AT) == 2
    types = {name: kind for name, kind, *_ in con.execute("DESCRIBE raw.users").fetchall()}
    expected = {**PROVENANCE_COLUMNS, **USERS.columns}
    assert list(types) == list(expected)
    assert types == {**expected, "extracted_at": "TIMESTAMP WITH TIME ZONE"}
    assert con.execute(
        "SELECT id, displayName, accountEnabled, city, manager FROM raw.users ORDER BY id"
    ).fetchall() == [("u1", "Ann", None, None, None), ("u2", None, False, None, None)]


def test_loader_keeps_each_group_member_once_across_files(tmp_path: Path) -> None:
    # A member at the edge of two ranges of a large group is listed in both ranges' files.
    first, second = tmp_path / "range-0000.ndjson", tmp_path / "range-0001.ndjson"
    first.write_text(
        '{"group_id":"g1","member_id":"m1","member_type":"user"}\n'
        '{"group_id":"g1","member_id":"m2","member_type":"user"}\n'
        '{"group_id":"g2","member_id":"m2","member_type":"user"}\n',
        encoding="utf-8",
    )
    second.write_text(
        '{"group_id":"g1","member_id":"m2","member_type":null}\n'
        '{"group_id":"g1","member_id":"m3","member_type":"device"}\n',
        encoding="utf-8",
    )
    con = duckdb.connect()
    assert load_raw_table(con, "group_members", [first, second], "t1", EXTRACTED_AT) == 4
    assert con.execute(
        "SELECT group_id, member_id, member_type FROM raw.group_members ORDER BY ALL"
    ).fetchall() == [
        ("g1", "m1", "user"),
        ("g1", "m2", "user"),
        ("g1", "m3", "device"),
        ("g2", "m2", "user"),
    ]
