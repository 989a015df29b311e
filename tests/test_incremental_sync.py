"""Incremental sync (docs/incremental.md) end to end: delta rounds against the emulator, and the
guarantee that after every incremental run the published tables equal what a full sync of the same
tenant state publishes, row for row.

The tenant changes between runs the way directories do (users added, disabled, deleted, renamed,
licences and managers changed, devices re-joined and gone stale, members added and removed,
nested groups moved, sign-ins); Graph replays a round, expires a page token in the middle of one
and refuses a delta link (410). A second connector on its own file, `sync.mode: full`, reads the
same emulator after each incremental run: its tables are the reference.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
import yaml

from entra_pipeline.config_file import load_settings
from entra_pipeline.definitions import build_definitions
from entra_pipeline.emulator import Emulator, EmulatorConfig, running_emulator
from entra_pipeline.emulator.handlers import ALL_PERMISSIONS, READ_DEVICES
from entra_pipeline.emulator.tenant import Tenant
from entra_pipeline.incremental import FULL_SYNC_TAG
from entra_pipeline.names import CONNECTOR_JOB, USER_SOURCE_JOB
from entra_pipeline.resources import ConnectorResource

MAPPING = Path(__file__).resolve().parents[1] / "mappings" / "entra_id.csv"
OPTIONS = {
    # A flat filter group (members@delta applied as it is) and nested ones (listed again).
    "users": {"groups": ["Dept - Sales", "All Employees"], "stale_threshold_days": 30},
    "devices": {"groups": ["All Managed Devices", "Devices - BYOD"], "stale_threshold_days": 90},
    "user_source": {"enabled": False},
}
# Run-specific values: when the row was extracted, not what it says.
RUN_COLUMNS = {"extracted_at", "synced_at", "connector"}
COMPARED_SCHEMAS = ("raw", "staging", "neurons")
NOT_COMPARED = {"raw.extraction_status", "raw.group_filters"}  # one row per run, by design


@dataclass
class Connector:
    emulator: Emulator
    config: Path
    db: Path

    def run(
        self, *, full: bool = False, job_name: str = CONNECTOR_JOB
    ) -> dg.ExecuteInProcessResult:
        settings = load_settings(self.config)
        connector = ConnectorResource(
            config_path=str(self.config), max_retries=4, backoff_base_seconds=0.01
        )
        job = build_definitions(settings, str(self.config), connector).resolve_job_def(job_name)
        return job.execute_in_process(
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
            tags={FULL_SYNC_TAG: "true"} if full else None,
        )

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            return con.execute(sql, params or []).fetchall()

    def last_requests(self) -> int:
        [(requests,)] = self.query(
            "SELECT graph_requests FROM ops.sync_runs ORDER BY started_at DESC LIMIT 1"
        )
        return int(requests)

    def notifications(self) -> list[tuple[str, str, str]]:
        return self.query(
            "SELECT severity, code, message FROM ops.notifications WHERE run_id = (SELECT run_id "
            "FROM ops.sync_runs ORDER BY started_at DESC LIMIT 1) ORDER BY code, message"
        )


def _config(path: Path, emu: Emulator, db: Path, **extra: Any) -> Path:
    document = {
        "connector_name": path.stem,
        **emu.connection_settings("TEST_ENTRA_SECRET"),
        "duckdb_path": str(db),
        "mapping_path": str(MAPPING),
        **OPTIONS,
        **extra,
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture
def pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Connector, Connector]]:
    """(incremental, full) connectors on one emulator, each publishing to its own file."""
    with running_emulator(EmulatorConfig(users=150, devices=120, seed=11)) as emu:
        monkeypatch.setenv("TEST_ENTRA_SECRET", emu.client_secret)
        incremental = Connector(
            emu,
            _config(tmp_path / "incremental.yaml", emu, tmp_path / "inc.duckdb"),
            tmp_path / "inc.duckdb",
        )
        full = Connector(
            emu,
            _config(tmp_path / "full.yaml", emu, tmp_path / "full.duckdb", sync={"mode": "full"}),
            tmp_path / "full.duckdb",
        )
        yield incremental, full


def published(
    db: Path, schemas: tuple[str, ...] = COMPARED_SCHEMAS
) -> dict[str, list[tuple[Any, ...]]]:
    """Every compared table's rows (run-specific columns left out), sorted, JSON normalised."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with duckdb.connect(str(db), read_only=True) as con:
        tables = con.execute(
            "SELECT schema_name || '.' || table_name FROM duckdb_tables() WHERE schema_name IN "
            f"({', '.join(repr(s) for s in schemas)}) ORDER BY 1"
        ).fetchall()
        for (table,) in tables:
            if table in NOT_COMPARED:
                continue
            columns = [
                name
                for name, *_ in con.execute(f"DESCRIBE {table}").fetchall()
                if name not in RUN_COLUMNS
            ]
            listed = ", ".join(f'"{c}"' for c in columns)
            rows = con.execute(f"SELECT {listed} FROM {table}").fetchall()
            out[table] = sorted((tuple(_normal(v) for v in row) for row in rows), key=repr)
    return out


