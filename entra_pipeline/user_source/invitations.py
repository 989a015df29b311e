"""Auto-invite (seed 001): enabled users with an e-mail are invited the first time they are seen,
once ever, through the append-only ledger; `mdm.invitations` is rebuilt from it on every run."""

# No `from __future__ import annotations`: Dagster reads the `context` annotation at definition.
import time
from collections.abc import Callable, Iterable

import dagster as dg
import duckdb
import polars as pl
from dagster import AssetExecutionContext

from entra_pipeline.graph_session import recorded_graph_client, tenant_guid
from entra_pipeline.resources import ConnectorResource
from entra_pipeline.settings import UserSourceOptions
from entra_pipeline.user_source.ledger import (
    INVITATION_COLUMNS,
    Invitation,
    InvitationLedger,
    Letter,
    Recipient,
    TenantKey,
    invite,
    ledger_path,
)
from entra_pipeline.user_source.tables import MDM_GROUP, mdm_key
from entra_pipeline.warehouse.docs import CONNECTOR_DOC, TENANT_ID_DOC, document_table
from entra_pipeline.warehouse.publish import Warehouse

INVITATIONS_DESCRIPTION = "One invitation per user ever invited: pending, sent or failed."
# Templates with these names, when configured, are the invitation e-mail's subject and body.
SUBJECT_TEMPLATE = "invitation_subject"
BODY_TEMPLATE = "invitation_body"


@dg.asset(
    key=mdm_key("invitations"),
    deps=[mdm_key("users"), mdm_key("rendered_templates")],
    group_name=MDM_GROUP,
    description=INVITATIONS_DESCRIPTION,
    kinds={"duckdb", "email"},
    metadata={"dagster/table_name": "mdm.invitations"},
)
def mdm_invitations(
    context: AssetExecutionContext, warehouse: Warehouse, connector: ConnectorResource
) -> dg.MaterializeResult:
    """Invite enabled users with an e-mail the first time they are seen (once, ever)."""
    started = time.perf_counter()
    settings = connector.settings
    options = settings.user_source
    ledger = InvitationLedger(ledger_path(warehouse.path))
    with warehouse.reader() as con:
        recipients = _recipients(con) if options.auto_invite else []
        templated = _templated_letters(con, options) if options.auto_invite else {}
    if not options.auto_invite:
        context.log.info("user_source.auto_invite is false: nobody is invited this run.")
    # The ledger is keyed by the tenant's GUID, however the config names the tenant.
    with recorded_graph_client(connector, warehouse) as client:
        tenant = TenantKey(settings.tenant_id, tenant_guid(settings.tenant_id, client))
    report, invitations = invite(
        ledger,
        tenant=tenant,
        run_id=warehouse.run.run_id,
        recipients=recipients,
        smtp=options.smtp if options.auto_invite else None,
        compose=_composer(options.name, templated),
    )
    for email, error in report.failures:
        context.log.warning(f"The invitation to {email} could not be sent: {error}")
    if report.smtp_unavailable:
        context.log.warning(
            f"{report.deferred} invitation(s) stay pending: {report.smtp_unavailable}"
        )
    context.log.info(
        f"Invitations: {report.recorded} new, {report.sent} sent, {report.failed} failed, "
        f"{report.deferred} deferred (ledger {ledger.path})"
    )
    with warehouse.transaction() as con:
        rows = load_invitations(con, warehouse, settings.connector_name, invitations.values())
        metadata = warehouse.table_metadata(con, "mdm.invitations", rows)
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "invited_this_run": report.recorded,
            "sent_this_run": report.sent,
            "failed_this_run": report.failed,
            "deferred_this_run": report.deferred,
            "ledger": str(ledger.path),
            "duration_seconds": round(time.perf_counter() - started, 3),
        }
    )


def _recipients(con: duckdb.DuckDBPyConnection) -> list[Recipient]:
    rows = con.execute(
        "SELECT id, userPrincipalName, mail, displayName FROM mdm.users "
        "WHERE accountEnabled AND mail IS NOT NULL ORDER BY userPrincipalName, id"
    ).fetchall()
    return [Recipient(*row) for row in rows]


