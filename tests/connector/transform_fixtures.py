"""Helpers for the transform tests: a hand-built raw layer in the published DuckDB file, connector
settings, and a warehouse whose run starts at a fixed instant so thresholds have exact boundaries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import yaml

from entra_pipeline.connector.definitions import transform_definitions
from entra_pipeline.connector.raw_layer import (
    DESCRIPTIONS,
    EXTRACTION_STATUS_DOCS,
    GROUP_FILTERS_DOCS,
    LANDED,
)
from entra_pipeline.resources import ConnectorResource
from entra_pipeline.warehouse.docs import document_table
from entra_pipeline.warehouse.loading import PROVENANCE_COLUMNS, PROVENANCE_DOCS
from entra_pipeline.warehouse.resource import Warehouse

REPO = Path(__file__).resolve().parents[2]
SHIPPED_MAPPING = REPO / "mappings" / "entra_id.csv"
TENANT = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
CLIENT = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"
NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)

RAW_COLUMNS: dict[str, dict[str, str]] = {
    **{landed.table: landed.columns for landed in LANDED},
    "group_filters": {"applies_to": "VARCHAR", "group_ref": "VARCHAR", "group_id": "VARCHAR"},
    "extraction_status": {"collection": "VARCHAR", "status": "VARCHAR", "reason": "VARCHAR"},
}
# The raw layer's documentation, which the staging models inherit (columns_from).
RAW_DOCS: dict[str, dict[str, str]] = {
    **{landed.table: {**PROVENANCE_DOCS, **landed.docs} for landed in LANDED},
    "group_filters": GROUP_FILTERS_DOCS,
    "extraction_status": EXTRACTION_STATUS_DOCS,
}


def graph_time(moment: datetime) -> str:
    """A timestamp as Graph writes it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def days_ago(days: float, seconds: float = 0) -> str:
    return graph_time(NOW - timedelta(days=days, seconds=seconds))


@dataclass
class RawLayer:
    """Rows of each raw table, as the raw assets write them (nested objects as Python values)."""

    users: list[dict[str, Any]] = field(default_factory=list)
    sign_in_activity: list[dict[str, Any]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    subscribed_skus: list[dict[str, Any]] = field(default_factory=list)
    group_members: list[dict[str, Any]] = field(default_factory=list)
    group_filters: list[dict[str, Any]] = field(default_factory=list)
    extraction_status: list[dict[str, Any]] = field(default_factory=list)


def write_raw(db: Path, raw: RawLayer) -> None:
    """Replace every raw table in the published file (a run copies it into its work copy)."""
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS raw")
        for table, columns in RAW_COLUMNS.items():
            typed = {**PROVENANCE_COLUMNS, **columns}
            ddl = ", ".join(f'"{name}" {kind}' for name, kind in typed.items())
            con.execute(f"CREATE OR REPLACE TABLE raw.{table} ({ddl})")
            document_table(con, f"raw.{table}", DESCRIPTIONS[table], RAW_DOCS[table])
            rows = [
                [TENANT, NOW, *(_value(row.get(name), kind) for name, kind in columns.items())]
                for row in getattr(raw, table)
            ]
            if rows:
                marks = ", ".join("?" for _ in typed)
                con.executemany(f"INSERT INTO raw.{table} VALUES ({marks})", rows)


def _value(value: Any, kind: str) -> Any:
    if kind == "JSON" and value is not None:
        return json.dumps(value)
    return value


class FrozenClockWarehouse(Warehouse):
    """The warehouse, with the run's start (the `now` of every threshold) fixed at NOW."""

    def run_started_at(self) -> datetime:
        return NOW


def connector(tmp_path: Path, mapping: Path = SHIPPED_MAPPING, **options: Any) -> ConnectorResource:
    """Connector settings with every option off unless given: devices__join_types=[...] etc."""
    document: dict[str, Any] = {
        "tenant_id": TENANT,
        "client_id": CLIENT,
        "client_secret": "not-a-real-secret",
        "mapping_path": str(mapping),
        "devices": {"stale_threshold_days": None, "join_types": [], "groups": []},
        "users": {"stale_threshold_days": None, "groups": [], "import_sign_in_activity": True},
    }
    for name, value in options.items():
        section, key = name.split("__")
        document[section][key] = value
    path = tmp_path / f"connector-{len(list(tmp_path.glob('connector-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return ConnectorResource(config_path=str(path))


TRANSFORM = transform_definitions()


def transform_assets(*keys: str) -> list[dg.AssetsDefinition]:
    """The transform assets (and checks) whose keys start with one of `keys` (all if none)."""
    definitions = [*TRANSFORM.assets, *TRANSFORM.asset_checks]  # type: ignore[misc]
    chosen = [
        d
        for d in definitions
        if not keys or any(k.to_user_string().startswith(keys) for k in _keys_of(d))
    ]
    return chosen


def _keys_of(definition: Any) -> Sequence[dg.AssetKey]:
    if isinstance(definition, dg.AssetChecksDefinition):
        return [key.asset_key for key in definition.check_keys]
    return list(definition.keys)


@dataclass
class Transform:
    """Runs the transform assets against one published DuckDB file."""

    db: Path
    tmp_path: Path

    def run(
        self, connector: ConnectorResource, *keys: str, raise_on_error: bool = True
    ) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            transform_assets(*keys),
            resources={
                "warehouse": FrozenClockWarehouse(path=str(self.db), tenant_id=TENANT),
                "connector": connector,
            },
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=raise_on_error,
        )

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            return con.execute(sql, params or []).fetchall()

    def ids(self, table: str, column: str = "id") -> list[str]:
        return [row[0] for row in self.query(f'SELECT "{column}" FROM {table} ORDER BY 1')]

    def columns(self, table: str) -> list[str]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            return [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]

    def notifications(self, code: str) -> list[tuple[str, str, dict[str, Any]]]:
        rows = self.query(
            "SELECT severity, message, details FROM ops.notifications WHERE code = ? "
            "ORDER BY notified_at",
            [code],
        )
        return [(severity, message, json.loads(details)) for severity, message, details in rows]


