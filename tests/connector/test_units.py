"""The connector's sync units read and land each raw collection; a new collection is one unit.

Against the emulator over HTTPS: the units' read / land loop (the raw asset's skeleton) on a
real client and a real DuckDB file, with a collection the connector does not ship added as one
`Listing` — what docs/development.md, "Adding a collection", walks through.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb

from entra_pipeline.config_file import parse_settings
from entra_pipeline.connector.incremental import SyncPlan
from entra_pipeline.connector.units import (
    P1_NOTE,
    UNITS,
    CheckedCall,
    Listing,
    RawRun,
    asked_units,
)
from entra_pipeline.emulator import Emulator
from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.collections import Collection
from entra_pipeline.settings import ConnectorSettings
from entra_pipeline.sync.units import land_units, read_units
from tests.graph.graph_fixtures import client_for

EXTRACTED_AT = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
# A collection the connector does not read: every group's id and name, for a report of groups.
GROUP_NAMES = Collection(
    table="group_names",
    path="/groups",
    columns={"id": "VARCHAR", "displayName": "VARCHAR"},
    description="Every group's object id and display name.",
    docs={"id": "Object id of the group.", "displayName": "The group's display name."},
    permission="GroupMember.Read.All",
)


def _run(client: GraphClient, workdir: Path, asked: set[str], tenant_id: str) -> RawRun:
    return RawRun(
        client=client,
        workdir=workdir,
        warehouse=None,  # type: ignore[arg-type]  # only group members by delta read it
        tenant_id=tenant_id,
        extracted_at=EXTRACTED_AT,
        plan=SyncPlan(links=None),
        asked=asked,
        group_ids=[],
        import_sign_in=False,
        sign_in_per_minute=10,
    )


def test_a_new_collection_is_read_and_landed_by_one_listing_unit(
    emulator: Emulator, tmp_path: Path
) -> None:
    units = (*UNITS, Listing(GROUP_NAMES, "group names"))
    with client_for(emulator) as client:
        run = _run(client, tmp_path / "work", {"group_names", "users"}, emulator.tenant_id)
        reports = read_units(client, run, asked_units(run, units))
    assert list(reports) == ["users", "group_names"]  # the units asked for, nothing else
    assert reports["group_names"].status == "ok"
    assert reports["group_names"].requests == reports["group_names"].pages == 1
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("CREATE SCHEMA raw")
        rows = land_units(con, run, asked_units(run, units), reports)
        landed = con.execute(
            "SELECT id, displayName, tenant_id, extracted_at FROM raw.group_names ORDER BY id"
        ).fetchall()
    expected = sorted((g["id"], g["displayName"]) for g in emulator.tenant.groups())
    assert rows == {"users": len(list(emulator.tenant.users())), "group_names": len(expected)}
    assert [(i, name) for i, name, _, _ in landed] == expected
    assert {(t, at) for _, _, t, at in landed} == {(emulator.tenant_id, EXTRACTED_AT)}


def _settings(import_sign_in: bool) -> ConnectorSettings:
    return parse_settings(
        {
            "tenant_id": "contoso.onmicrosoft.com",
            "client_id": "00000000-0000-4000-8000-000000000001",
            "client_secret": "${SECRET}",
            "users": {"import_sign_in_activity": import_sign_in},
        },
        env={"SECRET": "not-a-real-secret-for-units"},
    )


def test_check_probes_come_from_the_units() -> None:
    units = (*UNITS, Listing(GROUP_NAMES, "names"))
    calls = [u.checked_call(_settings(import_sign_in=True)) for u in units]
    assert calls == [
        CheckedCall("users", "User.Read.All"),
        CheckedCall(
            "users.import_sign_in_activity",
            "AuditLog.Read.All + Entra ID P1",
            required=False,
            note=P1_NOTE,
        ),
        CheckedCall("devices", "Device.Read.All"),
        CheckedCall("groups (raw.groups)", "GroupMember.Read.All"),
        CheckedCall("licence names", "LicenseAssignment.Read.All"),
        None,  # group members: probed per configured group
        CheckedCall("names", "GroupMember.Read.All"),
    ]
    without_sign_in = [u.checked_call(_settings(import_sign_in=False)) for u in units]
    assert without_sign_in == [calls[0], None, *calls[2:]]
