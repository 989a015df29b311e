"""The raw layer: every Graph collection the connector reads, landed as `raw.*` in one step.

One multi-asset extracts the collections concurrently (they share one Graph client and its
bounded pool), streams them to files, and loads every raw table in one transaction.
"""

import contextlib
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
from dagster import AssetExecutionContext

from entra_pipeline.assets.models import table_metadata
from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.collections import ALL as COLLECTIONS
from entra_pipeline.graph.errors import EntraError, GraphPermissionError, GroupNotFoundError
from entra_pipeline.graph.extract import (
    GROUP_MEMBERS,
    CollectionReport,
    extract_all,
    load_raw_table,
    resolve_groups,
)
from entra_pipeline.publish import Warehouse
from entra_pipeline.settings import ConnectorResource, ConnectorSettings

RAW_GROUP = "raw"
EXTRACTED_TABLES = (*(c.table for c in COLLECTIONS), GROUP_MEMBERS)
# Written here from the extraction itself: what later layers need to know about it.
GROUP_FILTERS = "group_filters"
EXTRACTION_STATUS = "extraction_status"
RAW_TABLES = (*EXTRACTED_TABLES, GROUP_FILTERS, EXTRACTION_STATUS)

DESCRIPTIONS = {
    "users": "Every user of the tenant as Graph returns it, with licences and manager.",
    "sign_in_activity": "Each user's sign-in activity (needs AuditLog.Read.All and Entra ID P1).",
    "devices": "Every device of the tenant as Graph returns it, with registered owners.",
    "groups": "Every group of the tenant.",
    "subscribed_skus": "The tenant's licence SKUs: skuId to skuPartNumber.",
    GROUP_MEMBERS: "Transitive members of the groups the connector's group filters name.",
    GROUP_FILTERS: "The configured device and user group filters, resolved to object ids.",
    EXTRACTION_STATUS: "Per collection: complete, unavailable (and why) or skipped, this run.",
}


def raw_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([RAW_GROUP, table])


@dg.multi_asset(
    specs=[
        dg.AssetSpec(raw_key(table), description=DESCRIPTIONS[table], group_name=RAW_GROUP)
        for table in RAW_TABLES
    ],
    can_subset=False,
)
def raw_entra(
    context: AssetExecutionContext, warehouse: Warehouse, connector: ConnectorResource
) -> Iterator[dg.MaterializeResult]:
    """Extract users, devices, groups, members, licences and sign-in activity from Graph."""
    settings = connector.settings
    started = time.monotonic()
    extracted_at = datetime.now(UTC)
    with extraction_folder(settings, "extract-") as workdir:
        with recorded_graph_client(connector, warehouse) as client:
            filters = _resolve_group_filters(client, settings)
            group_ids = sorted({group_id for _, _, group_id in filters})
            context.log.info(
                f"Extracting from {settings.graph_url} (sign-in activity: "
                f"{settings.users.import_sign_in_activity}, member groups: {len(group_ids)})"
            )
            reports = extract_all(
                client,
                workdir,
                sign_in_activity=settings.users.import_sign_in_activity,
                group_ids=group_ids,
            )
        _notify_soft_failures(warehouse, reports)
        with warehouse.transaction() as con:
            rows = {
                table: load_raw_table(
                    con,
                    table,
                    reports[table].files if table in reports else (),
                    settings.tenant_id,
                    extracted_at,
                )
                for table in EXTRACTED_TABLES
            }
            rows[GROUP_FILTERS] = load_group_filters(con, settings.tenant_id, extracted_at, filters)
            rows[EXTRACTION_STATUS] = load_extraction_status(con, settings, extracted_at, reports)
            for table, count in rows.items():
                warehouse.mark_built(f"raw.{table}", count)
            metadata = {
                table: table_metadata(con, f"raw.{table}", count) for table, count in rows.items()
            }
    # One step builds every raw table: each one's duration is the step's.
    duration = round(time.monotonic() - started, 3)
    context.log.info(
        f"Raw layer extracted in {duration:.1f}s: "
        + ", ".join(f"{table}={count}" for table, count in rows.items())
    )
    for table in RAW_TABLES:
        yield dg.MaterializeResult(
            asset_key=raw_key(table),
            metadata={
                **metadata[table],
                **_graph_metadata(reports.get(table)),
                "duration_seconds": duration,
            },
        )