# -- a tenant where every filter boundary is known -------------------------------------------------
# The stale tests use a 30-day threshold: activity at CUTOFF is kept, one second earlier is dropped.

STALE_DAYS = 30
CUTOFF = days_ago(STALE_DAYS)
JUST_BEFORE = days_ago(STALE_DAYS, seconds=1)
LONG_AGO = days_ago(400)
RECENTLY = days_ago(1)
NEVER = "0001-01-01T00:00:00Z"


def user(
    user_id: str, licences: Sequence[str] | None = ("sku-e3",), **properties: Any
) -> dict[str, Any]:
    """A Graph user, licensed and created long ago unless told otherwise."""
    return {
        "id": user_id,
        "userPrincipalName": f"{user_id}@contoso.com",
        "displayName": user_id.replace("-", " ").title(),
        "mail": f"{user_id}@contoso.com",
        "accountEnabled": True,
        "userType": "Member",
        "createdDateTime": LONG_AGO,
        "assignedLicenses": None
        if licences is None
        else [{"skuId": sku, "disabledPlans": []} for sku in licences],
        **properties,
    }


def sign_in(user_id: str, **activity: str) -> dict[str, Any]:
    return {"id": user_id, "signInActivity": activity}


def device(device_id: str, trust_type: str | None, **properties: Any) -> dict[str, Any]:
    """A Graph device registered long ago unless told otherwise."""
    return {
        "id": device_id,
        "deviceId": f"dev-{device_id}",
        "displayName": device_id.upper(),
        "operatingSystem": "Windows",
        "operatingSystemVersion": "10.0.22631",
        "trustType": trust_type,
        "accountEnabled": True,
        "registrationDateTime": LONG_AGO,
        **properties,
    }


def member(group_id: str, member_id: str, member_type: str) -> dict[str, Any]:
    return {"group_id": group_id, "member_id": member_id, "member_type": member_type}


LICENSED_USERS = [
    "u-created-before",
    "u-created-boundary",
    "u-guest",
    "u-no-activity",
    "u-noninteractive-before",
    "u-noninteractive-boundary",
    "u-onprem-before",
    "u-onprem-boundary",
    "u-signin-before",
    "u-signin-boundary",
    "u-successful-only",
]
ALL_DEVICES = [
    "d-no-activity",
    "d-onprem-before",
    "d-onprem-boundary",
    "d-recent-no-trust",
    "d-recent-workplace",
    "d-registered-before",
    "d-registered-boundary",
    "d-signin-before",
    "d-signin-boundary",
]