def _normal(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.dumps(json.loads(value), sort_keys=True)
        except ValueError:
            return value
    return value


def assert_same_as_full(
    incremental: Connector,
    full: Connector,
    *,
    job_name: str = CONNECTOR_JOB,
    schemas: tuple[str, ...] = COMPARED_SCHEMAS,
) -> None:
    assert full.run(job_name=job_name).success
    mine, reference = published(incremental.db, schemas), published(full.db, schemas)
    assert set(mine) == set(reference)
    for table in reference:
        missing = [r for r in reference[table] if r not in mine[table]]
        extra = [r for r in mine[table] if r not in reference[table]]
        assert (missing, extra) == ([], []), table


def _ago(tenant: Tenant, days: int) -> str:
    return (tenant.now - dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _group(tenant: Tenant, name: str) -> str:
    [group] = [g for g in tenant.groups() if g["displayName"] == name]
    return str(group["id"])


def _new_user(tenant: Tenant, n: int, sku: str) -> dict[str, Any]:
    return tenant.add(
        "user",
        {
            "userPrincipalName": f"new.hire{n}@{tenant.domain}",
            "displayName": f"New Hire {n}",
            "givenName": "New",
            "surname": f"Hire {n}",
            "mail": f"new.hire{n}@{tenant.domain}",
            "accountEnabled": True,
            "userType": "Member",
            "assignedLicenses": [{"skuId": sku, "disabledPlans": []}],
            "businessPhones": [],
            "createdDateTime": _ago(tenant, 0),
        },
    )


def first_changes(tenant: Tenant) -> dict[str, str]:
    """A night's worth of directory changes; returns the ids the assertions name."""
    sku = tenant.subscribed_skus()[0]["skuId"]
    users = list(tenant.users())
    managers = {m["id"] for u in users if (m := tenant.manager_of(u["id"])) is not None}
    owners = {o["id"] for d in tenant.devices() for o in tenant.registered_owners(d["id"])}
    licensed = [u for u in users if u.get("assignedLicenses") and u["id"] not in managers]
    # A manager who owns a device, deleted: their reports lose the manager, the device its owner.
    gone = next(u for u in users if u["id"] in managers and u["id"] in owners)
    renamed = next(u for u in users if u["id"] in managers and u["id"] != gone["id"])
    disabled, relicensed, unlicensed, promoted = licensed[:4]
    sales = _group(tenant, "Dept - Sales")
    hire = _new_user(tenant, 1, sku)
    _new_user(tenant, 2, sku)
    tenant.update(disabled["id"], accountEnabled=False)
    tenant.update(
        relicensed["id"],
        assignedLicenses=[
            {"skuId": s["skuId"], "disabledPlans": []} for s in tenant.subscribed_skus()[1:3]
        ],
    )
    tenant.update(unlicensed["id"], assignedLicenses=[])
    tenant.update(renamed["id"], userPrincipalName=f"renamed.manager@{tenant.domain}")
    tenant.remove(gone["id"])
    reports = [u for u in users if (m := tenant.manager_of(u["id"])) and m["id"] == renamed["id"]]
    tenant.set_manager(promoted["id"], renamed["id"])
    if reports:
        tenant.set_manager(reports[0]["id"], None)  # a manager taken away: manager@delta @removed
    tenant.set_manager(hire["id"], promoted["id"])
    # A stale user signs in again: the incremental sign-in pass picks them up.
    stale = next(
        u
        for u in users
        if u.get("assignedLicenses")
        and (u.get("signInActivity") or {}).get("lastSignInDateTime", "") < _ago(tenant, 60)
        and u["id"] not in {gone["id"], disabled["id"], unlicensed["id"]}
    )
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    tenant.update(
        stale["id"],
        signInActivity={
            **(stale.get("signInActivity") or {}),
            "lastSignInDateTime": now,
            "lastSuccessfulSignInDateTime": now,
        },
    )
    # Memberships: a flat filter group gains and loses users.
    members = [m["id"] for m in tenant.direct_members(sales)]
    tenant.add_member(sales, hire["id"])
    tenant.remove_member(sales, members[0])
    # Devices: one re-joined (a new object, the same name), one gone stale, one deleted for good.
    devices = list(tenant.devices())
    rejoined, stale_device, purged = devices[1], devices[2], devices[3]
    tenant.remove(rejoined["id"])
    tenant.add(
        "device",
        {
            **{k: v for k, v in rejoined.items() if k != "id"},
            "trustType": "AzureAd",
            "registrationDateTime": _ago(tenant, 0),
            "approximateLastSignInDateTime": _ago(tenant, 0),
        },
    )
    tenant.update(
        stale_device["id"],
        approximateLastSignInDateTime=_ago(tenant, 200),
        registrationDateTime=_ago(tenant, 400),
        onPremisesLastSyncDateTime=None,
    )
    tenant.remove(purged["id"], permanent=True)
    # A flat filter group of devices: members@delta applied as it is.
    byod = _group(tenant, "Devices - BYOD")
    in_byod = [m["id"] for m in tenant.direct_members(byod)]
    tenant.add_member(byod, next(d["id"] for d in devices[5:] if d["id"] not in in_byod))
    tenant.remove_member(byod, in_byod[-1])
    # A nested group moves: out of "All Managed Devices" and into "Dept - Sales".
    managed = _group(tenant, "All Managed Devices")
    moved = _group(tenant, "Devices - Hybrid Joined")
    tenant.remove_member(managed, moved)
    tenant.add_member(sales, _group(tenant, "Team - Platform"))
    tenant.update(_group(tenant, "Project Phoenix"), description="renamed project")
    return {"disabled": disabled["id"], "gone": gone["id"], "hire": hire["id"]}


def test_incremental_runs_publish_what_a_full_sync_publishes(
    pair: tuple[Connector, Connector],
) -> None:
    incremental, full = pair
    tenant = incremental.emulator.tenant
    assert incremental.run().success
    first_requests = incremental.last_requests()
    links = dict(incremental.query("SELECT collection, delta_link FROM ops.delta_state"))
    assert set(links) == {"users", "devices", "groups", "sign_in_activity"}
    assert links["sign_in_activity"] is None
    assert all("$deltatoken=" in links[c] for c in ("users", "devices", "groups"))

    # Night 1: the changes, read by delta.
    ids = first_changes(tenant)
    seen = len(incremental.emulator.requests)
    assert incremental.run().success
    paths = {r.path for r in incremental.emulator.requests[seen:]}
    assert {"/v1.0/users/delta", "/v1.0/devices/delta", "/v1.0/groups/delta"} <= paths
    assert "/v1.0/users" in paths  # the sign-in pass, filtered
    assert "/v1.0/devices" not in paths
    assert incremental.last_requests() < first_requests
    sign_ins = [
        r.query["$filter"]
        for r in incremental.emulator.requests[seen:]
        if r.path == "/v1.0/users" and "$filter" in r.query
    ]
    assert [f.split(" ge ")[0] for f in sign_ins] == [
        "signInActivity/lastSignInDateTime",
        "signInActivity/lastNonInteractiveSignInDateTime",
    ]
    assert incremental.query(
        "SELECT accountEnabled FROM raw.users WHERE id = ?", [ids["disabled"]]
    ) == [(False,)]
    assert incremental.query("SELECT count(*) FROM raw.users WHERE id = ?", [ids["gone"]]) == [(0,)]
    assert_same_as_full(incremental, full)

    # Night 2: Graph replays the users' earlier changes and expires a devices page token in the
    # middle of a two-page round (more than the 100 changes a delta page holds).
    for device in list(tenant.devices())[:110]:
        tenant.update(device["id"], isCompliant=not device.get("isCompliant"))
    tenant.update(ids["hire"], department="Sales")
    incremental.emulator.faults.replay_delta_next("/v1.0/users/delta")
    incremental.emulator.faults.expire_page_token_next("/v1.0/devices/delta")
    assert incremental.run().success
    assert not incremental.emulator.faults.pending
    assert_same_as_full(incremental, full)

    # Night 3: the groups' delta link is refused (410): groups and their members read in full.
    sales = _group(tenant, "Dept - Sales")
    tenant.remove_member(sales, ids["hire"])
    incremental.emulator.faults.expire_delta_token_next("/v1.0/groups/delta")
    assert incremental.run().success
    notes = incremental.notifications()
    assert [(s, c) for s, c, _ in notes] == [("info", "delta_resync")]
    assert notes[0][2].startswith(
        "groups: Graph refused the stored delta link (410 resyncRequired)"
    )
    assert_same_as_full(incremental, full)


USER_SOURCE = {
    "enabled": True,
    "name": "Contoso",
    "auto_invite": False,
    "custom_attributes": ["employeeId", "extensionAttribute1"],
}


@pytest.fixture
def user_source_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Connector, Connector]]:
    """(incremental, full) MDM user sources on one emulator, each publishing to its own file."""
    with running_emulator(EmulatorConfig(users=150, devices=120, seed=11)) as emu:
        monkeypatch.setenv("TEST_ENTRA_SECRET", emu.client_secret)
        incremental = Connector(
            emu,
            _config(tmp_path / "inc.yaml", emu, tmp_path / "inc.duckdb", user_source=USER_SOURCE),
            tmp_path / "inc.duckdb",
        )
        full = Connector(
            emu,
            _config(
                tmp_path / "full.yaml",
                emu,
                tmp_path / "full.duckdb",
                user_source=USER_SOURCE,
                sync={"mode": "full"},
            ),
            tmp_path / "full.duckdb",
        )
        yield incremental, full


