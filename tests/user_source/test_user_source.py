"""The `mdm_user_source_sync` job end to end: emulator over HTTPS, real MSAL and httpx, a DuckDB file.

Expected rows come from the emulator's tenant (synthetic or hand-built), never from the SQL under
test; every failure leaves the published mdm.* as they were.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from entra_pipeline.config_file import load_settings
from entra_pipeline.definitions import build_definitions
from entra_pipeline.emulator import EmulatorConfig, FileTenant, running_emulator
from entra_pipeline.names import USER_SOURCE_JOB as MDM_JOB
from entra_pipeline.user_source.attributes import ATTRIBUTES_CHECK
from entra_pipeline.user_source.directory import MDM_USERS_CHECK
from entra_pipeline.user_source.ledger import ledger_path
from tests.user_source.mdm_fixtures import (
    ALICE,
    ALL_STAFF,
    BOB,
    CAROL,
    COST_CENTER,
    DAVE,
    ERIN,
    KIOSK_DEVICE,
    KIOSKS,
    SALES,
    SECRET_VARIABLE,
    UserSource,
    contoso,
)

ATTRIBUTES = ["employeeId", "extensionAttribute3", COST_CENTER, "faxNumber"]
TEMPLATES = {
    "greeting": "Hi ${userFirstName} ${userLastName} <${userEmail}> (${userUPN}, ${userDisplayName})",
    "badge": "${employeeId}/${extensionAttribute3}/${" + COST_CENTER + "}",
}


@dataclass
class Synced:
    source: UserSource
    result: dg.ExecuteInProcessResult


@pytest.fixture(scope="module")
def contoso_sync(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synced]:
    """One run over the Contoso tenant with every kind of custom attribute and two templates."""
    with (
        running_emulator(EmulatorConfig(tenant=FileTenant(contoso()))) as emu,
        pytest.MonkeyPatch.context() as monkeypatch,
    ):
        source = UserSource(
            emu,
            tmp_path_factory.mktemp("contoso"),
            {"custom_attributes": ATTRIBUTES, "templates": TEMPLATES, "auto_invite": False},
        )
        yield Synced(source, source.run(monkeypatch))


def materialization(result: dg.ExecuteInProcessResult, table: str) -> dict[str, Any]:
    key = dg.AssetKey(["mdm", table])
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def check(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def test_every_user_group_and_transitive_membership_of_a_synthetic_tenant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_emulator(EmulatorConfig(users=60, devices=20, seed=7)) as emu:
        source = UserSource(emu, tmp_path, {"auto_invite": False})
        result = source.run(monkeypatch)
        tenant = emu.tenant
        assert result.success
        users = source.query(
            "SELECT tenant_id, id, userPrincipalName, mail, accountEnabled, userType FROM mdm.users"
        )
        assert sorted(users) == sorted(
            (
                tenant.tenant_id,
                u["id"],
                u["userPrincipalName"],
                u.get("mail"),
                u["accountEnabled"],
                u["userType"],
            )
            for u in tenant.users()
        )
        # No licence or stale filter: unlicensed, disabled and guest users are all there.
        assert {row[4] for row in users} == {True, False}
        assert {row[5] for row in users} == {"Member", "Guest"}
        groups = source.query("SELECT tenant_id, id, displayName FROM mdm.groups")
        assert sorted(groups) == sorted(
            (tenant.tenant_id, g["id"], g["displayName"]) for g in tenant.groups()
        )
        members = source.query(
            "SELECT tenant_id, group_id, member_id, member_type FROM mdm.group_members"
        )
        expected = {
            (tenant.tenant_id, g["id"], m["id"], m["@odata.type"].removeprefix("#microsoft.graph."))
            for g in tenant.groups()
            for m in tenant.transitive_members(g["id"])
        }
        assert sorted(members) == sorted(expected)
        # Nested groups resolve: some user is a member only through a group inside a group.
        direct = {
            (g["id"], m["id"]) for g in tenant.groups() for m in tenant.direct_members(g["id"])
        }
        assert {(g, m) for _, g, m, _ in expected} - direct
        assert source.last_run()[1:3] == ("success", None)
        assert check(result, MDM_USERS_CHECK).passed


def test_every_table_carries_the_tenant_and_the_run_is_recorded_as_the_user_source(
    contoso_sync: Synced,
) -> None:
    source = contoso_sync.source
    tenant_id = source.emulator.tenant_id
    for table in source.tables():
        assert source.query(f"SELECT DISTINCT tenant_id, connector FROM {table}") in (
            [(tenant_id, "MDM test")],
            [],
        ), table
    assert source.query("SELECT count(*) FROM mdm.rendered_templates")[0][0] > 0
    assert source.query("SELECT job, source, status, connector FROM ops.sync_runs") == [
        (MDM_JOB, "user_source", "success", "MDM test")
    ]
    # Incremental sync keeps what Graph answered, and the links that bring it up to date.
    kept = source.query(
        "SELECT table_name, comment IS NOT NULL FROM duckdb_tables() WHERE schema_name = "
        "'mdm_extract' ORDER BY 1"
    )
    assert kept == [("directory_users", True), ("group_members", True), ("groups", True)]
    assert source.query("SELECT collection FROM ops.delta_state ORDER BY 1") == [
        ("mdm_extract.device_ids",),
        ("mdm_extract.directory_users",),
        ("mdm_extract.groups",),
    ]
    assert set(source.tables()) == {
        "mdm.users",
        "mdm.groups",
        "mdm.group_members",
        "mdm.user_attributes",
        "mdm.rendered_templates",
        "mdm.invitations",
    }


def test_groups_are_synced_with_their_transitive_members(contoso_sync: Synced) -> None:
    members = contoso_sync.source.query(
        "SELECT group_id, member_id, member_type FROM mdm.group_members"
    )
    assert sorted(members) == sorted(
        [
            (ALL_STAFF, SALES, "group"),
            (ALL_STAFF, CAROL, "user"),
            (ALL_STAFF, ALICE, "user"),  # through Sales
            (ALL_STAFF, BOB, "user"),  # through Sales
            (SALES, ALICE, "user"),
            (SALES, BOB, "user"),
            (KIOSKS, KIOSK_DEVICE, "device"),
        ]
    )


def test_custom_attributes_read_from_each_kind_of_source(contoso_sync: Synced) -> None:
    rows = contoso_sync.source.query(
        "SELECT user_id, attribute, source, value FROM mdm.user_attributes"
    )
    values = {(user_id, attribute): (source, value) for user_id, attribute, source, value in rows}
    assert len(rows) == 5 * len(ATTRIBUTES)  # one row per user and attribute
    assert values[(ALICE, "employeeId")] == ("property", "E1")
    assert values[(ALICE, "extensionAttribute3")] == ("onPremisesExtensionAttributes", "Sales")
    assert values[(ALICE, COST_CENTER)] == ("directory_extension", "CC-1")
    assert values[(CAROL, "employeeId")] == ("property", None)
    assert values[(CAROL, "extensionAttribute3")] == ("onPremisesExtensionAttributes", "Ops")
    assert values[(CAROL, COST_CENTER)] == ("directory_extension", None)
    assert values[(BOB, "extensionAttribute3")] == ("onPremisesExtensionAttributes", None)
    assert {values[(u, "faxNumber")] for u in (ALICE, BOB, CAROL, DAVE, ERIN)} == {
        ("property", None)
    }
    # The directory extension and the plain property were asked for by name in $select (of the
    # listing, not of the partition plan's $count probe before it).
    user_listings = [
        r
        for r in contoso_sync.source.emulator.requests
        if r.path == "/v1.0/users" and r.query and "$count" not in r.query
    ]
    selected = user_listings[0].query["$select"].split(",")
    assert {"employeeId", COST_CENTER, "faxNumber", "onPremisesExtensionAttributes"} <= set(
        selected
    )
    assert "extensionAttribute3" not in selected


def test_attribute_missing_for_everyone_and_for_some_users_are_notified(
    contoso_sync: Synced,
) -> None:
    notes = contoso_sync.source.notifications()
    assert set(notes) == {"attributes_not_synchronized_all", "attributes_not_synchronized_some"}
    severity, source, message, details = notes["attributes_not_synchronized_all"]
    assert (severity, source) == ("warning", "user_source")
    assert "faxNumber" in message
    assert "any of the 5 users" in message
    assert json.loads(details)["attributes"] == {
        "faxNumber": {
            "users": 5,
            "missing": 5,
            "examples": [
                "alice@contoso.com",
                "bob@contoso.com",
                "carol@contoso.com",
                "dave_fabrikam.com#EXT#@contoso.onmicrosoft.com",
                "erin@contoso.com",
            ],
        }
    }
    severity, source, message, details = notes["attributes_not_synchronized_some"]
    assert (severity, source) == ("warning", "user_source")
    assert "employeeId (2 of 5 users, e.g. carol@contoso.com" in message
    guest = "dave_fabrikam.com#EXT#@contoso.onmicrosoft.com"
    assert json.loads(details)["attributes"] == {
        "employeeId": {"users": 5, "missing": 2, "examples": ["carol@contoso.com", guest]},
        "extensionAttribute3": {"users": 5, "missing": 2, "examples": ["bob@contoso.com", guest]},
        COST_CENTER: {"users": 5, "missing": 2, "examples": ["carol@contoso.com", guest]},
    }


def test_missing_attributes_are_a_warning_check_and_the_run_still_succeeds(
    contoso_sync: Synced,
) -> None:
    result = contoso_sync.result
    assert result.success
    evaluation = check(result, ATTRIBUTES_CHECK)
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    metadata = {k: v.value for k, v in evaluation.metadata.items()}
    assert metadata["attributes_missing_for_all"] == ["faxNumber"]
    assert metadata["attributes_missing_for_some"] == [
        "employeeId",
        "extensionAttribute3",
        COST_CENTER,
    ]
    assert check(result, MDM_USERS_CHECK).passed
    assert materialization(result, "user_attributes")["missing_values"] == {
        "employeeId": 2,
        "extensionAttribute3": 2,
        COST_CENTER: 2,
        "faxNumber": 5,
    }


def test_templates_render_builtin_and_custom_variables_missing_ones_empty(
    contoso_sync: Synced,
) -> None:
    rows = contoso_sync.source.query(
        "SELECT template, user_id, rendered, missing_variables FROM mdm.rendered_templates"
    )
    rendered = {(template, user_id): (text, missing) for template, user_id, text, missing in rows}
    assert len(rows) == 2 * 5
    assert rendered[("greeting", ALICE)] == (
        "Hi Alice Smith <alice@contoso.com> (alice@contoso.com, Alice Smith)",
        [],
    )
    assert rendered[("greeting", BOB)] == (
        "Hi Bob Jones <> (bob@contoso.com, Bob Jones)",
        ["userEmail"],
    )
    guest = "dave_fabrikam.com#EXT#@contoso.onmicrosoft.com"
    assert rendered[("greeting", DAVE)] == (
        f"Hi   <dave@fabrikam.com> ({guest}, {guest})",
        ["userFirstName", "userLastName"],
    )
    assert rendered[("badge", ERIN)] == ("E5/Sales/CC-5", [])
    assert rendered[("badge", CAROL)] == ("/Ops/", ["employeeId", COST_CENTER])
    assert materialization(contoso_sync.result, "rendered_templates")[
        "rendered_with_missing_values"
    ] == {"greeting": 2, "badge": 3}


@pytest.mark.parametrize(
    ("mode", "subdomain", "expected", "missing"),
    [
        ("none", False, dict.fromkeys((ALICE, BOB, CAROL, DAVE, ERIN)), 0),
        (
            "email",
            False,
            {
                ALICE: "alice@contoso.com",
                BOB: None,  # no mailbox
                CAROL: "carol@contoso.com",
                DAVE: "dave@fabrikam.com",
                ERIN: "erin.b@contoso.com",
            },
            1,
        ),
        (
            "upn",
            True,
            {
                ALICE: "alice@appleid.contoso.com",
                BOB: "bob@appleid.contoso.com",
                CAROL: "carol@appleid.contoso.com",
                DAVE: "dave_fabrikam.com#EXT#@appleid.contoso.onmicrosoft.com",
                ERIN: "erin@appleid.contoso.com",
            },
            0,
        ),
        (
            "email",
            True,
            {
                ALICE: "alice@appleid.contoso.com",
                BOB: None,
                CAROL: "carol@appleid.contoso.com",
                DAVE: "dave@appleid.fabrikam.com",
                ERIN: "erin.b@appleid.contoso.com",
            },
            1,
        ),
    ],
)
def test_managed_apple_id_follows_the_configured_pattern(
    user_source: Any,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    subdomain: bool,
    expected: dict[str, str | None],
    missing: int,
) -> None:
    source = user_source(managed_apple_id=mode, appleid_subdomain=subdomain, auto_invite=False)
    result = source.run(monkeypatch)
    assert result.success
    assert dict(source.query("SELECT id, managed_apple_id FROM mdm.users")) == expected
    assert materialization(result, "users")["managed_apple_id_missing"] == missing


def test_invalid_users_fail_the_blocking_check_publish_nothing_and_invite_nobody(
    user_source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = contoso()
    tenant["users"][0]["mail"] = "alice at contoso"  # not an e-mail address
    source = user_source(tenant=tenant)
    result = source.run(monkeypatch)
    assert not result.success
    assert not check(result, MDM_USERS_CHECK).passed
    assert source.tables() == {}
    severity, origin, message, _ = source.notifications()["data_check_failed"]
    assert (severity, origin) == ("error", "user_source")
    assert message.startswith("mdm.users failed its checks: 1 of 5 rows (mail: email_shape x1)")
    assert not ledger_path(source.db).exists()


@pytest.mark.parametrize("outage", ["emulator_stopped", "graph_drops_every_connection"])
def test_unreachable_service_fails_the_run_and_keeps_the_published_tables(
    user_source: Any, monkeypatch: pytest.MonkeyPatch, outage: str
) -> None:
    source = user_source(custom_attributes=["employeeId"])
    assert source.run(monkeypatch).success
    before = source.tables()
    ledger = ledger_path(source.db).read_bytes()
    if outage == "emulator_stopped":
        source.emulator.stop()  # the token service and Graph are both gone
        expected = "token service"
    else:
        source.emulator.faults.drop_next("/users", count=1000)
        expected = "Microsoft Graph did not answer"
    result = source.run(monkeypatch)
    assert not result.success
    severity, origin, message, _details = source.notifications()["service_unreachable"]
    assert (severity, origin) == ("error", "user_source")
    assert expected in message
    _, status, error, _ = source.last_run()
    assert status == "failure"
    assert expected in error
    assert source.tables() == before
    assert ledger_path(source.db).read_bytes() == ledger


def test_disabled_user_source_reads_nothing_and_leaves_mdm_tables_alone(
    user_source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = user_source()
    assert source.run(monkeypatch).success
    before = source.tables()
    requests = len(source.emulator.requests)
    source.emulator.tenant.update(ALICE, displayName="Alice Changed")
    source.configure(enabled=False)
    result = source.run(monkeypatch)
    assert result.success
    assert len(source.emulator.requests) == requests  # not even a token request
    assert result.get_asset_materialization_events() == []
    assert source.tables() == before
    assert source.last_run()[1:] == ("success", None, 0)


@pytest.mark.parametrize(
    "second_tenant",
    [
        {"user_source": {"tenant_id": "0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b"}},
        {"tenant_id": ["contoso.com", "fabrikam.com"]},
    ],
)
def test_a_second_identity_provider_is_refused_before_any_network_call(
    user_source: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    second_tenant: dict[str, Any],
) -> None:
    source = user_source()
    monkeypatch.setenv(SECRET_VARIABLE, source.emulator.client_secret)
    source.write_config()
    document = yaml.safe_load(source.config_path.read_text())
    for key, value in second_tenant.items():
        document[key] = {**document[key], **value} if isinstance(value, dict) else value
    source.config_path.write_text(yaml.safe_dump(document))
    with pytest.raises(ValueError, match="single identity provider"):
        load_settings(source.config_path)
    # What `dagster job execute -j mdm_user_source_sync` does with that file: the run fails.
    monkeypatch.chdir(tmp_path)
    result = (
        build_definitions(None, str(source.config_path))
        .resolve_job_def(MDM_JOB)
        .execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "environments with multiple IdPs are not supported" in str(failure.step_failure_data)
    assert source.emulator.requests == []


def test_schedule_runs_every_sync_interval_only_while_enabled(
    user_source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = user_source(sync_interval_minutes=360)
    monkeypatch.setenv(SECRET_VARIABLE, source.emulator.client_secret)
    for enabled, status in ((True, "RUNNING"), (False, "STOPPED")):
        source.configure(enabled=enabled)
        source.write_config()
        definitions = build_definitions(load_settings(source.config_path), str(source.config_path))
        schedule = definitions.resolve_schedule_def("mdm_user_source_sync_schedule")
        assert schedule.job_name == MDM_JOB
        assert schedule.cron_schedule == ["0 0,6,12,18 * * *"]
        assert schedule.default_status.name == status
