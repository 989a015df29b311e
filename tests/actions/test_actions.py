"""Actions on the directory end to end, against the emulator over HTTPS: a sync publishes, a
selection writes a plan (nothing sent), `act apply` acts with the action app's own credential on
what still matches, audits every request in ops.actions, and the next sync sees the change."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from entra_pipeline.actions.apply import Journal
from entra_pipeline.actions.cli import run_act
from entra_pipeline.emulator import AppRegistration, Emulator, EmulatorConfig, running_emulator
from entra_pipeline.run_once import run_sync
from tests.operations.operate_fixtures import SECRET_VARIABLE, write_config

ACTION_SECRET_VARIABLE = "ENTRA_TEST_ACTION_SECRET"
ACTION_APP = AppRegistration(
    client_id="5f0c8c1e-2b7a-4d55-9a63-0d1e2f3a4b5c",
    client_secret="action-app-secret-for-tests",
    permissions=frozenset(
        {
            "Device.ReadWrite.All",
            "User.EnableDisableAccount.All",
            "User.Read.All",
            "User.RevokeSessions.All",
            "RoleManagement.Read.Directory",
        }
    ),
)


class Tenant:
    """An emulator with the action app registered, a config for it, its published file."""

    def __init__(self, emulator: Emulator, folder: Path, **actions: Any) -> None:
        self.emulator = emulator
        self.config = write_config(
            folder / "connector.yaml",
            emulator,
            actions={
                "client_id": ACTION_APP.client_id,
                "client_secret": "${" + ACTION_SECRET_VARIABLE + "}",
                **actions,
            },
        )
        self.db = folder / "entra.duckdb"

    def sync(self) -> None:
        assert run_sync(argparse.Namespace(config=str(self.config), full=False)) == 0

    def act(self, verb: str, *args: str, sets: tuple[str, ...] = ()) -> int:
        namespace = argparse.Namespace(config=str(self.config), verb=verb, set=list(sets))
        if verb == "plan":
            namespace.selection = args[0]
        elif args:
            namespace.plan_id = args[0]
        return run_act(namespace)

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            return con.execute(sql, params or []).fetchall()

    def last_plan(self) -> str:
        return str(
            self.query("SELECT plan_id FROM ops.action_plans ORDER BY created_at DESC")[0][0]
        )

    def writes(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.emulator.requests if r.method != "GET"
                and r.path.startswith("/v1.0/")]  # fmt: skip

    def enabled(self, device_id: str) -> bool:
        tenant = self.emulator.tenant
        return bool(tenant.object_at(*tenant.locate(device_id))["accountEnabled"])


# One clock for every emulator of the module: each serves the very tenant the published file
# was synced from (the synthetic tenant's dates are relative to its clock).
TENANT = EmulatorConfig(
    users=60, devices=60, seed=9, apps=(ACTION_APP,), now=dt.datetime.now(dt.UTC)
)


@pytest.fixture(scope="module")
def published_once(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The published file of one sync of the tenant (each test starts from a copy of it, with an
    emulator of its own serving the same seeded tenant: a sync is the slow part)."""
    folder = tmp_path_factory.mktemp("published")
    with running_emulator(TENANT) as emulator, pytest.MonkeyPatch.context() as patch:
        patch.setenv(SECRET_VARIABLE, emulator.client_secret)
        patch.setenv(ACTION_SECRET_VARIABLE, ACTION_APP.client_secret)
        first = Tenant(emulator, folder)
        first.sync()
        return first.db.read_bytes()


@pytest.fixture
def tenant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, published_once: bytes
) -> Iterator[Tenant]:
    with running_emulator(TENANT) as emulator:
        monkeypatch.setenv(SECRET_VARIABLE, emulator.client_secret)
        monkeypatch.setenv(ACTION_SECRET_VARIABLE, ACTION_APP.client_secret)
        found = Tenant(emulator, tmp_path, max_fraction=1.0)
        found.db.write_bytes(published_once)
        found.db.chmod(0o600)
        yield found