@contextlib.contextmanager
def extraction_folder(settings: ConnectorSettings, prefix: str) -> Iterator[Path]:
    """A scratch folder for extracted pages beside the database (same disk), removed after."""
    parent = Path(settings.duckdb_path).resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=parent) as folder:
        yield Path(folder)


@contextlib.contextmanager
def recorded_graph_client(
    connector: ConnectorResource, warehouse: Warehouse
) -> Iterator[GraphClient]:
    """A Graph client whose failures become `ops.notifications` and whose request and retry
    counts reach `ops.sync_runs`, however the extraction ends."""
    with connector.graph_client() as client:
        try:
            yield client
        except EntraError as error:
            notify_extraction_failure(warehouse, error)
            raise
        finally:
            total = client.total_stats()
            warehouse.add_graph_stats(total.requests, total.retries)


def _resolve_group_filters(
    client: GraphClient, settings: ConnectorSettings
) -> list[tuple[str, str, str]]:
    """(applies_to, configured reference, object id) for every configured group filter."""
    wanted = {"devices": settings.devices.groups, "users": settings.users.groups}
    resolved = resolve_groups(client, [ref for refs in wanted.values() for ref in refs])
    return [(kind, ref, resolved[ref]) for kind, refs in wanted.items() for ref in refs]


def load_group_filters(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    extracted_at: datetime,
    filters: list[tuple[str, str, str]],
) -> int:
    con.execute(
        f"CREATE OR REPLACE TABLE raw.{GROUP_FILTERS} (tenant_id VARCHAR, extracted_at TIMESTAMPTZ, "
        "applies_to VARCHAR, group_ref VARCHAR, group_id VARCHAR)"
    )
    if filters:
        con.executemany(
            f"INSERT INTO raw.{GROUP_FILTERS} VALUES (?, ?, ?, ?, ?)",
            [(tenant_id, extracted_at, *row) for row in filters],
        )
    return len(filters)


def load_extraction_status(
    con: duckdb.DuckDBPyConnection,
    settings: ConnectorSettings,
    extracted_at: datetime,
    reports: dict[str, CollectionReport],
) -> int:
    con.execute(
        f"CREATE OR REPLACE TABLE raw.{EXTRACTION_STATUS} (tenant_id VARCHAR, "
        "extracted_at TIMESTAMPTZ, collection VARCHAR, status VARCHAR, reason VARCHAR)"
    )
    rows = []
    for table in EXTRACTED_TABLES:
        report = reports.get(table)
        if report is None:
            reason = (
                "users.import_sign_in_activity is false"
                if table == "sign_in_activity"
                else "no group filter is configured"
            )
            rows.append((table, "skipped", reason))
        elif report.status == "unavailable":
            rows.append((table, "unavailable", report.reason))
        else:
            rows.append((table, "complete", None))
    con.executemany(
        f"INSERT INTO raw.{EXTRACTION_STATUS} VALUES (?, ?, ?, ?, ?)",
        [(settings.tenant_id, extracted_at, *row) for row in rows],
    )
    return len(rows)


def notify_extraction_failure(warehouse: Warehouse, error: EntraError) -> None:
    """The notification a failed extraction leaves in `ops.notifications` (SPEC 1.3 codes)."""
    details: dict[str, object] = {"error": type(error).__name__}
    if isinstance(error, GraphPermissionError):
        details["permission"] = error.permission
    for attribute in ("url", "status", "code", "request_id", "client_request_id"):
        value = getattr(error, attribute, None)
        if value:
            details[attribute] = value
    if isinstance(error, GroupNotFoundError):
        details["groups"] = getattr(error, "missing", [])
    warehouse.notify(error.notification_code, "error", str(error), details)


def _notify_soft_failures(warehouse: Warehouse, reports: dict[str, CollectionReport]) -> None:
    sign_in = reports.get("sign_in_activity")
    if sign_in is not None and sign_in.status == "unavailable":
        error = sign_in.error
        warehouse.notify(
            "sign_in_activity_unavailable",
            "warning",
            f"Sign-in activity was not imported; its columns stay null this run: {sign_in.reason}",
            {
                "graph_code": getattr(error, "code", None),
                "request_id": getattr(error, "request_id", None),
            },
        )


def _graph_metadata(report: CollectionReport | None) -> dict[str, object]:
    if report is None:
        return {}
    return {
        "graph_pages": report.pages,
        "graph_requests": report.requests,
        "graph_retries": report.retries,
        "graph_throttled": report.throttled,
        "graph_restarts": report.restarts,
        "extract_seconds": report.seconds,
        "extraction_status": report.status,
    }
