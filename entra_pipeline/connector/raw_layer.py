"""The raw layer's tables as data, apart from reading Graph: which tables it has and what they
mean, the two it writes about the extraction itself (`raw.group_filters`,
`raw.extraction_status`), an empty raw layer typed like a real one (what the models are built on
without a network call: `check`, and a run before it reads), and whether this run imported
sign-in activity."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import duckdb

from entra_pipeline.connector.units import UNITS
from entra_pipeline.graph.collections import SIGN_IN_ACTIVITY
from entra_pipeline.graph.extract import CollectionReport
from entra_pipeline.settings import ConnectorSettings
from entra_pipeline.warehouse.docs import document_table
from entra_pipeline.warehouse.loading import PROVENANCE_DOCS, load_landed_table
from entra_pipeline.warehouse.sql import table_exists

LANDED = tuple(unit.collection for unit in UNITS)
EXTRACTED_TABLES = tuple(landed.table for landed in LANDED)
# Written here from the extraction itself: what later layers need to know about it.
GROUP_FILTERS = "group_filters"
EXTRACTION_STATUS = "extraction_status"
RAW_TABLES = (*EXTRACTED_TABLES, GROUP_FILTERS, EXTRACTION_STATUS)

DESCRIPTIONS = {
    # The registry's, as the tables' comments say.
    **{landed.table: landed.description for landed in LANDED},
    GROUP_FILTERS: "The configured device and user group filters, resolved to object ids.",
    EXTRACTION_STATUS: "Per collection: complete, unavailable (and why) or skipped, this run.",
}
GROUP_FILTERS_DOCS = {
    **PROVENANCE_DOCS,
    "applies_to": "devices or users: the option list (devices.groups, users.groups) it is in.",
    "group_ref": "The group as the config names it: an object id or a display name.",
    "group_id": "The object id Graph resolved it to.",
}
EXTRACTION_STATUS_DOCS = {
    **PROVENANCE_DOCS,
    "collection": "The raw table the collection lands in.",
    "status": "complete (read in full this run), unavailable (Graph refused it; see reason) or "
    "skipped (not needed by the options).",
    "reason": "Why the collection was unavailable or skipped; null when complete.",
}


def load_group_filters(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    extracted_at: datetime,
    filters: Sequence[tuple[str, str, str]],
) -> int:
    """The configured group filters with the object ids they resolved to."""
    con.execute(
        f"CREATE OR REPLACE TABLE raw.{GROUP_FILTERS} (tenant_id VARCHAR, extracted_at TIMESTAMPTZ, "
        "applies_to VARCHAR, group_ref VARCHAR, group_id VARCHAR)"
    )
    if filters:
        con.executemany(
            f"INSERT INTO raw.{GROUP_FILTERS} VALUES (?, ?, ?, ?, ?)",
            [(tenant_id, extracted_at, *row) for row in filters],
        )
    document_table(con, f"raw.{GROUP_FILTERS}", DESCRIPTIONS[GROUP_FILTERS], GROUP_FILTERS_DOCS)
    return len(filters)


def load_extraction_status(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    extracted_at: datetime,
    reports: dict[str, CollectionReport],
    *,
    asked: set[str] | None = None,
) -> int:
    """Per extracted table: complete, unavailable (and why) or skipped (and why). A table this
    run was not `asked` for (a subset run) keeps its row, and its `extracted_at`, from before."""
    kept: list[tuple] = []
    if asked is not None and table_exists(con, f"raw.{EXTRACTION_STATUS}"):
        kept = [
            row
            for row in con.execute(f"SELECT * FROM raw.{EXTRACTION_STATUS}").fetchall()
            if row[2] not in asked
        ]
    con.execute(
        f"CREATE OR REPLACE TABLE raw.{EXTRACTION_STATUS} (tenant_id VARCHAR, "
        "extracted_at TIMESTAMPTZ, collection VARCHAR, status VARCHAR, reason VARCHAR)"
    )
    rows: list[tuple[str, str, str | None]] = []
    for unit in UNITS:
        table = unit.collection.table
        report = reports.get(table)
        if asked is not None and table not in asked:
            if not any(row[2] == table for row in kept):
                rows.append((table, "skipped", "not selected in any run yet"))
        elif report is None:
            rows.append((table, "skipped", unit.skipped()))
        elif report.status == "unavailable":
            rows.append((table, "unavailable", report.reason))
        else:
            rows.append((table, "complete", None))
    con.executemany(
        f"INSERT INTO raw.{EXTRACTION_STATUS} VALUES (?, ?, ?, ?, ?)",
        [*kept, *((tenant_id, extracted_at, *row) for row in rows)],
    )
    document_table(
        con, f"raw.{EXTRACTION_STATUS}", DESCRIPTIONS[EXTRACTION_STATUS], EXTRACTION_STATUS_DOCS
    )
    return len(kept) + len(rows)


def create_empty_raw_layer(con: duckdb.DuckDBPyConnection, settings: ConnectorSettings) -> None:
    """Every raw table, typed as an extraction lands it, with no rows (and sign-in activity
    "skipped"): what the models can be built on without a network call."""
    now = datetime.now(UTC)
    for landed in LANDED:
        load_landed_table(con, landed, (), settings.tenant_id, now)
    load_group_filters(con, settings.tenant_id, now, [])
    load_extraction_status(con, settings.tenant_id, now, {})


def sign_in_status(con: duckdb.DuckDBPyConnection) -> tuple[str, str | None]:
    """(status, reason) of this run's sign-in activity pass, from raw.extraction_status."""
    found = con.execute(
        f"SELECT status, reason FROM raw.{EXTRACTION_STATUS} WHERE collection = ?",
        [SIGN_IN_ACTIVITY.table],
    ).fetchall()
    return found[0] if found else ("missing", None)


def sign_in_imported(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether this run imported sign-in activity, which the user stale threshold needs
    (docs/options-and-mapping.md)."""
    return sign_in_status(con)[0] == "complete"