def test_a_stale_device_plan_applied_is_published_disabled_by_the_next_sync(
    tenant: Tenant, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tenant.act("plan", "stale_devices_disable") == 0
    plan = tenant.last_plan()
    assert tenant.writes() == []  # planning sends nothing
    planned = dict(
        tenant.query(
            "SELECT object_id, object_name FROM ops.action_plan_items WHERE plan_id = ? AND "
            "status = 'planned'",
            [plan],
        )
    )
    assert planned
    # Guard rails, with their reasons: synced devices and non-Windows ones are not touched.
    reasons = {r for (r,) in tenant.query(
        "SELECT reason FROM ops.action_plan_items WHERE status = 'skipped'")}  # fmt: skip
    assert any(r.startswith("synchronized from on-premises") for r in reasons)
    assert any(r.startswith("not a Windows device") for r in reasons)
    assert tenant.act("apply", plan) == 0
    assert sorted(tenant.writes()) == sorted(("PATCH", f"/v1.0/devices/{d}") for d in planned)
    audit = tenant.query(
        "SELECT object_id, status, request_id IS NOT NULL, requested_at IS NOT NULL, "
        "json_extract(before, '$.accountEnabled')::BOOLEAN, "
        "json_extract(after, '$.accountEnabled')::BOOLEAN FROM ops.actions WHERE plan_id = ?",
        [plan],
    )
    assert sorted(audit) == sorted((d, "done", True, True, True, False) for d in planned)
    tenant.sync()
    assert (
        tenant.query(
            "SELECT id FROM staging.devices WHERE NOT accountEnabled AND id IN "
            "(SELECT object_id FROM ops.actions WHERE status = 'done')"
        )
        != []
    )
    published = dict(tenant.query("SELECT id, accountEnabled FROM staging.devices"))
    assert all(published[d] is False for d in planned)
    assert "applied: " + str(len(planned)) + " done" in capsys.readouterr().out


def test_a_plan_applied_twice_acts_once_and_undo_enables_exactly_what_it_disabled(
    tenant: Tenant,
) -> None:
    tenant.act("plan", "stale_devices_disable")
    plan = tenant.last_plan()
    assert tenant.act("apply", plan) == 0
    sent = len(tenant.writes())
    assert tenant.act("apply", plan) == 0
    assert len(tenant.writes()) == sent  # nothing sent again
    disabled = {
        d for (d,) in tenant.query("SELECT object_id FROM ops.actions WHERE status = 'done'")
    }
    assert tenant.act("undo", plan) == 0
    undone = tenant.writes()[sent:]
    assert sorted(undone) == sorted(("PATCH", f"/v1.0/devices/{d}") for d in disabled)
    assert all(tenant.enabled(d) for d in disabled)


def test_an_object_changed_since_the_plan_is_reported_not_touched(tenant: Tenant) -> None:
    tenant.act("plan", "stale_devices_disable")
    plan = tenant.last_plan()
    [(changed,), *_] = tenant.query(
        "SELECT object_id FROM ops.action_plan_items WHERE plan_id = ? AND status = 'planned'",
        [plan],
    )
    tenant.emulator.tenant.update(changed, accountEnabled=False)  # someone was quicker
    assert tenant.act("apply", plan) == 0
    assert ("PATCH", f"/v1.0/devices/{changed}") not in tenant.writes()
    assert tenant.query("SELECT status, error FROM ops.actions WHERE object_id = ?", [changed]) == [
        ("skipped", "changed since the plan: accountEnabled is now False, was True")
    ]


def test_a_plan_over_the_blast_radius_is_refused_whole(
    tmp_path: Path, tenant: Tenant, capsys: pytest.CaptureFixture[str]
) -> None:
    strict = Tenant(tenant.emulator, tmp_path, max_fraction=0.05)  # the default
    assert strict.act("plan", "stale_devices_disable") == 1
    said = capsys.readouterr().out
    assert "Refused, it cannot be applied: acts on " in said
    assert "over the limit of 3 (5% of 60 devices, at most 500)" in said
    assert strict.act("apply", strict.last_plan()) == 1
    assert "was refused, nothing is sent" in capsys.readouterr().out
    assert tenant.writes() == []


def test_a_user_holding_a_directory_role_is_skipped_by_the_plan_and_refused_by_graph(
    tenant: Tenant, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Global Administrator, disabled: the plan skips it (the action app reads who holds a
    directory role); had it been planned, Graph refuses it, recorded with the request-id."""
    admin = tenant.emulator.tenant.object_at("user", 0)
    tenant.emulator.tenant.update(admin["id"], accountEnabled=False, onPremisesSyncEnabled=None)
    tenant.sync()
    assert tenant.act("plan", "disabled_users_revoke_sessions") == 0
    plan = tenant.last_plan()
    assert tenant.query(
        "SELECT status, reason FROM ops.action_plan_items WHERE object_id = ?", [admin["id"]]
    ) == [("skipped", "holds a directory role: never acted on (Graph lets only a privileged "
           "administrator change it)")]  # fmt: skip
    # Planned anyway (a role granted after the plan): Graph's 403, recorded as skipped.
    with duckdb.connect(str(tenant.db)) as con:
        con.execute(
            "UPDATE ops.action_plan_items SET status = 'planned' WHERE object_id = ?", [admin["id"]]
        )
    assert tenant.act("apply", plan) == 0
    [(status, error, request_id)] = tenant.query(
        "SELECT status, error, request_id FROM ops.actions WHERE object_id = ?", [admin["id"]]
    )
    assert status == "skipped"
    assert error.startswith(
        f"Graph refused it (Authorization_RequestDenied; request-id {request_id}): a user "
        "holding a directory role"
    )
    assert tenant.query("SELECT count(*) FROM ops.actions WHERE status = 'done'")[0][0] > 0
    # Without RoleManagement.Read.Directory, no user plan is made.
    tenant.emulator.tokens.apps[ACTION_APP.client_id] = AppRegistration(
        ACTION_APP.client_id,
        ACTION_APP.client_secret,
        ACTION_APP.permissions - {"RoleManagement.Read.Directory"},
    )
    capsys.readouterr()
    assert tenant.act("plan", "disabled_users_revoke_sessions") == 1
    assert capsys.readouterr().out.startswith(
        "act plan: the action app needs RoleManagement.Read.Directory"
    )


def test_a_429_mid_plan_is_waited_out(tenant: Tenant) -> None:
    tenant.act("plan", "stale_devices_disable")
    plan = tenant.last_plan()
    [(first,), *_] = tenant.query(
        "SELECT object_id FROM ops.action_plan_items WHERE plan_id = ? AND status = 'planned' "
        "ORDER BY object_name, object_id",
        [plan],
    )
    tenant.emulator.faults.throttle_next(f"/v1.0/devices/{first}", count=1)
    assert tenant.act("apply", plan) == 0
    statuses = [r.status for r in tenant.emulator.requests if r.path == f"/v1.0/devices/{first}"]
    assert statuses == [429, 200, 204]
    assert tenant.query("SELECT status FROM ops.actions WHERE object_id = ?", [first]) == [
        ("done",)
    ]


def test_a_stopped_apply_is_resumed_from_its_journal(tenant: Tenant) -> None:
    """An apply stopped after sending a request, before its answer: the journal holds the
    request; the next apply finds it took effect, records it done, and sends it no more."""
    tenant.act("plan", "stale_devices_disable")
    plan = tenant.last_plan()
    [(sent, name), *_] = tenant.query(
        "SELECT object_id, object_name FROM ops.action_plan_items WHERE plan_id = ? AND "
        "status = 'planned'",
        [plan],
    )
    Journal(tenant.db, plan).write(
        {"object_id": sent, "object_name": name, "action": "device.disable", "status": "sent",
         "requested_at": "2026-12-08T00:00:00+00:00"}
    )  # fmt: skip
    tenant.emulator.tenant.update(sent, accountEnabled=False)  # Graph acted on it
    assert tenant.act("apply", plan) == 0
    assert ("PATCH", f"/v1.0/devices/{sent}") not in tenant.writes()
    [(status, requested_at)] = tenant.query(
        "SELECT status, requested_at FROM ops.actions WHERE object_id = ?", [sent]
    )
    assert status == "done"
    assert requested_at is not None
    assert not Journal(tenant.db, plan).path.exists()


@pytest.mark.parametrize(
    ("verb", "args", "said"),
    [
        ("plan", ("no_such_selection",), "act plan: no selection 'no_such_selection': the "
         "selections are disabled_users_revoke_sessions, stale_devices_delete, "
         "stale_devices_disable"),
        ("plan", ("stale_devices_disable",), "act plan: selection stale_devices_disable has no "
         "parameter days; its parameters: stale_days"),
        ("apply", ("20260101-000000-abcdef",), "act apply: no plan '20260101-000000-abcdef' in "),
        ("undo", ("20260101-000000-abcdef",), "act undo: plan 20260101-000000-abcdef changed "
         "nothing"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_sends_nothing(
    verb: str, args: tuple[str, ...], said: str, tenant: Tenant, capsys: pytest.CaptureFixture[str]
) -> None:
    sets = ("days=3",) if verb == "plan" and args[0] == "stale_devices_disable" else ()
    assert tenant.act(verb, *args, sets=sets) == 1
    assert capsys.readouterr().out.startswith(said)
    assert tenant.writes() == []


def test_an_expired_plan_is_not_applied(tenant: Tenant, capsys: pytest.CaptureFixture[str]) -> None:
    tenant.act("plan", "stale_devices_disable")
    plan = tenant.last_plan()
    with duckdb.connect(str(tenant.db)) as con:
        con.execute("UPDATE ops.action_plans SET created_at = created_at - INTERVAL 25 HOUR")
    capsys.readouterr()
    assert tenant.act("apply", plan) == 1
    assert "over actions.plan_max_age_hours (24): the directory has moved on" in (
        capsys.readouterr().out
    )
    assert tenant.writes() == []


def test_a_selection_with_a_sql_error_names_it(
    tenant: Tenant,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from entra_pipeline.actions import plans

    folder = tmp_path / "selections"
    folder.mkdir()
    (folder / "broken.sql").write_text(
        "-- action: device.disable\nSELECT id AS object_id FROM staging.nothing_here\n"
    )
    monkeypatch.setattr(plans, "SELECTIONS", folder)
    capsys.readouterr()
    assert tenant.act("plan", "broken") == 1
    out = capsys.readouterr().out
    assert out.startswith("act plan: selection broken failed: Catalog Error: Table with name ")
    assert "nothing_here" in out
    assert json.loads(json.dumps(tenant.query("SELECT count(*) FROM ops.action_plans"))) == [[0]]


def test_check_reports_each_actions_permission_from_the_action_apps_token(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    from entra_pipeline.preflight import check_connector

    report = check_connector(str(tenant.config))
    found = {
        f.option: (f.status, f.permission) for f in report.calls if f.option.startswith("actions")
    }
    assert found == {
        "actions: device.disable": ("ok", "Device.ReadWrite.All + Device.Read.All"),
        "actions: device.enable": ("ok", "Device.ReadWrite.All + Device.Read.All"),
        "actions: device.delete": ("ok", "Device.ReadWrite.All + Device.Read.All"),
        "actions: user.disable": (
            "ok",
            "User.EnableDisableAccount.All + User.Read.All + RoleManagement.Read.Directory",
        ),
        "actions: user.enable": (
            "ok",
            "User.EnableDisableAccount.All + User.Read.All + RoleManagement.Read.Directory",
        ),
        "actions: user.revoke_sessions": (
            "ok",
            "User.RevokeSessions.All + User.Read.All + RoleManagement.Read.Directory",
        ),
    }
    assert report.exit_code == 0
    # Without User.RevokeSessions.All: that action is flagged; a sync can still run.
    tenant.emulator.tokens.apps[ACTION_APP.client_id] = AppRegistration(
        ACTION_APP.client_id,
        ACTION_APP.client_secret,
        ACTION_APP.permissions - {"User.RevokeSessions.All"},
    )
    report = check_connector(str(tenant.config))
    [revoke] = [f for f in report.calls if f.option == "actions: user.revoke_sessions"]
    assert revoke.status == "warning"
    assert "lacks User.RevokeSessions.All: grant it with admin consent" in revoke.detail
    assert report.exit_code == 0


def test_a_plan_applied_as_a_dagster_run_names_it_in_the_run_config(tenant: Tenant) -> None:
    import dagster as dg

    from entra_pipeline.actions.job import ACTIONS_JOB
    from entra_pipeline.config_file import load_settings
    from entra_pipeline.definitions import build_definitions

    tenant.act("plan", "stale_devices_disable")
    plan = tenant.last_plan()
    job = build_definitions(load_settings(tenant.config), str(tenant.config)).resolve_job_def(
        ACTIONS_JOB
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance,
            run_config={"ops": {"apply_action_plan": {"config": {"plan_id": plan}}}},
        )
    assert result.success
    planned = tenant.query(
        "SELECT count(*) FROM ops.action_plan_items WHERE plan_id = ? AND status = 'planned'",
        [plan],
    )
    assert (
        tenant.query(
            "SELECT count(*) FROM ops.actions WHERE plan_id = ? AND status = 'done'", [plan]
        )
        == planned
    )
    assert len(tenant.writes()) == planned[0][0]


def test_query_shows_a_record_live_beside_its_published_row(
    tenant: Tenant, capsys: pytest.CaptureFixture[str]
) -> None:
    from collections import Counter

    from entra_pipeline.actions.cli import run_query

    devices = list(tenant.emulator.tenant.devices())
    names = Counter(d["displayName"] for d in devices)
    device, other = [
        d for d in devices if d.get("accountEnabled") and names[d["displayName"]] == 1
    ][:2]
    tenant.emulator.tenant.update(device["id"], accountEnabled=False)  # since the sync
    capsys.readouterr()
    for key in (device["id"], device["displayName"]):
        assert run_query(argparse.Namespace(config=str(tenant.config), kind="device", key=key)) == 0
        said = capsys.readouterr().out.splitlines()
        assert said[0].startswith(f"device {device['displayName']} ({device['id']}), live")
        [enabled] = [line for line in said if line.split()[0] == "accountEnabled"]
        assert enabled.split() == ["accountEnabled", "true", "false", "*", "changed"]
    tenant.emulator.tenant.update(other["id"], displayName=device["displayName"])
    query = argparse.Namespace(config=str(tenant.config), kind="device", key=device["displayName"])
    assert run_query(query) == 1
    said = capsys.readouterr().out
    assert said.startswith(f"query device: 2 devices are named {device['displayName']!r} (")
    assert device["id"] in said
    assert other["id"] in said
    assert (
        run_query(argparse.Namespace(config=str(tenant.config), kind="user", key="nobody@x")) == 1
    )
    assert capsys.readouterr().out.startswith("query user: no user 'nobody@x' in the tenant")
    assert tenant.writes() == []


@pytest.mark.parametrize(
    ("actions", "said"),
    [
        ({"allowed": ["device.wipe"]}, "unknown action(s) 'device.wipe': the actions are "
         "device.disable, device.enable, device.delete, user.disable, user.enable, "
         "user.revoke_sessions"),
        ({"client_id": "SYNC"}, "actions.client_id is the sync's: actions need an app of their own"),
        ({"max_fraction": 2}, "max_fraction"),
    ],
)  # fmt: skip
def test_a_bad_actions_section_is_refused_naming_the_key(
    actions: dict[str, Any], said: str, tenant: Tenant, tmp_path: Path
) -> None:
    from entra_pipeline.config_file import load_settings
    from entra_pipeline.settings import ConfigError

    if actions.get("client_id") == "SYNC":
        actions = {"client_id": tenant.emulator.client_id}
    folder = tmp_path / "bad"
    folder.mkdir()
    bad = Tenant(tenant.emulator, folder, **actions)
    with pytest.raises(ConfigError) as refused:
        load_settings(bad.config)
    assert said in str(refused.value)


def test_the_action_app_may_use_a_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """actions.client_certificate instead of a secret: its client assertion, signed by the key
    of a certificate registered on the action app, gets the action app's token."""
    from tests.graph.test_certificate_credentials import make_certificate

    certificate = make_certificate(tmp_path, "action-app")
    app = AppRegistration(
        ACTION_APP.client_id,
        "unused-secret",
        ACTION_APP.permissions,
        certificates=(certificate.pem,),
    )
    config = EmulatorConfig(users=60, devices=60, seed=9, apps=(app,))
    with running_emulator(config) as emulator:
        monkeypatch.setenv(SECRET_VARIABLE, emulator.client_secret)
        found = Tenant.__new__(Tenant)
        found.emulator, found.db = emulator, tmp_path / "entra.duckdb"
        found.config = write_config(
            tmp_path / "connector.yaml",
            emulator,
            actions={
                "client_id": app.client_id,
                "client_certificate": {
                    "private_key_path": str(certificate.key_path),
                    "certificate_path": str(certificate.cert_path),
                },
                "max_fraction": 1.0,
            },
        )
        found.sync()
        assert found.act("plan", "stale_devices_disable") == 0
        assert found.act("apply", found.last_plan()) == 0
        assert found.query("SELECT count(*) FROM ops.actions WHERE status = 'done'")[0][0] > 0


def test_an_apply_killed_mid_request_leaves_its_audit_and_resumes(tenant: Tenant) -> None:
    """`act apply` killed (SIGKILL) while Graph is still answering one of its PATCHes: the
    journal holds a row for every request it sent; the next apply records them, acts on the
    rest, and sends none of them twice."""
    import os
    import signal
    import subprocess
    import sys
    import time

    tenant.act("plan", "stale_devices_disable")
    plan = tenant.last_plan()
    planned = [o for (o,) in tenant.query(
        "SELECT object_id FROM ops.action_plan_items WHERE plan_id = ? AND status = 'planned' "
        "ORDER BY object_name, object_id", [plan])]  # fmt: skip
    assert len(planned) >= 3
    slow = planned[1]  # the second device's PATCH takes 5 s to answer: killed meanwhile
    tenant.emulator.faults.slow_next(f"/v1.0/devices/{slow}", seconds=5, method="PATCH")
    apply = subprocess.Popen(
        [sys.executable, "-m", "entra_pipeline.cli", "act", "apply", plan, "--config",
         str(tenant.config)],
        env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    journal = Journal(tenant.db, plan)
    deadline = time.monotonic() + 60
    while not (journal.path.exists() and f'"{slow}"' in journal.path.read_text()):
        assert time.monotonic() < deadline, "the apply never sent the slow request"
        time.sleep(0.1)
    time.sleep(0.5)  # the PATCH is on the wire
    apply.send_signal(signal.SIGKILL)
    apply.wait(timeout=30)
    sent = [json.loads(line) for line in journal.path.read_text().splitlines()]
    assert [e["status"] for e in sent if e["object_id"] == slow] == ["sent"]
    assert tenant.query("SELECT count(*) FROM ops.actions") == [(0,)]  # not folded yet
    patches = [p for _, p in tenant.writes()]
    assert patches == [f"/v1.0/devices/{planned[0]}"]  # the slow one is not answered yet
    while tenant.enabled(slow):  # Graph finishes the slow PATCH, whose answer nobody reads
        assert time.monotonic() < deadline, "the slow PATCH never took effect"
        time.sleep(0.2)
    assert tenant.act("apply", plan) == 0
    audit = dict(
        tenant.query("SELECT object_id, status FROM ops.actions WHERE plan_id = ?", [plan])
    )
    assert audit == dict.fromkeys(planned, "done")
    all_patches = [p for _, p in tenant.writes()]
    assert sorted(all_patches) == sorted(f"/v1.0/devices/{o}" for o in planned)  # once each
    assert not journal.path.exists()


def test_a_failed_action_is_audited_and_notified(
    tenant: Tenant, capsys: pytest.CaptureFixture[str]
) -> None:
    """The action app lost Device.ReadWrite.All after the plan: each PATCH is refused, recorded
    failed with what to do, one action_failed notification, exit code 1."""
    tenant.act("plan", "stale_devices_disable")
    plan = tenant.last_plan()
    tenant.emulator.tokens.apps[ACTION_APP.client_id] = AppRegistration(
        ACTION_APP.client_id,
        ACTION_APP.client_secret,
        (ACTION_APP.permissions - {"Device.ReadWrite.All"}) | {"Device.Read.All"},
    )
    capsys.readouterr()
    assert tenant.act("apply", plan) == 1
    errors = {e for (e,) in tenant.query(
        "SELECT error FROM ops.actions WHERE plan_id = ? AND status = 'failed'", [plan])}  # fmt: skip
    assert len(errors) == len(tenant.query(
        "SELECT object_id FROM ops.action_plan_items WHERE plan_id = ? AND status = 'planned'",
        [plan]))  # fmt: skip
    assert all(
        e.startswith("the action app lacks Device.ReadWrite.All (Authorization_RequestDenied; ")
        and e.endswith("): grant it with admin consent")
        for e in errors
    )
    [(code, severity, message)] = tenant.query(
        "SELECT code, severity, message FROM ops.notifications WHERE run_id = ?", [plan]
    )
    assert (code, severity) == ("action_failed", "error")
    assert message.startswith(f"plan {plan}: ")
    assert "failed" in capsys.readouterr().out
