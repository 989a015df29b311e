"""The `reports.*` tables after a sync against the emulator, row for row against answers computed
by hand from the emulator's tenant: licences held by disabled or idle users, per SKU, and devices
needing a look, each with its reason."""

from __future__ import annotations

import argparse
import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from entra_pipeline.emulator import Emulator
from entra_pipeline.run_once import run_sync
from tests.operations.operate_fixtures import SECRET_VARIABLE, write_config

NEVER = ("", "0001-01-01T00:00:00Z")


def _when(text: str | None) -> dt.datetime | None:
    return None if text in (None, *NEVER) else dt.datetime.fromisoformat(str(text))


@pytest.fixture
def config_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    def write(emulator: Emulator) -> Path:
        monkeypatch.setenv(SECRET_VARIABLE, emulator.client_secret)
        return write_config(tmp_path / "connector.yaml", emulator)

    return write


@pytest.fixture
def published(emulator: Emulator, config_for: Callable[..., Path]) -> tuple[Path, dt.datetime]:
    config = config_for(emulator)
    started = dt.datetime.now(dt.UTC)
    assert run_sync(argparse.Namespace(config=str(config), full=False)) == 0
    return config.with_name("entra.duckdb"), started


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_licence_waste_is_every_licensed_disabled_or_idle_user_with_its_reason(
    emulator: Emulator, published: tuple[Path, dt.datetime]
) -> None:
    db, now = published
    skus = {s["skuId"]: s["skuPartNumber"] for s in emulator.tenant.subscribed_skus()}
    expected = {}
    for user in emulator.tenant.users():
        if not user.get("assignedLicenses"):
            continue
        last = _when((user.get("signInActivity") or {}).get("lastSuccessfulSignInDateTime"))
        since = last or _when(user.get("createdDateTime"))
        if not user.get("accountEnabled", True):
            expected[user["id"]] = "disabled"
        elif since is not None and since < now - dt.timedelta(days=90):
            expected[user["id"]] = (
                "never signed in" if last is None else "no successful sign-in for more than 90 days"
            )
    assert expected  # the tenant has some of each kind the test reads
    assert dict(_rows(db, "SELECT id, reason FROM reports.licence_waste")) == expected
    per_sku: Counter[tuple[str, bool]] = Counter()
    for user in emulator.tenant.users():
        if user["id"] in expected:
            for licence in user["assignedLicenses"]:
                per_sku[(skus[licence["skuId"]], expected[user["id"]] == "disabled")] += 1
    by_sku = {
        sku: (
            per_sku[(sku, True)] + per_sku[(sku, False)],
            per_sku[(sku, True)],
            per_sku[(sku, False)],
        )
        for sku, _ in per_sku
    }
    assert {
        sku: (users, disabled, idle)
        for sku, users, disabled, idle in _rows(
            db, "SELECT sku, users, disabled_users, idle_users FROM reports.licence_waste_by_sku"
        )
    } == by_sku


def test_device_hygiene_names_each_device_and_reason(
    emulator: Emulator, published: tuple[Path, dt.datetime]
) -> None:
    db, now = published
    devices = list(emulator.tenant.devices())
    activity = {
        d["id"]: max(
            (t for t in (_when(d.get(k)) for k in (
                "approximateLastSignInDateTime", "registrationDateTime",
                "onPremisesLastSyncDateTime")) if t is not None),
            default=None,
        )
        for d in devices
    }  # fmt: skip
    expected: set[tuple[str, str]] = set()
    by_name: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for device in devices:
        last = activity[device["id"]]
        if last is None or last < now - dt.timedelta(days=90):
            expected.add((device["id"], "stale"))
        if not device.get("accountEnabled", True):
            expected.add((device["id"], "disabled"))
        if not emulator.tenant.registered_owners(device["id"]):
            expected.add((device["id"], "ownerless"))
        if device.get("displayName"):
            by_name[device["displayName"]].append(device)
    for same in by_name.values():
        newest = min(same, key=lambda d: (-(activity[d["id"]] or dt.datetime.min.replace(
            tzinfo=dt.UTC)).timestamp(), d["id"]))  # fmt: skip
        expected |= {(d["id"], "duplicate") for d in same if len(same) > 1 and d is not newest}
    assert set(_rows(db, "SELECT id, reason FROM reports.device_hygiene")) == expected
    assert {reason for _, reason in expected} >= {"stale", "disabled", "ownerless"}


def test_each_report_has_a_warning_check_with_its_count(
    emulator: Emulator, config_for: Callable[..., Path]
) -> None:
    import dagster as dg

    from entra_pipeline.config_file import load_settings
    from entra_pipeline.definitions import build_definitions
    from entra_pipeline.names import CONNECTOR_JOB

    config = config_for(emulator)
    job = build_definitions(load_settings(config), str(config)).resolve_job_def(CONNECTOR_JOB)
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance)
    assert result.success  # a warning never stops the publication
    checks = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and e.asset_check_evaluation_data.asset_key.path[0] == "reports"
    }
    db = config.with_name("entra.duckdb")
    for table in ("licence_waste", "licence_waste_by_sku", "device_hygiene"):
        evaluation = checks[f"{table}_empty"]
        [(rows,)] = _rows(db, f"SELECT count(*) FROM reports.{table}")
        assert evaluation.metadata["rows"].value == rows
        assert evaluation.severity == dg.AssetCheckSeverity.WARN
        assert evaluation.passed is (rows == 0)