def _device_member(tenant: Tenant) -> tuple[str, str]:
    """(group, device): a device that is a member of some group."""
    for group in tenant.groups():
        for member in tenant.direct_members(group["id"]):
            if member["@odata.type"] == "#microsoft.graph.device":
                return str(group["id"]), str(member["id"])
    raise AssertionError("no group has a device member")


def test_the_user_source_on_deltas_publishes_what_a_full_sync_publishes(
    user_source_pair: tuple[Connector, Connector],
) -> None:
    incremental, full = user_source_pair
    emulator = incremental.emulator
    tenant = emulator.tenant

    def night() -> set[str]:
        seen = len(emulator.requests)
        assert incremental.run(job_name=USER_SOURCE_JOB).success
        paths = {r.path for r in emulator.requests[seen:]}
        assert_same_as_full(incremental, full, job_name=USER_SOURCE_JOB, schemas=("mdm",))
        return paths

    assert incremental.run(job_name=USER_SOURCE_JOB).success
    first_requests = incremental.last_requests()
    assert incremental.query("SELECT collection FROM ops.delta_state ORDER BY 1") == [
        ("mdm_extract.device_ids",),
        ("mdm_extract.directory_users",),
        ("mdm_extract.groups",),
    ]

    # Night 1: users added, disabled, deleted and renamed, devices re-joined and deleted, members
    # added and removed, a nested group moved: all by delta, the changed groups listed again.
    first_changes(tenant)
    paths = night()
    assert {"/v1.0/users/delta", "/v1.0/groups/delta", "/v1.0/devices/delta"} <= paths
    assert not {"/v1.0/users", "/v1.0/groups"} & paths
    assert incremental.last_requests() < first_requests
    # sync.mode full keeps nothing between runs.
    assert full.query("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'mdm_extract'") == [
        (0,)
    ]

    # Night 2: Graph replays the groups round; a member joins a group nested in another.
    platform = _group(tenant, "Team - Platform")
    outsider = next(
        u["id"]
        for u in tenant.users()
        if u["id"] not in {m["id"] for m in tenant.transitive_members(platform)}
    )
    tenant.add_member(platform, outsider)
    emulator.faults.replay_delta_next("/v1.0/groups/delta")
    night()
    assert not emulator.faults.pending

    # Night 3: the app may not read devices: a deleted device member is found by listing the
    # groups with device members again.
    group, device = _device_member(tenant)
    tenant.remove(device)
    emulator.permissions = set(ALL_PERMISSIONS - set(READ_DEVICES))
    try:
        paths = night()
    finally:
        emulator.permissions = None
    assert f"/v1.0/groups/{group}/transitiveMembers" in paths or "/v1.0/$batch" in paths
    assert incremental.query(
        "SELECT count(*) FROM mdm.group_members WHERE member_id = ?", [device]
    ) == [(0,)]

    # Night 4: the users' link is refused (410): users are listed in full, with a notification.
    tenant.update(next(iter(tenant.users()))["id"], department="Moved")
    emulator.faults.expire_delta_token_next("/v1.0/users/delta")
    paths = night()
    assert "/v1.0/users" in paths
    [(severity, message)] = [
        (s, m) for s, c, m in incremental.notifications() if c == "delta_resync"
    ]
    assert severity == "info"
    assert message.startswith("mdm_extract.directory_users: Graph refused the stored delta link")


