"""The `entra_id_sync` job end to end: the emulator over HTTPS, real MSAL and httpx, a DuckDB file.

Expected rows are computed from the emulator's tenant with SPEC section 3's rules, independently
of the SQL models; every fault ends in a clear outcome and untouched published data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
import yaml

from entra_pipeline.config_file import load_settings
from entra_pipeline.definitions import build_definitions, load_definitions
from entra_pipeline.emulator import Emulator, EmulatorConfig, running_emulator
from entra_pipeline.names import CONNECTOR_JOB
from entra_pipeline.resources import ConnectorResource
from tests.support import CONNECTOR_PERMISSIONS, unused_port

NEVER = {"", "0001-01-01T00:00:00Z"}


@dataclass
class Sync:
    """One configured connector against one emulator, runnable several times."""

    emulator: Emulator
    config_path: Path
    db: Path

    def run(self) -> dg.ExecuteInProcessResult:
        settings = load_settings(self.config_path)
        connector = ConnectorResource(
            config_path=str(self.config_path), max_retries=4, backoff_base_seconds=0.01
        )
        definitions = build_definitions(settings, str(self.config_path), connector)
        return definitions.resolve_job_def(CONNECTOR_JOB).execute_in_process(
            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
        )

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            return con.execute(sql, params or []).fetchall()

    def last_run(self) -> tuple[Any, ...]:
        return self.query(
            "SELECT status, error, graph_requests, graph_retries, started_at FROM ops.sync_runs "
            "ORDER BY started_at DESC LIMIT 1"
        )[0]

    def notifications(self) -> list[tuple[str, str, str]]:
        return self.query(
            "SELECT severity, code, message FROM ops.notifications WHERE run_id = "
            "(SELECT run_id FROM ops.sync_runs ORDER BY started_at DESC LIMIT 1) ORDER BY code"
        )


def _write_config(path: Path, emu: Emulator, db: Path, **options: Any) -> None:
    document: dict[str, Any] = {
        "connector_name": "Test connector",
        **emu.connection_settings("TEST_ENTRA_SECRET"),
        "duckdb_path": str(db),
        "mapping_path": str(Path(__file__).resolve().parents[1] / "mappings" / "entra_id.csv"),
        **options,
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))


@pytest.fixture
def sync_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    emulators: list[Any] = []

    def make(options: dict[str, Any] | None = None, **emulator_config: Any) -> Sync:
        manager = running_emulator(
            EmulatorConfig(**{"users": 120, "devices": 90, "seed": 11, **emulator_config})
        )
        emu = manager.__enter__()
        emulators.append(manager)
        monkeypatch.setenv("TEST_ENTRA_SECRET", emu.client_secret)
        db = tmp_path / "entra.duckdb"
        config = tmp_path / "connector.yaml"
        _write_config(config, emu, db, **(options or {}))
        return Sync(emu, config, db)

    yield make
    for manager in emulators:
        manager.__exit__(None, None, None)


def _when(value: str | None) -> datetime | None:
    if value is None or value in NEVER:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _latest(*values: str | None) -> datetime | None:
    moments = [m for m in map(_when, values) if m is not None]
    return max(moments) if moments else None


def expected_users(emu: Emulator, now: datetime, stale_days: int | None, sign_in: bool) -> set[str]:
    """Licensed users, and (only when sign-in activity was imported) recently active."""
    kept = set()
    for user in emu.tenant.users():
        if not user.get("assignedLicenses"):
            continue
        activity = user.get("signInActivity") or {}
        latest = _latest(
            activity.get("lastSignInDateTime") if sign_in else None,
            activity.get("lastNonInteractiveSignInDateTime") if sign_in else None,
            user.get("createdDateTime"),
            user.get("onPremisesLastSyncDateTime"),
        )
        if (
            sign_in
            and stale_days is not None
            and (latest is None or latest < now - timedelta(days=stale_days))
        ):
            continue
        kept.add(user["id"])
    return kept


def expected_devices(emu: Emulator, now: datetime, stale_days: int | None) -> set[str]:
    kept = set()
    for device in emu.tenant.devices():
        latest = _latest(
            device.get("approximateLastSignInDateTime"),
            device.get("registrationDateTime"),
            device.get("onPremisesLastSyncDateTime"),
        )
        if stale_days is not None and (latest is None or latest < now - timedelta(days=stale_days)):
            continue
        kept.add(device["id"])
    return kept


def _ids(sync: Sync, table: str, column: str) -> set[str]:
    return {row[0] for row in sync.query(f'SELECT "{column}" FROM {table}')}


def test_sync_publishes_raw_and_neurons_tables_matching_the_tenant(sync_factory: Any) -> None:
    sync = sync_factory()
    result = sync.run()
    assert result.success
    tenant = sync.emulator.tenant
    assert _ids(sync, "raw.users", "id") == {u["id"] for u in tenant.users()}
    assert _ids(sync, "raw.devices", "id") == {d["id"] for d in tenant.devices()}
    assert _ids(sync, "raw.groups", "id") == {g["id"] for g in tenant.groups()}
    assert sync.query("SELECT count(*) FROM raw.subscribed_skus") == [
        (len(tenant.subscribed_skus()),)
    ]
    assert sync.query("SELECT DISTINCT tenant_id FROM raw.users") == [(sync.emulator.tenant_id,)]

    status, error, requests, _retries, started = sync.last_run()
    assert (status, error) == ("success", None)
    assert requests > 0
    assert _ids(sync, "neurons.users", "User.EntraObjectId") == expected_users(
        sync.emulator, started, 90, sign_in=True
    )
    assert _ids(sync, "neurons.devices", "Device.EntraObjectId") == expected_devices(
        sync.emulator, started, 90
    )
    assert sync.notifications() == []

    # One user, every mapped value straight from Graph's object.
    user = next(
        u for u in tenant.users() if u["id"] in _ids(sync, "neurons.users", "User.EntraObjectId")
    )
    row = sync.query(
        'SELECT "User.UPN", "User.FullName", "User.Email", "User.Department", "User.Enabled" '
        'FROM neurons.users WHERE "User.EntraObjectId" = ?',
        [user["id"]],
    )
    assert row == [
        (
            user["userPrincipalName"],
            user["displayName"],
            user["mail"],
            user["department"],
            user["accountEnabled"],
        )
    ]
    # Metadata on the raw assets: row count and Graph request counters.
    materialization = result.asset_materializations_for_node("raw_entra")
    by_key = {m.asset_key.to_user_string(): m.metadata for m in materialization}
    assert by_key["raw/users"]["dagster/row_count"].value == tenant.user_count
    assert by_key["raw/users"]["graph_requests"].value >= 1


def test_group_filter_by_name_keeps_transitive_members_only(sync_factory: Any) -> None:
    sync = sync_factory(
        options={"users": {"groups": ["All Employees"], "stale_threshold_days": None}}
    )
    assert sync.run().success
    group_id = next(
        g["id"] for g in sync.emulator.tenant.groups() if g["displayName"] == "All Employees"
    )
    assert sync.query("SELECT applies_to, group_ref, group_id FROM raw.group_filters") == [
        ("users", "All Employees", group_id)
    ]
    members = {
        row[0]
        for row in sync.query(
            "SELECT member_id FROM raw.group_members WHERE group_id = ? AND member_type = 'user'",
            [group_id],
        )
    }
    assert members  # nested regional groups make All Employees non-empty
    licensed = {u["id"] for u in sync.emulator.tenant.users() if u.get("assignedLicenses")}
    assert _ids(sync, "neurons.users", "User.EntraObjectId") == licensed & members


def test_unknown_group_fails_before_publishing_and_names_it(sync_factory: Any) -> None:
    sync = sync_factory(options={"devices": {"groups": ["No Such Group"]}})
    assert not sync.run().success
    status, error, *_ = sync.last_run()
    assert status == "failure"
    assert "'No Such Group'" in error
    assert sync.query(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw'"
    ) == [(0,)]
    assert [code for _, code, _ in sync.notifications()] == ["group_not_found"]


@pytest.mark.parametrize(
    "inject",
    [
        pytest.param(
            lambda f: f.throttle_next("/v1.0/users", count=3, retry_after=1), id="429-storm"
        ),
        pytest.param(
            lambda f: f.unavailable_next("/v1.0/devices", count=2, retry_after=1), id="503"
        ),
        pytest.param(lambda f: f.gateway_timeout_next("/v1.0/groups", count=2), id="504"),
        pytest.param(lambda f: f.drop_next("/v1.0/users", count=2), id="dropped-connection"),
    ],
)
def test_transient_faults_are_retried_and_the_data_is_complete(
    sync_factory: Any, inject: Any
) -> None:
    sync = sync_factory()
    inject(sync.emulator.faults)
    assert sync.run().success
    status, _, _, retries, _ = sync.last_run()
    assert status == "success"
    assert retries >= 2
    assert _ids(sync, "raw.users", "id") == {u["id"] for u in sync.emulator.tenant.users()}
    assert _ids(sync, "raw.devices", "id") == {d["id"] for d in sync.emulator.tenant.devices()}


def test_expired_page_token_restarts_the_listing_without_duplicates(sync_factory: Any) -> None:
    sync = sync_factory()
    sync.emulator.faults.expire_page_token_next("/v1.0/users", count=1)
    assert sync.run().success
    assert sync.query("SELECT count(*), count(DISTINCT id) FROM raw.users") == [
        (sync.emulator.tenant.user_count, sync.emulator.tenant.user_count)
    ]


def test_access_token_expiring_mid_run_is_refreshed(sync_factory: Any) -> None:
    sync = sync_factory()
    sync.emulator.faults.token_ttl = 3.0
    sync.emulator.faults.slow_next("/v1.0/devices", count=1, seconds=3.5)
    assert sync.run().success
    token_requests = [r for r in sync.emulator.requests if r.path.endswith("/oauth2/v2.0/token")]
    assert len(token_requests) >= 2
    assert _ids(sync, "raw.devices", "id") == {d["id"] for d in sync.emulator.tenant.devices()}


def _published_fingerprint(sync: Sync) -> list[tuple[Any, ...]]:
    return sync.query(
        "SELECT (SELECT count(*) FROM neurons.users), (SELECT count(*) FROM raw.devices), "
        "(SELECT max(extracted_at) FROM raw.users)"
    )


def test_missing_permission_fails_names_it_and_keeps_published_tables(sync_factory: Any) -> None:
    sync = sync_factory()
    assert sync.run().success
    before = _published_fingerprint(sync)
    sync.emulator.permissions = CONNECTOR_PERMISSIONS - {"Device.Read.All"}
    assert not sync.run().success
    assert _published_fingerprint(sync) == before
    status, error, *_ = sync.last_run()
    assert status == "failure"
    assert "Device.Read.All" in error
    notes = sync.notifications()
    assert [(severity, code) for severity, code, _ in notes] == [("error", "permission_missing")]
    assert "Device.Read.All" in notes[0][2]


@pytest.mark.parametrize(
    ("variant", "problem"),
    [
        ("no_value", "with a page without `value`"),
        ("null_value", "with a `value` that is not a list of objects (None)"),
        ("array_body", "with a JSON list, not an object"),
        ("lone_surrogate", "with a lone UTF-16 surrogate escape, which is not text"),
        ("bad_timestamp", "'not a timestamp' is not a timestamp"),
        ("repeat_next_link", "with a next link it already gave on an earlier page"),
        ("foreign_next_link", "points to another host (graph.evil.example)"),
    ],
)
def test_a_page_graph_would_never_send_fails_the_run_naming_the_request(
    sync_factory: Any, variant: str, problem: str
) -> None:
    # The second run lists devices again (no delta round): the listing's pages are spoiled.
    sync = sync_factory({"sync": {"mode": "full"}})
    assert sync.run().success
    before = _published_fingerprint(sync)
    sync.emulator.faults.hostile_next(variant, "/devices", count=3)
    assert not sync.run().success
    assert _published_fingerprint(sync) == before
    [(severity, code, message)] = sync.notifications()
    assert (severity, code) == ("error", "graph_request_failed")
    assert "GET /v1.0/devices" in message
    assert problem in message
    if variant != "foreign_next_link":  # that one is refused before any request is sent
        devices = {r.request_id for r in sync.emulator.requests if r.path == "/v1.0/devices"}
        assert any(f"request-id {request_id}" in message for request_id in devices)
    status, error, *_ = sync.last_run()
    assert status == "failure"
    assert problem in error


def test_non_premium_tenant_skips_sign_in_and_the_user_stale_filter(sync_factory: Any) -> None:
    sync = sync_factory(premium=False)
    assert sync.run().success
    *_, started = sync.last_run()
    assert [(s, c) for s, c, _ in sync.notifications()] == [
        ("warning", "sign_in_activity_unavailable"),
        ("warning", "stale_filter_skipped"),
    ]
    assert sync.query(
        "SELECT status FROM raw.extraction_status WHERE collection = 'sign_in_activity'"
    ) == [("unavailable",)]
    assert _ids(sync, "neurons.users", "User.EntraObjectId") == expected_users(
        sync.emulator, started, 90, sign_in=False
    )
    assert sync.query('SELECT count(*) FROM neurons.users WHERE "User.LastLogon" IS NOT NULL') == [
        (0,)
    ]


def stale_warnings(sync: Sync) -> list[tuple[Any, ...]]:
    return sync.query(
        "SELECT severity, message, details FROM ops.notifications WHERE code = 'stale_filter_skipped'"
    )


def test_stale_filter_skipped_names_the_threshold_and_why_sign_in_activity_is_missing(
    sync_factory: Any,
) -> None:
    sync = sync_factory({"users": {"stale_threshold_days": 30}}, premium=False)
    assert sync.run().success
    [(reason,)] = sync.query(
        "SELECT reason FROM raw.extraction_status WHERE collection = 'sign_in_activity'"
    )
    assert "P1" in reason
    [(severity, message, details)] = stale_warnings(sync)
    assert severity == "warning"
    assert message == (
        "The user stale threshold of 30 days was not applied because sign-in activity was "
        f"not imported ({reason}); every licensed user was kept."
    )
    assert json.loads(details) == {
        "reason": reason,
        "sign_in_activity_status": "unavailable",
        "stale_threshold_days": 30,
    }


def test_stale_filter_skipped_when_sign_in_import_is_off(sync_factory: Any) -> None:
    sync = sync_factory({"users": {"stale_threshold_days": 30, "import_sign_in_activity": False}})
    assert sync.run().success
    [(severity, message, details)] = stale_warnings(sync)
    assert (severity, json.loads(details)["sign_in_activity_status"]) == ("warning", "skipped")
    assert "users.import_sign_in_activity is false" in message


def test_no_stale_warning_when_sign_in_was_imported_or_the_threshold_is_off(
    sync_factory: Any,
) -> None:
    imported = sync_factory({"users": {"stale_threshold_days": 30}})
    assert imported.run().success
    assert stale_warnings(imported) == []
    off = sync_factory({"users": {"stale_threshold_days": None}}, premium=False)
    assert off.run().success
    notes = off.notifications()
    assert [code for _, code, _ in notes if code != "delta_resync"] == [
        "sign_in_activity_unavailable"
    ]
    # Another emulator (another port) on the same file: the stored delta links are not followed.
    assert {m for _, code, m in notes if code == "delta_resync"} == {
        f"{table}: read in full because the stored delta link is for another Graph endpoint "
        "than graph_url."
        for table in ("users", "devices", "groups")
    }
    assert stale_warnings(off) == []


def test_sync_without_audit_log_permission_succeeds_without_sign_in_activity(
    sync_factory: Any,
) -> None:
    sync = sync_factory(
        {"users": {"stale_threshold_days": 30}},
        permissions=set(CONNECTOR_PERMISSIONS - {"AuditLog.Read.All"}),
    )
    assert sync.run().success
    notes = {code: message for _, code, message in sync.notifications()}
    assert set(notes) == {"sign_in_activity_unavailable", "stale_filter_skipped"}
    assert "AuditLog.Read.All" in notes["sign_in_activity_unavailable"]
    assert sync.query(
        "SELECT status FROM raw.extraction_status WHERE collection = 'sign_in_activity'"
    ) == [("unavailable",)]
    *_, started = sync.last_run()
    assert _ids(sync, "neurons.users", "User.EntraObjectId") == expected_users(
        sync.emulator, started, 30, sign_in=False
    )


def test_wrong_secret_fails_with_a_clear_message_that_hides_it(
    sync_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync = sync_factory()
    wrong = "definitely-the-wrong-secret-123"
    monkeypatch.setenv("TEST_ENTRA_SECRET", wrong)
    assert not sync.run().success
    status, error, *_ = sync.last_run()
    assert status == "failure"
    assert "AADSTS7000215" in error
    assert "client secret" in error.lower()
    assert wrong not in error
    assert [code for _, code, _ in sync.notifications()] == ["authentication_failed"]


def test_unreachable_graph_writes_service_unreachable_and_keeps_data(sync_factory: Any) -> None:
    sync = sync_factory()
    assert sync.run().success
    before = _published_fingerprint(sync)
    document = yaml.safe_load(sync.config_path.read_text())
    document["authority_host"] = document["graph_url"] = f"https://127.0.0.1:{unused_port()}"
    sync.config_path.write_text(yaml.safe_dump(document))
    assert not sync.run().success
    assert _published_fingerprint(sync) == before
    assert [code for _, code, _ in sync.notifications()] == ["service_unreachable"]


def test_secret_never_reaches_the_database_dagster_storage_or_logs(
    sync_factory: Any,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sync = sync_factory()
    secret = sync.emulator.client_secret
    settings = load_settings(sync.config_path)
    storage = tmp_path / "dagster_home"
    storage.mkdir()
    with dg.DagsterInstance.local_temp(str(storage)) as instance:
        definitions = build_definitions(settings, str(sync.config_path))
        assert (
            definitions.resolve_job_def(CONNECTOR_JOB).execute_in_process(instance=instance).success
        )
        # A failing run too: errors are where secrets leak.
        sync.emulator.permissions = CONNECTOR_PERMISSIONS - {"User.Read.All"}
        definitions.resolve_job_def(CONNECTOR_JOB).execute_in_process(
            instance=instance, raise_on_error=False
        )
        events = [json.dumps(str(e)) for e in instance.all_logs(instance.get_runs()[0].run_id)]
    captured = capfd.readouterr()
    assert secret not in captured.out + captured.err + caplog.text
    assert not any(secret in event for event in events)
    needle = secret.encode()
    leaked = [
        str(path)
        for path in tmp_path.rglob("*")
        if path.is_file() and path.name != "connector.yaml" and needle in path.read_bytes()
    ]
    assert leaked == []


def test_classic_dagster_job_execute_runs_the_sync_and_records_it_once(
    sync_factory: Any, tmp_path: Path
) -> None:
    sync = sync_factory()
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        **os.environ,
        "ENTRA_CONNECTOR_CONFIG": str(sync.config_path),
        "DAGSTER_HOME": str(home),
        "TEST_ENTRA_SECRET": sync.emulator.client_secret,
    }
    completed = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "job",
            "execute",
            "-m",
            "entra_pipeline.definitions",
            "-j",
            CONNECTOR_JOB,
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    # The command initialises resources again after the run to load outputs: still one run.
    assert sync.query("SELECT job, status FROM ops.sync_runs") == [(CONNECTOR_JOB, "success")]
    assert _ids(sync, "raw.users", "id") == {u["id"] for u in sync.emulator.tenant.users()}
    assert sync.emulator.client_secret not in completed.stdout + completed.stderr


def test_a_run_with_an_invalid_config_is_recorded_in_the_configured_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not in ./data/entra.duckdb of whatever folder the run happens to start in.
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "warehouse" / "entra.duckdb"
    config = tmp_path / "connector.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "tenant_id": "contoso.onmicrosoft.com",
                "client_id": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
                "client_secret": "${TEST_ENTRA_SECRET}",
                "duckdb_path": str(db),
                "devices": {"join_types": ["azure_joined"]},
            }
        )
    )
    monkeypatch.setenv("ENTRA_CONNECTOR_CONFIG", str(config))
    monkeypatch.setenv("TEST_ENTRA_SECRET", "not-used-the-config-is-invalid")
    result = (
        load_definitions()
        .resolve_job_def(CONNECTOR_JOB)
        .execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    )
    assert not result.success
    assert not (tmp_path / "data").exists()
    with duckdb.connect(str(db), read_only=True) as con:
        [(status, error)] = con.execute("SELECT status, error FROM ops.sync_runs").fetchall()
    assert status == "failure"
    assert "devices.join_types.0: 'azure_joined' is not allowed" in error


def test_the_published_file_opens_in_the_duckdb_cli_the_venv_ships(sync_factory: Any) -> None:
    # README: analysts run `.venv/bin/duckdb -readonly <file>`; the file must be one it can read.
    sync = sync_factory()
    assert sync.run().success
    [(users,)] = sync.query("SELECT count(*) FROM neurons.users")
    cli = Path(sys.executable).with_name("duckdb")
    answer = subprocess.run(
        [
            str(cli),
            "-readonly",
            "-csv",
            "-noheader",
            str(sync.db),
            "-c",
            "SELECT count(*) FROM neurons.users",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert answer.stdout.strip() == str(users)
    assert users > 0


def _preview(result: dg.ExecuteInProcessResult, key: str) -> str:
    [materialization] = [
        m
        for m in result.asset_materializations_for_node("neurons__users")
        if m.asset_key.to_user_string() == key
    ] or [None]
    assert materialization is not None
    return str(materialization.metadata["preview"].value)


@pytest.mark.parametrize("previews", ["masked", "full"])
def test_person_previews_in_dagster_are_masked_unless_configured(
    sync_factory: Any, previews: str
) -> None:
    options = {} if previews == "masked" else {"dagster_previews": "full"}
    sync = sync_factory(options)
    result = sync.run()
    assert result.success
    upns = {upn for (upn,) in sync.query('SELECT "User.UPN" FROM neurons.users')}
    preview = _preview(result, "neurons/users")
    assert preview.startswith("| tenant_id | connector | User.EntraObjectId |")
    if previews == "masked":
        assert "•••" in preview
        assert "@" not in preview
    else:
        assert any(upn in preview for upn in upns)


def test_the_run_log_shows_progress_per_collection_and_what_was_published(
    sync_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("entra_pipeline.graph.listing.PROGRESS_SECONDS", 0.0)  # every page
    sync = sync_factory()
    sync.emulator.faults.throttle_next("/devices", count=1, retry_after=1)
    settings = load_settings(sync.config_path)
    connector = ConnectorResource(
        config_path=str(sync.config_path), max_retries=4, backoff_base_seconds=0.01
    )
    definitions = build_definitions(settings, str(sync.config_path), connector)
    with dg.DagsterInstance.ephemeral() as instance:
        result = definitions.resolve_job_def(CONNECTOR_JOB).execute_in_process(instance=instance)
        entries = instance.all_logs(result.run_id)
        messages = [entry.user_message for entry in entries]
    assert result.success
    for table in ("users", "devices", "groups", "subscribed_skus", "sign_in_activity"):
        assert any(
            m.startswith(f"{table}: ") and "rows/s" in m and m.endswith("(done)") for m in messages
        ), table
    # Filtering the run log by the step that reads Graph shows its progress lines.
    progress = [e for e in entries if e.user_message.endswith("(done)")]
    assert progress
    assert {e.step_key for e in progress} == {"raw_entra"}
    assert any(m.startswith("devices: ") and "1 throttled" in m for m in messages)
    # The first request for devices takes the latest delta link: the 429 is its answer.
    assert any("GET /v1.0/devices/delta failed (429 TooManyRequests" in m for m in messages)
    [published] = [m for m in messages if m.startswith("Published ")]
    assert published.startswith(f"Published 20 tables to {sync.db}: history.changes=0, ")


def test_a_failed_run_ends_saying_nothing_was_published(sync_factory: Any) -> None:
    sync = sync_factory(permissions=set(CONNECTOR_PERMISSIONS - {"Device.Read.All"}))
    settings = load_settings(sync.config_path)
    definitions = build_definitions(settings, str(sync.config_path))
    with dg.DagsterInstance.ephemeral() as instance:
        result = definitions.resolve_job_def(CONNECTOR_JOB).execute_in_process(
            instance=instance, raise_on_error=False
        )
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert not result.success
    [said] = [m for m in messages if m.startswith("Nothing published")]
    assert said.startswith(f"Nothing published to {sync.db}; the previous tables are kept")
    assert "Device.Read.All" in said


def test_each_run_records_its_connector_tenant_config_and_options_as_tags(
    sync_factory: Any,
) -> None:
    sync = sync_factory({"devices": {"join_types": ["entra_joined"], "stale_threshold_days": 30}})
    result = sync.run()
    assert result.success
    tags = result.dagster_run.tags
    assert tags["entra_pipeline/connector"] == "Test connector"
    assert tags["entra_pipeline/tenant"] == sync.emulator.tenant_id
    assert tags["entra_pipeline/config"] == str(sync.config_path.resolve())
    assert tags["entra_pipeline/warehouse"] == str(sync.db.resolve())
    options = json.loads(tags["entra_pipeline/options"])
    assert options["devices"] == {
        "stale_threshold_days": 30,
        "join_types": ["entra_joined"],
        "groups": [],
    }
    assert sync.emulator.client_secret not in json.dumps(dict(tags))


def test_after_a_failed_check_dagster_shows_the_published_row_count(sync_factory: Any) -> None:
    sync = sync_factory()
    settings = load_settings(sync.config_path)
    definitions = build_definitions(settings, str(sync.config_path))
    users = dg.AssetKey(["neurons", "users"])
    with dg.DagsterInstance.ephemeral() as instance:
        job = definitions.resolve_job_def(CONNECTOR_JOB)
        assert job.execute_in_process(instance=instance).success
        [(published,)] = sync.query("SELECT count(*) FROM neurons.users")
        # One licensed user gets an address the e-mail rule refuses: the blocking check fails.
        licensed = next(u for u in sync.emulator.tenant.users() if u.get("assignedLicenses"))
        sync.emulator.tenant.update(licensed["id"], mail="not an e-mail")
        failed = job.execute_in_process(instance=instance, raise_on_error=False)
        assert not failed.success
        latest = instance.get_latest_materialization_event(users)
    assert sync.query("SELECT count(*) FROM neurons.users") == [(published,)]
    assert latest is not None
    assert latest.run_id == ""  # reported by the publication, not by the failed run's step
    materialization = latest.asset_materialization
    assert materialization is not None
    assert materialization.metadata["dagster/row_count"].value == published
    assert materialization.metadata["published"].value is True
    assert materialization.metadata["unpublished_run"].value == failed.run_id


def test_selecting_one_raw_table_extracts_and_publishes_only_it(sync_factory: Any) -> None:
    # Listed in full each run (the subset of a delta run: tests/test_incremental_sync.py).
    sync = sync_factory({"devices": {"groups": ["Dept - Sales"]}, "sync": {"mode": "full"}})
    assert sync.run().success
    before = dict(sync.query("SELECT collection, extracted_at FROM raw.extraction_status"))
    devices_before = sync.query("SELECT max(extracted_at), count(*) FROM raw.devices")
    seen = len(sync.emulator.requests)

    settings = load_settings(sync.config_path)
    connector = ConnectorResource(config_path=str(sync.config_path), max_retries=1)
    job = build_definitions(settings, str(sync.config_path), connector).resolve_job_def(
        CONNECTOR_JOB
    )
    result = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        asset_selection=[dg.AssetKey(["raw", "users"])],
        raise_on_error=False,
    )

    assert result.success
    paths = {r.path for r in sync.emulator.requests[seen:] if r.path.startswith("/v1.0")}
    assert paths == {"/v1.0/users"}
    materialized = {"/".join(e.asset_key.path) for e in result.get_asset_materialization_events()}
    # raw.extraction_status describes the users just landed: written, and reported, with them.
    assert materialized == {"raw/users", "raw/extraction_status"}
    after = dict(sync.query("SELECT collection, extracted_at FROM raw.extraction_status"))
    assert set(after) == set(before)
    assert after["users"] > before["users"]
    assert {t: after[t] for t in after if t != "users"} == {
        t: before[t] for t in before if t != "users"
    }
    assert sync.query("SELECT max(extracted_at), count(*) FROM raw.devices") == devices_before
    [(users_at,)] = sync.query("SELECT DISTINCT extracted_at FROM raw.users")
    assert users_at == after["users"]
    [(rows,)] = sync.query(
        "SELECT rows_per_table::VARCHAR FROM ops.sync_runs ORDER BY started_at DESC LIMIT 1"
    )
    assert set(json.loads(rows)) == {"raw.users", "raw.extraction_status"}
