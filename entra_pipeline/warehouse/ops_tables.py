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
        connector VARCHAR, connector_server VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS ops.notifications (
        tenant_id VARCHAR, notified_at TIMESTAMPTZ, run_id VARCHAR, source VARCHAR,
        severity VARCHAR, code VARCHAR, message VARCHAR, details JSON, connector VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS ops.action_plans (
        tenant_id VARCHAR, plan_id VARCHAR, selection VARCHAR, action VARCHAR, parameters JSON,
        created_at TIMESTAMPTZ, status VARCHAR, reason VARCHAR, objects_of_kind BIGINT,
        planned BIGINT, skipped BIGINT, max_objects BIGINT)""",
    """CREATE TABLE IF NOT EXISTS ops.action_plan_items (
        tenant_id VARCHAR, plan_id VARCHAR, object_id VARCHAR, object_name VARCHAR,
        kind VARCHAR, action VARCHAR, status VARCHAR, reason VARCHAR, matched JSON)""",
    """CREATE TABLE IF NOT EXISTS ops.actions (
        tenant_id VARCHAR, plan_id VARCHAR, object_id VARCHAR, object_name VARCHAR,
        action VARCHAR, before JSON, after JSON, requested_at TIMESTAMPTZ,
        finished_at TIMESTAMPTZ, status VARCHAR, request_id VARCHAR, error VARCHAR)""",
)
# Columns added since the first version, last in each table: files written before get them.
OPS_ADDED = {
    "ops.sync_runs": {"connector": "VARCHAR", "connector_server": "VARCHAR"},
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
            "connector_server": "Where the run ran: cloud (wherever the Dagster instance runs "
            "it) or the connector server's name (its Celery queue).",
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


OPS_DOCS.update(
    {
        "ops.action_plans": (
            "Plans of actions on the directory (docs/actions.md): what a selection chose, "
            "never applied by being written; `entra-pipeline act apply` applies one.",
            {
                "tenant_id": TENANT_ID_DOC,
                "plan_id": "The plan's id: what `act show`, `act apply` and `act undo` take.",
                "selection": "The selection (dbt_like_sql/actions/<name>.sql) that chose it.",
                "action": "What it does to each object: device.disable, user.revoke_sessions, ...",
                "parameters": "JSON object: the selection's parameters, as used.",
                "created_at": "When it was planned (UTC); older than plan_max_age_hours, it "
                "is not applied.",
                "status": "ready (may be applied) or refused (over the blast-radius limit).",
                "reason": "Why it was refused; null when ready.",
                "objects_of_kind": "Objects of the action's kind in the published tables.",
                "planned": "Objects it acts on.",
                "skipped": "Objects the selection chose that it will not touch (see items).",
                "max_objects": "The most objects it could hold (the limit it was held to).",
            },
        ),
        "ops.action_plan_items": (
            "One row per object a plan chose: planned, or skipped and why.",
            {
                "tenant_id": TENANT_ID_DOC,
                "plan_id": "The plan (ops.action_plans).",
                "object_id": "The device's or user's object id.",
                "object_name": "Its displayName (device) or userPrincipalName (user).",
                "kind": "device or user.",
                "action": "The plan's action.",
                "status": "planned or skipped.",
                "reason": "The selection's reason (planned), or why it is skipped.",
                "matched": "JSON object: the values the selection matched, re-read from Graph "
                "before acting (an object that no longer has them is not touched).",
            },
        ),
        "ops.actions": (
            "Every action request sent to Graph, and every planned object not acted on, per "
            "applied plan: the audit of what was changed.",
            {
                "tenant_id": TENANT_ID_DOC,
                "plan_id": "The plan applied (an undo is a plan of its own).",
                "object_id": "The device's or user's object id.",
                "object_name": "Its displayName or userPrincipalName.",
                "action": "What was asked of Graph.",
                "before": "JSON object: the object's values as re-read before acting.",
                "after": "JSON object: the values after (null when not acted on).",
                "requested_at": "When the request was sent (UTC); null when none was.",
                "finished_at": "When it was answered or decided (UTC).",
                "status": "done, skipped (changed since the plan, or refused by Graph for a "
                "reason acting cannot fix) or failed.",
                "request_id": "Graph's request-id of the answer, for Microsoft's support.",
                "error": "Why it was skipped or failed; null when done.",
            },
        ),
    }
)


def create_ops_tables(con: duckdb.DuckDBPyConnection) -> None:
    """The `ops` tables every warehouse file has, documented."""
    for ddl in OPS_DDL:
        con.execute(ddl)
    for table, added in OPS_ADDED.items():
        for column, kind in added.items():
            con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")
    for table, (description, columns) in OPS_DOCS.items():
        document_table(con, table, description, columns)