def test_a_full_sync_on_demand_and_the_backstop_read_everything(
    pair: tuple[Connector, Connector],
) -> None:
    incremental, _ = pair
    assert incremental.run().success
    seen = len(incremental.emulator.requests)
    assert incremental.run(full=True).success
    paths = {r.path for r in incremental.emulator.requests[seen:]}
    assert {"/v1.0/users", "/v1.0/devices", "/v1.0/groups"} <= paths
    assert {(c, m.split(" because ")[1]) for _, c, m in incremental.notifications()} == {
        ("delta_resync", "a full sync was requested.")
    }
    # The backstop: a last full round older than sync.full_resync_days.
    with duckdb.connect(str(incremental.db)) as con:
        con.execute(
            "UPDATE ops.delta_state SET last_full_sync_at = last_full_sync_at - INTERVAL 8 DAY "
            "WHERE collection = 'devices'"
        )
    seen = len(incremental.emulator.requests)
    assert incremental.run().success
    paths = {r.path for r in incremental.emulator.requests[seen:]}
    assert "/v1.0/devices" in paths
    assert "/v1.0/users" in paths
    assert "/v1.0/users/delta" in paths
    [(severity, code, message)] = incremental.notifications()
    assert (severity, code) == ("info", "delta_resync")
    assert message.startswith("devices: read in full because the last full round was 8 days ago")