def _templated_letters(
    con: duckdb.DuckDBPyConnection, options: UserSourceOptions
) -> dict[str, tuple[str | None, str | None]]:
    """(subject, body) per user from the `invitation_subject` / `invitation_body` templates."""
    if SUBJECT_TEMPLATE not in options.templates and BODY_TEMPLATE not in options.templates:
        return {}
    rows = con.execute(
        "SELECT u.id, s.rendered, b.rendered FROM mdm.users u "
        "LEFT JOIN mdm.rendered_templates s ON s.user_id = u.id AND s.template = $subject "
        "LEFT JOIN mdm.rendered_templates b ON b.user_id = u.id AND b.template = $body",
        {"subject": SUBJECT_TEMPLATE, "body": BODY_TEMPLATE},
    ).fetchall()
    return {user_id: (subject, body) for user_id, subject, body in rows}


def default_letter(source: str, recipient: Recipient) -> Letter:
    """The invitation e-mail when no `invitation_subject` / `invitation_body` template is set."""
    upn = recipient.userPrincipalName or recipient.email
    return Letter(
        subject=f"{source}: you are invited to register your devices",
        body=(
            f"Hello {recipient.displayName or upn},\n\n"
            f"You are invited to register your devices with {source} device management, "
            f"signing in with your work account {upn}.\n\n"
            "If you did not expect this message, please contact your IT department.\n"
        ),
    )


def _composer(
    source: str, templated: dict[str, tuple[str | None, str | None]]
) -> Callable[[Recipient], Letter]:
    def compose(recipient: Recipient) -> Letter:
        default = default_letter(source, recipient)
        subject, body = templated.get(recipient.user_id, (None, None))
        return Letter(subject or default.subject, body or default.body)

    return compose


def load_invitations(
    con: duckdb.DuckDBPyConnection,
    warehouse: Warehouse,
    connector: str,
    invitations: Iterable[Invitation],
) -> int:
    """Replace mdm.invitations with the ledger's invitations of the tenant (`connector`: the
    connector_name the rows carry)."""
    frame = pl.DataFrame(
        [vars(invitation) for invitation in invitations],
        schema={name: _POLARS_TYPES[kind] for name, kind in INVITATION_COLUMNS.items()},
    )
    con.register("invitations_frame", frame)
    rows = warehouse.replace_table(
        con,
        "mdm.invitations",
        "SELECT tenant_id, CAST($connector AS VARCHAR) AS connector, * EXCLUDE (tenant_id) "
        "FROM invitations_frame ORDER BY recorded_at, userPrincipalName, user_id",
        {"connector": connector},
    )
    document_table(con, "mdm.invitations", INVITATIONS_DESCRIPTION, INVITATION_DOCS)
    return rows


INVITATION_DOCS = {
    "tenant_id": TENANT_ID_DOC,
    "connector": CONNECTOR_DOC,
    "user_id": "Object id of the invited user (mdm.users.id).",
    "userPrincipalName": "UPN of the invited user.",
    "email": "Address the invitation was (or will be) sent to.",
    "status": "pending (recorded, not sent yet), sent, or failed (see error).",
    "recorded_at": "When a run first recorded the user for an invitation (UTC).",
    "recorded_run_id": "Dagster run id of that run.",
    "attempted_at": "When the e-mail was handed to the SMTP server (UTC); null before.",
    "completed_at": "When the SMTP server accepted or refused it (UTC); null before.",
    "error": "Why the invitation failed; null unless failed. A run that stopped while sending "
    "marks it failed rather than send it twice.",
    "note": "Why a pending invitation was not sent yet, e.g. no SMTP server configured.",
}


_POLARS_TYPES: dict[str, pl.DataType] = {
    "VARCHAR": pl.String(),
    "TIMESTAMPTZ": pl.Datetime("us", "UTC"),
}
