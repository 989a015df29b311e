"""Auto-invite (seed 001): enabled users with an e-mail are invited the first time they are seen,
once ever, through the append-only ledger; `mdm.invitations` is rebuilt from it on every run."""

# No `from __future__ import annotations`: Dagster reads the `context` annotation at definition.
import time
from collections.abc import Callable

import dagster as dg
import duckdb
from dagster import AssetExecutionContext

from entra_pipeline.resources import ConnectorResource
from entra_pipeline.sync.session import recorded_graph_client, tenant_guid
from entra_pipeline.user_source.ledger import (
    INVITATION_COLUMNS,
    STATE_VIEW,
    InvitationLedger,
    Letter,
    Recipient,
    TenantKey,
    invite,
    ledger_path,
)
from entra_pipeline.user_source.tables import MDM_GROUP, USER_SOURCE_MEMORY_LIMIT, mdm_key
from entra_pipeline.warehouse.docs import CONNECTOR_DOC, TENANT_ID_DOC, document_table
from entra_pipeline.warehouse.resource import Warehouse
from entra_pipeline.warehouse.sql import literal, quoted

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
    if not options.auto_invite:
        context.log.info("user_source.auto_invite is false: nobody is invited this run.")
    # The ledger is keyed by the tenant's GUID, however the config names the tenant.
    with recorded_graph_client(connector, warehouse, context.log) as client:
        tenant = TenantKey(settings.tenant_id, tenant_guid(settings.tenant_id, client))
    with warehouse.transaction(USER_SOURCE_MEMORY_LIMIT) as con:
        report = invite(
            ledger,
            con,
            tenant=tenant,
            run_id=warehouse.run.run_id,
            recipients=RECIPIENTS_SQL if options.auto_invite else None,
            smtp=options.smtp if options.auto_invite else None,
            compose=_composer(options.name),
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
        rows = load_invitations(con, warehouse, settings.connector_name)
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


# Who may be invited now: enabled users with an e-mail, with the `invitation_subject` /
# `invitation_body` templates rendered for them when those are configured.
RECIPIENTS_SQL = f"""
SELECT
    u.id AS user_id,
    u.userPrincipalName,
    u.mail AS email,
    u.displayName,
    s.rendered AS subject,
    b.rendered AS body
FROM mdm.users AS u
LEFT JOIN mdm.rendered_templates AS s
    ON u.id = s.user_id AND s.template = {literal(SUBJECT_TEMPLATE)}
LEFT JOIN mdm.rendered_templates AS b
    ON u.id = b.user_id AND b.template = {literal(BODY_TEMPLATE)}
WHERE u.accountEnabled AND u.mail IS NOT NULL
"""


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


def _composer(source: str) -> Callable[[Recipient], Letter]:
    def compose(recipient: Recipient) -> Letter:
        default = default_letter(source, recipient)
        return Letter(recipient.subject or default.subject, recipient.body or default.body)

    return compose


def load_invitations(con: duckdb.DuckDBPyConnection, warehouse: Warehouse, connector: str) -> int:
    """Replace mdm.invitations with the ledger's invitations of the tenant, as `invite` left
    them in `con` (`connector`: the connector_name the rows carry)."""
    columns = ", ".join(
        f"CAST({quoted(name)} AS {kind}) AS {quoted(name)}"
        for name, kind in INVITATION_COLUMNS.items()
        if name != "tenant_id"
    )
    rows = warehouse.replace_table(
        con,
        "mdm.invitations",
        f"SELECT CAST(tenant_id AS VARCHAR) AS tenant_id, CAST($connector AS VARCHAR) AS connector, "
        f"{columns} FROM {STATE_VIEW} ORDER BY recorded_at, userPrincipalName, user_id",
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
