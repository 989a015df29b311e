"""`entra-pipeline check` against the emulator: each permission taken away names its row, token and
network failures say what to fix, config and mapping errors exit 2, and the secret never shows."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from entra_pipeline.config_file import load_settings
from entra_pipeline.connector.mapping_check import filtered_columns
from entra_pipeline.emulator import Emulator
from entra_pipeline.preflight import (
    EXIT_CANNOT_SYNC,
    EXIT_INVALID_CONFIG,
    EXIT_OK,
    CheckReport,
    Finding,
    check_connector,
    render,
)
from tests.operations.operate_fixtures import (
    CONNECTOR_PERMISSIONS,
    REPO,
    SECRET_VARIABLE,
    SHIPPED_MAPPING,
)
from tests.support import unused_port

ConfigFor = Callable[..., Path]
CONNECTOR_CALLS = {
    "users": ("GET /users", "User.Read.All"),
    "users.import_sign_in_activity": ("GET /users $select=id,signInActivity", "AuditLog.Read.All"),
    "devices": ("GET /devices", "Device.Read.All"),
    "groups (raw.groups)": ("GET /groups", "GroupMember.Read.All"),
    "licence names": ("GET /subscribedSkus", "LicenseAssignment.Read.All"),
}


def statuses(report: CheckReport) -> dict[str, str]:
    """Option -> status of the calls without a group filter (one call each)."""
    return {f.option: f.status for f in report.calls if f.option in CONNECTOR_CALLS}


def row(report: CheckReport, option: str, call_prefix: str = "") -> Finding:
    (found,) = [f for f in report.calls if f.option == option and f.call.startswith(call_prefix)]
    return found


def step(report: CheckReport, name: str) -> Finding:
    (found,) = [s for s in report.steps if s.option == name]
    return found


def test_every_permission_granted_every_call_is_ok_and_a_sync_can_run(
    emulator: Emulator, config_for: ConfigFor
) -> None:
    emulator.permissions = set(CONNECTOR_PERMISSIONS)
    report = check_connector(str(config_for(emulator)))

    assert [(s.option, s.status) for s in report.steps] == [
        ("config", "ok"),
        ("mapping", "ok"),
        ("warehouse", "ok"),
        ("server", "ok"),
        ("token", "ok"),
    ]
    assert [(f.option, f.call.split(" $")[0], f.permission, f.status) for f in report.calls] == [
        ("users", "GET /users", "User.Read.All", "ok"),
        ("users.import_sign_in_activity", "GET /users", "AuditLog.Read.All + Entra ID P1", "ok"),
        ("devices", "GET /devices", "Device.Read.All", "ok"),
        ("groups (raw.groups)", "GET /groups", "GroupMember.Read.All", "ok"),
        ("licence names", "GET /subscribedSkus", "LicenseAssignment.Read.All", "ok"),
        ("user_source", "GET /users", "User.Read.All", "ok"),
        ("user_source groups", "GET /groups", "GroupMember.Read.All", "ok"),
        (
            "user_source group members",
            "GET /groups/{id}/transitiveMembers",
            "GroupMember.Read.All",
            "ok",
        ),
    ]
    assert report.exit_code == EXIT_OK
    assert render(report).endswith(
        "A sync can run: every call the enabled options need is allowed (exit 0)."
    )


def test_probes_send_the_syncs_select_and_expand_with_top_1(
    emulator: Emulator, config_for: ConfigFor
) -> None:
    from entra_pipeline.graph.collections import DEVICES, USERS

    check_connector(str(config_for(emulator)))

    sent = {(r.path, r.query.get("$select")): r.query for r in emulator.requests}
    users = sent[("/v1.0/users", USERS.select)]
    assert users["$expand"] == USERS.expand
    assert users["$top"] == "1"
    devices = sent[("/v1.0/devices", DEVICES.select)]
    assert devices["$expand"] == DEVICES.expand
    assert devices["$top"] == "1"
    assert sent[("/v1.0/users", "id,signInActivity")]["$top"] == "1"


@pytest.mark.parametrize(
    ("removed", "missing", "exit_code"),
    [
        ({"User.Read.All"}, "users", EXIT_CANNOT_SYNC),
        ({"AuditLog.Read.All"}, "users.import_sign_in_activity", EXIT_OK),
        ({"Device.Read.All"}, "devices", EXIT_CANNOT_SYNC),
        ({"LicenseAssignment.Read.All"}, "licence names", EXIT_CANNOT_SYNC),
        # Either group permission lets the app list groups (GroupMember.Read.All is the least).
        ({"Group.Read.All", "GroupMember.Read.All"}, "groups (raw.groups)", EXIT_CANNOT_SYNC),
    ],
    ids=lambda value: "+".join(sorted(value)) if isinstance(value, set) else None,
)
def test_a_permission_taken_away_is_reported_on_its_row(
    emulator: Emulator,
    config_for: ConfigFor,
    removed: set[str],
    missing: str,
    exit_code: int,
) -> None:
    emulator.permissions = set(CONNECTOR_PERMISSIONS - removed)
    report = check_connector(str(config_for(emulator)))

    found = row(report, missing)
    assert found.status == ("warning" if missing == "users.import_sign_in_activity" else "missing")
    assert found.permission.split(" + ")[0] in found.detail  # the permission to grant, by name
    assert "grant it with admin consent" in found.detail
    others = {o: s for o, s in statuses(report).items() if o != missing}
    if missing == "users":  # Graph checks User.Read.All before AuditLog.Read.All
        others.pop("users.import_sign_in_activity")
    assert set(others.values()) == {"ok"}
    assert report.exit_code == exit_code


def test_group_read_alone_is_enough_for_the_group_calls(
    emulator: Emulator, config_for: ConfigFor
) -> None:
    emulator.permissions = (CONNECTOR_PERMISSIONS - {"GroupMember.Read.All"}) | {"Group.Read.All"}
    report = check_connector(str(config_for(emulator, users={"groups": ["Dept - Sales"]})))

    assert {f.status for f in report.calls} == {"ok"}
    assert report.exit_code == EXIT_OK


def test_least_privilege_is_enough_and_check_names_groupmember_read_all(
    emulator: Emulator, config_for: ConfigFor
) -> None:
    # No Group.Read.All granted: GroupMember.Read.All lists groups and reads their members.
    assert "Group.Read.All" not in CONNECTOR_PERMISSIONS
    emulator.permissions = set(CONNECTOR_PERMISSIONS)
    config = config_for(emulator, users={"groups": ["Dept - Sales"]})
    report = check_connector(str(config))

    assert {f.status for f in report.calls} == {"ok"}
    group_calls = [f for f in report.calls if f.call.startswith("GET /groups")]
    assert group_calls
    assert {f.permission for f in group_calls} == {"GroupMember.Read.All"}
    assert report.exit_code == EXIT_OK


def test_sign_in_activity_missing_permission_warns_with_the_p1_note_and_exits_0(
    emulator: Emulator, config_for: ConfigFor
) -> None:
    emulator.permissions = set(CONNECTOR_PERMISSIONS - {"AuditLog.Read.All"})
    report = check_connector(str(config_for(emulator)))
    text = render(report)

    sign_in = row(report, "users.import_sign_in_activity")
    assert sign_in.label == "MISSING (warning)"
    assert "P1 or P2 licence" in sign_in.detail
    assert "MISSING (warning) [1]" in text
    assert text.endswith(
        "A sync can run, without users.import_sign_in_activity (see the warnings above; exit 0)."
    )


def test_non_premium_tenant_warns_that_sign_in_activity_needs_p1(
    emulator_factory: Callable[..., Emulator], config_for: ConfigFor
) -> None:
    emulator = emulator_factory(users=10, devices=5, premium=False)
    report = check_connector(str(config_for(emulator)))

    sign_in = row(report, "users.import_sign_in_activity")
    assert (sign_in.status, sign_in.label) == ("warning", "NO P1 LICENCE (warning)")
    assert "Microsoft Entra ID P1 or P2" in sign_in.detail
    assert report.exit_code == EXIT_OK


def test_sign_in_activity_off_is_not_probed(emulator: Emulator, config_for: ConfigFor) -> None:
    config = config_for(emulator, users={"import_sign_in_activity": False})
    report = check_connector(str(config))

    assert "users.import_sign_in_activity" not in statuses(report)
    assert not any("signInActivity" in (r.query.get("$select") or "") for r in emulator.requests)


def test_groups_by_name_and_id_resolve_and_their_members_are_probed(
    emulator: Emulator, config_for: ConfigFor
) -> None:
    sales = next(g for g in emulator.tenant.groups() if g["displayName"] == "Dept - Sales")
    config = config_for(
        emulator,
        devices={"groups": [sales["id"]]},
        users={"groups": ["Dept - Sales"]},
        user_source={"enabled": False},
    )
    report = check_connector(str(config))

    by_id = f"devices.groups {sales['id']!r}"
    assert row(report, by_id, f"GET /groups/{sales['id']} ").detail == (
        f"group {sales['id']!r} is {sales['id']}"
    )
    members = row(report, by_id, "GET /groups/{")
    assert (members.permission, members.status) == ("GroupMember.Read.All", "ok")
    assert row(report, "users.groups 'Dept - Sales'", "GET /groups $filter").status == "ok"
    assert report.exit_code == EXIT_OK
    member_calls = [r for r in emulator.requests if r.path.endswith("/transitiveMembers")]
    assert {r.path for r in member_calls} == {f"/v1.0/groups/{sales['id']}/transitiveMembers"}


def test_a_missing_group_is_named_and_fails_the_check(
    emulator: Emulator, config_for: ConfigFor
) -> None:
    config = config_for(emulator, users={"groups": ["Dept - Sales", "No Such Group"]})
    report = check_connector(str(config))

    missing = row(report, "users.groups 'No Such Group'", "GET /groups $filter")
    assert missing.status == "failed"
    assert "'No Such Group'" in missing.detail
    assert row(report, "users.groups 'No Such Group'", "GET /groups/{").status == "not probed"
    assert row(report, "users.groups 'Dept - Sales'", "GET /groups/{").status == "ok"
    assert report.exit_code == EXIT_CANNOT_SYNC
    assert render(report).endswith("A sync cannot run: 1 problem above (exit 1).")


def test_user_source_selects_its_custom_attributes(
    emulator: Emulator, config_for: ConfigFor
) -> None:
    extension = f"extension_{emulator.tenant.extension_app_id.replace('-', '')}_costCenter"
    names = ["employeeId", "extensionAttribute1", extension]
    report = check_connector(str(config_for(emulator, user_source={"custom_attributes": names})))

    users = row(report, "user_source + custom_attributes")
    assert users.status == "ok"
    (sent,) = [r for r in emulator.requests if extension in (r.query.get("$select") or "")]
    selected = sent.query["$select"].split(",")
    # extensionAttribute1 is read from onPremisesExtensionAttributes, not selected by name.
    assert {"employeeId", extension, "onPremisesExtensionAttributes"} <= set(selected)
    assert "extensionAttribute1" not in selected
    assert report.exit_code == EXIT_OK


def test_unknown_custom_attribute_fails_naming_the_property(
    emulator: Emulator, config_for: ConfigFor
) -> None:
    config = config_for(emulator, user_source={"custom_attributes": ["costCentre"]})
    report = check_connector(str(config))

    users = row(report, "user_source + custom_attributes")
    assert users.status == "failed"
    assert "Could not find a property named 'costCentre'" in users.detail
    assert "extension_<appId>_<name>" in users.detail
    assert report.exit_code == EXIT_CANNOT_SYNC


def test_disabled_user_source_is_not_probed(emulator: Emulator, config_for: ConfigFor) -> None:
    report = check_connector(str(config_for(emulator, user_source={"enabled": False})))

    assert not [f for f in report.calls if f.option.startswith("user_source")]


def test_bad_secret_fails_the_token_step_and_is_never_printed(
    emulator: Emulator, config_for: ConfigFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_for(emulator)
    wrong = "not-the-secret-" + uuid.uuid4().hex
    monkeypatch.setenv(SECRET_VARIABLE, wrong)
    report = check_connector(str(config))
    text = render(report)

    token = step(report, "token")
    assert token.status == "failed"
    assert "AADSTS7000215" in token.detail
    assert "ENTRA_CLIENT_SECRET" in token.detail
    assert {f.status for f in report.calls} == {"not probed"}
    assert report.exit_code == EXIT_CANNOT_SYNC
    assert wrong not in text
    assert emulator.client_secret not in text


def test_unknown_tenant_fails_the_token_step_naming_the_tenant(
    emulator: Emulator, config_for: ConfigFor
) -> None:
    other_tenant = str(uuid.uuid4())
    report = check_connector(str(config_for(emulator, tenant_id=other_tenant)))

    token = step(report, "token")
    assert token.status == "failed"
    assert f"does not know tenant {other_tenant!r}" in token.detail
    assert report.exit_code == EXIT_CANNOT_SYNC


def test_unknown_client_id_fails_the_token_step(emulator: Emulator, config_for: ConfigFor) -> None:
    report = check_connector(str(config_for(emulator, client_id=str(uuid.uuid4()))))

    assert "AADSTS700016" in step(report, "token").detail
    assert report.exit_code == EXIT_CANNOT_SYNC


def test_unreachable_token_service_says_so_quickly(
    emulator: Emulator, config_for: ConfigFor
) -> None:
    report = check_connector(
        str(config_for(emulator, authority_host=f"https://127.0.0.1:{unused_port()}"))
    )

    token = step(report, "token")
    assert token.status == "failed"
    assert "is unreachable" in token.detail
    assert "check authority_host" in token.detail
    assert report.exit_code == EXIT_CANNOT_SYNC


def test_graph_unreachable_after_a_token_stops_the_probes(
    emulator: Emulator, config_for: ConfigFor
) -> None:
    emulator.faults.drop = 1.0  # every Graph request dropped; the token service still answers
    report = check_connector(str(config_for(emulator)))

    assert step(report, "token").status == "ok"
    graph = step(report, "graph")
    assert graph.status == "failed"
    assert "Microsoft Graph did not answer GET /v1.0/users after 3 attempts" in graph.detail
    assert {f.status for f in report.calls} == {"not probed"}
    assert report.exit_code == EXIT_CANNOT_SYNC


def test_one_throttled_probe_is_retried_and_ok(emulator: Emulator, config_for: ConfigFor) -> None:
    emulator.faults.throttle_next("/v1.0/devices", retry_after=1)
    report = check_connector(str(config_for(emulator)))

    assert row(report, "devices").status == "ok"
    assert [r.status for r in emulator.requests if r.path == "/v1.0/devices"] == [429, 200]
    assert report.exit_code == EXIT_OK


def test_untrusted_tls_certificate_points_at_ca_bundle(
    emulator: Emulator, config_for: ConfigFor
) -> None:
    report = check_connector(str(config_for(emulator, ca_bundle=None)))

    token = step(report, "token")
    assert token.status == "failed"
    assert "does not trust" in token.detail
    assert "set ca_bundle" in token.detail


def test_client_secret_pasted_into_client_id_is_never_printed(
    emulator: Emulator, config_for: ConfigFor
) -> None:
    report = check_connector(str(config_for(emulator, client_id=f"${{{SECRET_VARIABLE}}}")))
    text = render(report)
    assert "client_id: '***' is not a GUID" in step(report, "config").detail
    assert emulator.client_secret not in text
    assert report.exit_code == EXIT_INVALID_CONFIG


def test_config_error_exits_2_with_its_message_before_any_network_call(
    emulator: Emulator, config_for: ConfigFor
) -> None:
    report = check_connector(str(config_for(emulator, devices={"join_types": ["azure_joined"]})))

    config = step(report, "config")
    assert config.status == "failed"
    assert "devices.join_types.0: 'azure_joined' is not allowed" in config.detail
    assert [s.option for s in report.steps] == ["config"]
    assert report.calls == []
    assert emulator.requests == []
    assert report.exit_code == EXIT_INVALID_CONFIG


def test_missing_config_file_exits_2_naming_the_variable(tmp_path: Path) -> None:
    report = check_connector(str(tmp_path / "absent.yaml"))

    assert "ENTRA_CONNECTOR_CONFIG" in step(report, "config").detail
    assert report.exit_code == EXIT_INVALID_CONFIG


def test_invalid_mapping_exits_2_naming_the_row_and_the_nearest_column(
    emulator: Emulator, config_for: ConfigFor, tmp_path: Path
) -> None:
    mapping = tmp_path / "mapping.csv"
    mapping.write_text(
        SHIPPED_MAPPING.read_text().replace("User,jobTitle,", "User,jobTitel,"), encoding="utf-8"
    )
    report = check_connector(str(config_for(emulator, mapping_path=str(mapping))))

    detail = step(report, "mapping").detail
    assert "row 22: source_attribute 'jobTitel' is not a column of staging.filtered_users" in detail
    assert "nearest valid: jobTitle" in detail
    assert step(report, "token").status == "ok"  # Graph is still probed: one run, every problem
    assert report.exit_code == EXIT_INVALID_CONFIG


def test_missing_mapping_file_exits_2_naming_mapping_path(
    emulator: Emulator, config_for: ConfigFor, tmp_path: Path
) -> None:
    absent = tmp_path / "absent.csv"
    report = check_connector(str(config_for(emulator, mapping_path=str(absent))))

    detail = step(report, "mapping").detail
    assert "the mapping CSV cannot be read ([Errno 2] No such file or directory" in detail
    assert "mapping_path" in detail
    assert report.exit_code == EXIT_INVALID_CONFIG


def test_filtered_columns_are_the_columns_the_sql_models_build(
    emulator: Emulator, config_for: ConfigFor
) -> None:
    columns = filtered_columns(load_settings(config_for(emulator)))

    assert {"id", "userPrincipalName", "manager_upn", "license_names", "last_sign_in_at"} <= set(
        columns["User"]
    )
    assert {"id", "join_type_label", "owner_upn", "deviceId"} <= set(columns["Device"])


def test_cli_prints_the_table_and_exits_with_the_check_code(
    emulator: Emulator, config_for: ConfigFor
) -> None:
    emulator.permissions = set(CONNECTOR_PERMISSIONS - {"Device.Read.All"})
    config = config_for(emulator)
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "entra-pipeline"), "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
        cwd=REPO,
    )

    assert result.returncode == EXIT_CANNOT_SYNC, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "entra-pipeline check: Operate test"
    devices = next(line for line in lines if line.startswith("  devices "))
    assert "Device.Read.All" in devices
    assert devices.endswith("MISSING [1]")
    assert lines[-1] == "A sync cannot run: 1 problem above (exit 1)."
    assert emulator.client_secret not in result.stdout + result.stderr


def test_cli_config_error_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text("tenant_id: not-a-tenant\nclient_id: x\nclient_secret: s3cr3t-value\n")
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "entra-pipeline"), "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )

    assert result.returncode == EXIT_INVALID_CONFIG
    assert "tenant_id: 'not-a-tenant' is neither a GUID" in result.stdout
    assert "s3cr3t-value" not in result.stdout + result.stderr