def test_a_failed_incremental_run_keeps_the_published_tables_and_delta_state(
    pair: tuple[Connector, Connector],
) -> None:
    incremental, full = pair
    assert incremental.run().success
    before = published(incremental.db)
    state = incremental.query("SELECT * FROM ops.delta_state ORDER BY collection")
    first_changes(incremental.emulator.tenant)
    incremental.emulator.faults.hostile_next("no_value", "/v1.0/devices/delta")
    assert not incremental.run().success
    assert published(incremental.db) == before
    assert incremental.query("SELECT * FROM ops.delta_state ORDER BY collection") == state
    # The next run reads the same changes again from the links kept.
    assert incremental.run().success
    assert_same_as_full(incremental, full)


def test_delta_links_never_reach_the_run_log(pair: tuple[Connector, Connector]) -> None:
    incremental, _ = pair
    assert incremental.run().success
    links = [
        link for (link,) in incremental.query("SELECT delta_link FROM ops.delta_state") if link
    ]
    tokens = [link.split("$deltatoken=")[1] for link in links]
    incremental.emulator.faults.unavailable_next("/v1.0/users/delta", count=1)
    settings = load_settings(incremental.config)
    connector = ConnectorResource(
        config_path=str(incremental.config), max_retries=4, backoff_base_seconds=0.01
    )
    job = build_definitions(settings, str(incremental.config), connector).resolve_job_def(
        CONNECTOR_JOB
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance)
        logged = "\n".join(str(e.user_message) for e in instance.all_logs(result.run_id))
    assert result.success
    assert "users/delta" in logged  # the retried 503 is logged...
    assert not any(token in logged for token in tokens)  # ...without the link's token


