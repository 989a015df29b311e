"""The `ops` tables every warehouse has (`ops.sync_runs`, `ops.notifications`): their one
definition and documentation, for the DuckDB file and the lake alike."""

from __future__ import annotations

import duckdb

from entra_pipeline.warehouse.docs import TENANT_ID_DOC, document_table

OPS_DDL = (
    "CREATE SCHEMA IF NOT EXISTS ops",
    """CREATE TABLE IF NOT EXISTS ops.sync_runs (
        tenant_id VARCHAR, run_id VARCHAR, job VARCHAR, source VARCHAR,
        started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, status VARCHAR,
        rows_per_table JSON, graph_requests BIGINT, graph_retries BIGINT, error VARCHAR,
        connector VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS ops.notifications (
        tenant_id VARCHAR, notified_at TIMESTAMPTZ, run_id VARCHAR, source VARCHAR,
        severity VARCHAR, code VARCHAR, message VARCHAR, details JSON, connector VARCHAR)""",
)
# Columns added since the first version, last in each table: files written before get them.
OPS_ADDED = {
    "ops.sync_runs": {"connector": "VARCHAR"},
    "ops.notifications": {"connector": "VARCHAR"},
}
_CONNECTOR_DOC = "The connector_name of the config the run was for (one per tenant in a folder)."
_RUN_ID_DOC = "Dagster run id (the Runs page of the UI shows the run)."
OPS_DOCS = {
    "ops.sync_runs": (
        "One row per sync run, successful or not: when, what it published, what it cost in Graph "
        "requests and why it failed.",
        {
            "tenant_id": TENANT_ID_DOC,
            "run_id": _RUN_ID_DOC,
            "job": "entra_id_sync (the connector) or mdm_user_source_sync (the user source).",
            "source": "connector or user_source.",
            "started_at": "When the run started (UTC); every option was evaluated against it.",
            "finished_at": "When the run finished or was found dead (UTC).",
            "status": "success (its tables were published) or failure (nothing of it was).",
            "rows_per_table": "JSON object: rows of each table the run built, by schema.table.",
            "graph_requests": "HTTP requests the run made to Microsoft Graph, retries included.",
            "graph_retries": "Requests that were retries (throttling, 5xx, dropped connections).",
            "error": "Why the run failed; null on success.",
            "connector": _CONNECTOR_DOC,
        },
    ),
    "ops.notifications": (
        "What runs reported to admins: warnings and errors with a stable code (README, "
        "Notifications), successful runs' and failed ones'.",
        {
            "tenant_id": TENANT_ID_DOC,
            "notified_at": "When it was reported (UTC).",
            "run_id": _RUN_ID_DOC,
            "source": "connector or user_source.",
            "severity": "info, warning or error.",
            "code": "Stable code, e.g. permission_missing, throttled, mapping_invalid.",
            "message": "What happened and what to do, in a sentence (secrets redacted).",
            "details": "JSON object with the figures behind the message (secrets redacted).",
            "connector": _CONNECTOR_DOC,
        },
    ),
}


def create_ops_tables(con: duckdb.DuckDBPyConnection) -> None:
    """The `ops` tables every warehouse file has, documented."""
    for ddl in OPS_DDL:
        con.execute(ddl)
    for table, added in OPS_ADDED.items():
        for column, kind in added.items():
            con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")
    for table, (description, columns) in OPS_DOCS.items():
        document_table(con, table, description, columns)