def contoso(sign_in_status: str = "complete", reason: str | None = None) -> RawLayer:
    """The boundary tenant; `sign_in_status` is what raw.extraction_status says of sign-in."""
    return RawLayer(
        users=[
            user(
                "u-signin-boundary",
                licences=["sku-unknown", "sku-ems", "sku-e3"],
                displayName="Zoë O'Brien",
                givenName="Zoë",
                surname="O'Brien",
                businessPhones=["+1 555 0100", "+1 555 0101"],
                manager={"id": "u-boss", "userPrincipalName": "boss@contoso.com"},
                onPremisesExtensionAttributes={"extensionAttribute3": "cost-centre-42"},
                city="Zürich",
            ),
            user("u-signin-before"),
            user("u-noninteractive-boundary"),
            user("u-noninteractive-before"),
            user("u-created-boundary", createdDateTime=CUTOFF),
            user("u-created-before", createdDateTime=JUST_BEFORE),
            user("u-onprem-boundary", onPremisesLastSyncDateTime=CUTOFF),
            user("u-onprem-before", onPremisesLastSyncDateTime=JUST_BEFORE),
            user("u-successful-only"),
            user("u-no-activity", createdDateTime=""),
            user(
                "u-guest",
                userType="Guest",
                userPrincipalName="alice_fabrikam.com#EXT#@contoso.onmicrosoft.com",
                mail="alice@fabrikam.com",
            ),
            user("u-unlicensed", licences=[], createdDateTime=RECENTLY),
            user("u-guest-unlicensed", licences=None, userType="Guest", createdDateTime=RECENTLY),
        ],
        sign_in_activity=[
            sign_in(
                "u-signin-boundary", lastSignInDateTime=CUTOFF, lastSuccessfulSignInDateTime=""
            ),
            sign_in("u-signin-before", lastSignInDateTime=JUST_BEFORE),
            sign_in(
                "u-noninteractive-boundary",
                lastSignInDateTime="",
                lastNonInteractiveSignInDateTime=CUTOFF,
            ),
            sign_in(
                "u-noninteractive-before",
                lastSignInDateTime=NEVER,
                lastNonInteractiveSignInDateTime=JUST_BEFORE,
            ),
            sign_in("u-created-before", lastSignInDateTime=NEVER),
            sign_in(
                "u-successful-only",
                lastSignInDateTime=LONG_AGO,
                lastSuccessfulSignInDateTime=RECENTLY,
            ),
            sign_in("u-guest", lastSignInDateTime=days_ago(2)),
            sign_in("u-unlicensed", lastSignInDateTime=RECENTLY),
        ],
        devices=[
            device(
                "d-signin-boundary",
                "AzureAd",
                approximateLastSignInDateTime=CUTOFF,
                registeredOwners=[
                    {"id": "u-guest", "userPrincipalName": "owner@contoso.com"},
                    {"id": "u-2", "userPrincipalName": "second@contoso.com"},
                ],
                isCompliant=True,
                isManaged=True,
                manufacturer="Lenovo",
                model="T14",
            ),
            device("d-signin-before", "AzureAd", approximateLastSignInDateTime=JUST_BEFORE),
            device(
                "d-registered-boundary",
                "Workplace",
                registrationDateTime=CUTOFF,
                approximateLastSignInDateTime="",
            ),
            device(
                "d-registered-before",
                "Workplace",
                registrationDateTime=JUST_BEFORE,
                approximateLastSignInDateTime=NEVER,
            ),
            device("d-onprem-boundary", "ServerAd", onPremisesLastSyncDateTime=CUTOFF),
            device("d-onprem-before", "ServerAd", onPremisesLastSyncDateTime=JUST_BEFORE),
            device(
                "d-no-activity",
                None,
                registrationDateTime="",
                approximateLastSignInDateTime=NEVER,
                onPremisesLastSyncDateTime=None,
            ),
            device("d-recent-no-trust", None, approximateLastSignInDateTime=RECENTLY),
            device("d-recent-workplace", "Workplace", approximateLastSignInDateTime=RECENTLY),
        ],
        groups=[
            {"id": "g-obrien", "displayName": "O'Brien's team"},
            {"id": "g-obrien-sub", "displayName": "O'Brien's interns"},
            {"id": "g-laptops", "displayName": "Laptops"},
            {"id": "g-laptops-berlin", "displayName": "Laptops Berlin"},
        ],
        subscribed_skus=[
            {"skuId": "sku-e3", "skuPartNumber": "ENTERPRISEPACK"},
            {"skuId": "sku-ems", "skuPartNumber": "EMS"},
        ],
        # transitiveMembers of each filter group: nested groups' members are listed too.
        group_members=[
            member("g-obrien", "u-signin-boundary", "user"),
            member("g-obrien", "u-unlicensed", "user"),
            member("g-obrien", "g-obrien-sub", "group"),
            member("g-obrien", "u-guest", "user"),
            member("g-obrien", "u-created-before", "user"),
            member("g-obrien", "d-signin-before", "device"),
            member("g-laptops", "d-signin-boundary", "device"),
            member("g-laptops", "g-laptops-berlin", "group"),
            member("g-laptops", "d-recent-workplace", "device"),
            member("g-laptops", "d-registered-before", "device"),
            member("g-laptops", "u-signin-before", "user"),
        ],
        extraction_status=[
            {"collection": "users", "status": "complete", "reason": None},
            {"collection": "sign_in_activity", "status": sign_in_status, "reason": reason},
            {"collection": "devices", "status": "complete", "reason": None},
        ],
    )


def with_group_filters(raw: RawLayer, users: bool = False, devices: bool = False) -> RawLayer:
    """The raw layer as the raw assets leave it when the group options name these groups."""
    if users:
        raw.group_filters.append(
            {"applies_to": "users", "group_ref": "O'Brien's team", "group_id": "g-obrien"}
        )
    if devices:
        raw.group_filters.append(
            {"applies_to": "devices", "group_ref": "g-laptops", "group_id": "g-laptops"}
        )
    return raw