def _docs_questions() -> dict[str, str]:
    """The example queries of docs/incremental.md ("History: what changed"), as written there,
    by their `-- question` line."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "incremental.md").read_text()
    block = text.split("## History: what changed", 1)[1].split("```sql\n", 1)[1].split("```")[0]
    questions = {}
    for query in filter(str.strip, block.split(";\n")):
        question, sql = query.strip().split("\n", 1)
        questions[question.removeprefix("-- ")] = sql
    return questions


def test_history_changes_answers_the_documented_questions(
    pair: tuple[Connector, Connector],
) -> None:
    incremental, _ = pair
    tenant = incremental.emulator.tenant
    questions = _docs_questions()
    assert len(questions) == 3
    users = [u for u in tenant.users() if u.get("assignedLicenses") and u.get("accountEnabled")]
    disabled, relicensed = users[0], users[1]
    skus = {s["skuId"]: s["skuPartNumber"] for s in tenant.subscribed_skus()}
    had = {skus[lic["skuId"]] for lic in relicensed["assignedLicenses"]}
    new_sku = next(s for s in skus if skus[s] not in had)
    fresh, ageing = [
        d
        for d in tenant.devices()
        if (d.get("approximateLastSignInDateTime") or "") > _ago(tenant, 30)
        and not d.get("onPremisesLastSyncDateTime")
    ][:2]
    # Last seen 91 days ago: stale now, and not yet two days ago.
    tenant.update(
        ageing["id"],
        approximateLastSignInDateTime=_ago(tenant, 91),
        registrationDateTime=_ago(tenant, 400),
    )
    assert incremental.run().success
    assert incremental.query("SELECT count(*) FROM history.changes") == [(0,)]  # the baseline
    # As if that publication were two days old: time alone carried `ageing` past 90 days since.
    with duckdb.connect(str(incremental.db)) as con:
        con.execute("UPDATE ops.sync_runs SET started_at = started_at - INTERVAL 2 DAY")
    tenant.update(disabled["id"], accountEnabled=False)
    tenant.update(relicensed["id"], assignedLicenses=[{"skuId": new_sku, "disabledPlans": []}])
    tenant.update(
        fresh["id"],
        approximateLastSignInDateTime=_ago(tenant, 120),
        registrationDateTime=_ago(tenant, 500),
    )
    hire = _new_user(tenant, 7, new_sku)
    assert incremental.run().success
    [(run_id,)] = incremental.query(
        "SELECT run_id FROM ops.sync_runs ORDER BY started_at DESC LIMIT 1"
    )
    [(changed_at,)] = incremental.query(
        "SELECT DISTINCT changed_at FROM history.changes WHERE run_id = ?", [run_id]
    )
    assert incremental.query(questions["Who was disabled this week?"]) == [
        (disabled["userPrincipalName"], "User.Enabled", changed_at)
    ]
    stale = questions["Which devices fell out of the stale window (time alone can carry them)?"]
    assert incremental.query(stale) == sorted(
        [(fresh["displayName"], changed_at), (ageing["displayName"], changed_at)]
    )
    # `ageing` changed in nothing else: its flip is time's alone.
    assert incremental.query(
        "SELECT attribute, old_value, new_value FROM history.changes WHERE object_id = ?",
        [ageing["id"]],
    ) == [("stale", "false", "true")]
    expected = sorted(
        [(relicensed["userPrincipalName"], "removed", name) for name in had]
        + [
            (relicensed["userPrincipalName"], "added", skus[new_sku]),
            (hire["userPrincipalName"], "added", skus[new_sku]),
        ]
    )
    assert incremental.query(questions["Whose licences changed?"]) == expected
    assert incremental.query(
        "SELECT DISTINCT target_attribute FROM history.changes WHERE entity = 'licence'"
    ) == [("User.Licenses",)]
    assert incremental.query(
        "SELECT run_id, change, attribute, new_value, object_name FROM history.changes "
        "WHERE entity = 'user' AND object_id = ?",
        [hire["id"]],
    ) == [
        (run_id, "added", "userPrincipalName", hire["userPrincipalName"], hire["userPrincipalName"])
    ]
    # Retention: rows older than history.retention_days go at the next publication.
    with duckdb.connect(str(incremental.db)) as con:
        con.execute("UPDATE history.changes SET changed_at = changed_at - INTERVAL 401 DAY")
    assert incremental.run().success
    assert incremental.query("SELECT count(*) FROM history.changes WHERE run_id = ?", [run_id]) == [
        (0,)
    ]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entra_pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"},
    )


def test_the_sync_command_runs_incrementally_and_full_on_demand(
    pair: tuple[Connector, Connector], tmp_path: Path
) -> None:
    incremental, _ = pair
    emulator = incremental.emulator
    first = _cli("sync", "--config", str(incremental.config))
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"entra_id_sync (incremental) published to {incremental.db}" in first.stdout
    seen = len(emulator.requests)
    again = _cli("sync", "--config", str(incremental.config))
    assert again.returncode == 0
    assert "/v1.0/devices" not in {r.path for r in emulator.requests[seen:]}
    seen = len(emulator.requests)
    full = _cli("sync", "--config", str(incremental.config), "--full")
    assert full.returncode == 0
    assert "entra_id_sync (full) published" in full.stdout
    assert "/v1.0/devices" in {r.path for r in emulator.requests[seen:]}
    bad = tmp_path / "bad.yaml"
    bad.write_text("tenant_id: nope\n")
    refused = _cli("sync", "--config", str(bad))
    assert refused.returncode == 2
    assert "Invalid config" in refused.stdout
