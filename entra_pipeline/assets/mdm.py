"""The MDM user source (seed 001, SPEC 4): every user and group of the tenant, published as `mdm.*`.

One step reads Graph and builds users, groups, memberships and custom attributes in one
transaction; templates and invitations build on them; checks validate users and report attributes.
"""

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import duckdb
import polars as pl
from dagster import AssetExecutionContext

from entra_pipeline.assets.models import table_metadata
from entra_pipeline.assets.raw import extraction_folder, recorded_graph_client
from entra_pipeline.checks import IdentityColumns, check_identity_table
from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.collections import DIRECTORY_USERS, GROUPS, Collection
from entra_pipeline.graph.extract import (
    GROUP_MEMBERS,
    Extracted,
    extract_collection,
    extract_group_members,
    load_raw_table,
)
from entra_pipeline.invitations import (
    INVITATION_COLUMNS,
    Invitation,
    InvitationLedger,
    Letter,
    Recipient,
    invite,
    ledger_path,
)
from entra_pipeline.publish import Warehouse
from entra_pipeline.settings import (
    BUILTIN_TEMPLATE_VARIABLES,
    TEMPLATE_VAR_RE,
    ConnectorResource,
    UserSourceOptions,
)

MDM_GROUP = "mdm"
MDM_USERS_CHECK = "mdm_users_valid"
ATTRIBUTES_CHECK = "mdm_custom_attributes_synchronized"
DIRECTORY_TABLES = ("users", "groups", "group_members", "user_attributes")
# Graph's answers land here in the run's work copy, and are dropped once mdm.* are built from them
# (a successful run's work copy may become the published file as it is).
EXTRACT_SCHEMA = "mdm_extract"
EXAMPLES_SHOWN = 5  # UPNs in a notification's details
EXAMPLES_IN_MESSAGE = 2

# Template variables that are always defined (settings validates templates against the same
# names), and the mdm.users column each reads.
BUILTIN_VARIABLES = dict(
    zip(
        BUILTIN_TEMPLATE_VARIABLES,
        ("userPrincipalName", "mail", "displayName", "givenName", "surname"),
        strict=True,
    )
)
# Templates with these names, when configured, are the invitation e-mail's subject and body.
SUBJECT_TEMPLATE = "invitation_subject"
BODY_TEMPLATE = "invitation_body"

DESCRIPTIONS = {
    "users": "Every user of the tenant (no licence or stale filter), with the Managed Apple ID.",
    "groups": "Every group of the tenant.",
    "group_members": "Transitive members of every group (nested groups resolved).",
    "user_attributes": "The configured custom attributes, one row per user and attribute.",
    "rendered_templates": "Each configured template rendered for each user.",
    "invitations": "One invitation per user ever invited: pending, sent or failed.",
}

_ON_PREMISES_ATTRIBUTE = re.compile(r"^extensionAttribute(?:[1-9]|1[0-5])$")
_DIRECTORY_EXTENSION = re.compile(r"^extension_[0-9a-fA-F]{32}_\w+$")

AttributeSource = Literal["property", "onPremisesExtensionAttributes", "directory_extension"]


@dataclass(frozen=True)
class CustomAttribute:
    """A configured custom attribute and where on the Graph user it is read."""

    name: str
    source: AttributeSource

    @property
    def selected(self) -> bool:
        """Whether the name itself goes into `$select` (extensionAttributeN lives in an object)."""
        return self.source != "onPremisesExtensionAttributes"


def custom_attribute(name: str) -> CustomAttribute:
    if _ON_PREMISES_ATTRIBUTE.match(name):
        return CustomAttribute(name, "onPremisesExtensionAttributes")
    if _DIRECTORY_EXTENSION.match(name):
        return CustomAttribute(name, "directory_extension")
    return CustomAttribute(name, "property")


def directory_users(attributes: Sequence[CustomAttribute]) -> Collection:
    """The users collection with every custom attribute that is a property of its own selected."""
    return DIRECTORY_USERS.with_properties(a.name for a in attributes if a.selected)


def mdm_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([MDM_GROUP, table])


# ---- the directory: users, groups, members, custom attributes -------------------------------


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            mdm_key(table),
            description=DESCRIPTIONS[table],
            group_name=MDM_GROUP,
            kinds={"duckdb"},
            metadata={"dagster/table_name": f"mdm.{table}"},
            # A disabled user source materializes nothing, and everything downstream is skipped.
            skippable=True,
        )
        for table in DIRECTORY_TABLES
    ],
    can_subset=False,
)
def mdm_directory(
    context: AssetExecutionContext, warehouse: Warehouse, connector: ConnectorResource
) -> Iterator[dg.MaterializeResult]:
    """Sync every user and group of the tenant with their members and custom attributes."""
    settings = connector.settings
    options = settings.user_source
    if not options.enabled:
        context.log.warning(
            f"The user source {options.name!r} is disabled (user_source.enabled is false): "
            "nothing was read from Graph and the published mdm.* tables were left as they are."
        )
        return
    started = time.monotonic()
    attributes = [custom_attribute(name) for name in options.custom_attributes]
    users = directory_users(attributes)
    synced_at = warehouse.run.started_at
    with extraction_folder(settings, "mdm-extract-") as workdir:
        with recorded_graph_client(connector, warehouse) as client:
            extracted = extract_directory(client, users, workdir)
            total = client.total_stats()
        with warehouse.transaction() as con:
            con.execute("SET TimeZone = 'UTC'")
            for table, landed in extracted.items():
                columns = users.columns if table == users.table else None
                load_raw_table(
                    con,
                    table,
                    landed.files,
                    settings.tenant_id,
                    synced_at,
                    columns=columns,
                    schema=EXTRACT_SCHEMA,
                )
            rows = build_directory(con, warehouse, options, attributes, synced_at, users.table)
            coverage = attribute_coverage(con, options.custom_attributes)
            notify_attribute_coverage(warehouse, coverage)
            metadata = {t: table_metadata(con, f"mdm.{t}", n) for t, n in rows.items()}
            metadata["users"].update(_users_metadata(con, options))
            metadata["user_attributes"]["missing_values"] = dg.MetadataValue.json(
                {c.attribute: c.missing for c in coverage}
            )
        # Not in the transaction above: DuckDB refuses to drop tables a statement of the same
        # transaction read.
        with warehouse.transaction() as con:
            con.execute(f"DROP SCHEMA {EXTRACT_SCHEMA} CASCADE")
    # One step builds the four directory tables from one extraction: its figures are each one's.
    step = {
        "graph_requests": total.requests,
        "graph_retries": total.retries,
        "duration_seconds": round(time.monotonic() - started, 3),
    }
    context.log.info(
        f"User source {options.name!r} synchronized in {step['duration_seconds']:.1f}s: "
        + ", ".join(f"mdm.{table}={count}" for table, count in rows.items())
    )
    for table in DIRECTORY_TABLES:
        yield dg.MaterializeResult(asset_key=mdm_key(table), metadata={**metadata[table], **step})


def extract_directory(
    client: GraphClient, users: Collection, workdir: Path
) -> dict[str, Extracted]:
    """Every user, every group, then the transitive members of each group, as NDJSON files."""
    extracted = {
        users.table: extract_collection(client, users, workdir),
        GROUPS.table: extract_collection(client, GROUPS, workdir),
    }
    group_ids = list(_ids(extracted[GROUPS.table].files))
    extracted[GROUP_MEMBERS] = extract_group_members(client, group_ids, workdir)
    return extracted


def _ids(files: Sequence[Path]) -> Iterator[str]:
    for file in files:
        with file.open(encoding="utf-8") as lines:
            for line in lines:
                yield json.loads(line)["id"]


USERS_SQL = """
WITH users AS (
    SELECT
        *,
        CASE $managed_apple_id
            WHEN 'email' THEN nullif(mail, '')
            WHEN 'upn' THEN nullif(userPrincipalName, '')
        END AS apple_id_source
    FROM {users}
)
SELECT
    tenant_id,
    id,
    userPrincipalName,
    displayName,
    givenName,
    surname,
    nullif(mail, '') AS mail,
    accountEnabled,
    userType,
    coalesce(userType = 'Guest', false) AS is_guest,
    nullif(CAST(nullif(createdDateTime, '') AS TIMESTAMPTZ),
        TIMESTAMPTZ '0001-01-01 00:00:00+00') AS createdDateTime,
    onPremisesSyncEnabled,
    -- jane@contoso.com -> jane@appleid.contoso.com: keeps clear of personal Apple IDs.
    CASE WHEN $appleid_subdomain
        THEN regexp_replace(apple_id_source, '@([^@]*)$', '@appleid.\\1')
        ELSE apple_id_source
    END AS managed_apple_id,
    $synced_at::TIMESTAMPTZ AS synced_at
FROM users
ORDER BY userPrincipalName, id
"""

GROUPS_SQL = f"""
SELECT
    tenant_id,
    id,
    displayName,
    description,
    mail,
    mailEnabled,
    securityEnabled,
    groupTypes,
    nullif(CAST(nullif(createdDateTime, '') AS TIMESTAMPTZ),
        TIMESTAMPTZ '0001-01-01 00:00:00+00') AS createdDateTime,
    $synced_at::TIMESTAMPTZ AS synced_at
FROM {EXTRACT_SCHEMA}.groups
ORDER BY displayName, id
"""

GROUP_MEMBERS_SQL = f"""
SELECT tenant_id, group_id, member_id, member_type, $synced_at::TIMESTAMPTZ AS synced_at
FROM {EXTRACT_SCHEMA}.{GROUP_MEMBERS}
ORDER BY group_id, member_type, member_id
"""

# A Graph value as text: strings unquoted, other JSON as written; null, "" and [] are missing.
_JSON_VALUE = """CASE
    WHEN json_type({column}) IN ('ARRAY', 'OBJECT')
        THEN CASE WHEN CAST({column} AS VARCHAR) IN ('[]', '{{}}') THEN NULL
            ELSE CAST({column} AS VARCHAR) END
    ELSE nullif({column} ->> '$', '')
END"""


def attribute_value_sql(attribute: CustomAttribute) -> str:
    """The SQL expression reading `attribute` from a row of the extracted users."""
    if attribute.source == "onPremisesExtensionAttributes":
        return f"nullif(u.onPremisesExtensionAttributes ->> {_literal(attribute.name)}, '')"
    return _JSON_VALUE.format(column=f"u.{_quoted(attribute.name)}")


def user_attributes_sql(attributes: Sequence[CustomAttribute], users_table: str) -> str:
    """One row per user and configured attribute; the value is null where the user has none."""
    # With no attribute configured: an empty table of the same shape.
    empty = (
        "SELECT NULL::VARCHAR AS tenant_id, NULL::VARCHAR AS user_id, "
        "NULL::VARCHAR AS userPrincipalName, NULL::VARCHAR AS attribute, "
        "NULL::VARCHAR AS source, NULL::VARCHAR AS value, "
        "$synced_at::TIMESTAMPTZ AS synced_at WHERE false"
    )
    parts = [
        f"SELECT u.tenant_id, u.id AS user_id, u.userPrincipalName, "
        f"{_literal(a.name)} AS attribute, {_literal(a.source)} AS source, "
        f"{attribute_value_sql(a)} AS value, $synced_at::TIMESTAMPTZ AS synced_at "
        f"FROM {EXTRACT_SCHEMA}.{_quoted(users_table)} AS u"
        for a in attributes
    ]
    return " UNION ALL ".join(parts or [empty]) + " ORDER BY attribute, userPrincipalName, user_id"


def build_directory(
    con: duckdb.DuckDBPyConnection,
    warehouse: Warehouse,
    options: UserSourceOptions,
    attributes: Sequence[CustomAttribute],
    synced_at: datetime,
    users_table: str,
) -> dict[str, int]:
    """Replace mdm.users, mdm.groups, mdm.group_members and mdm.user_attributes; rows of each."""
    synced = {"synced_at": synced_at}
    users_sql = USERS_SQL.format(users=f"{EXTRACT_SCHEMA}.{_quoted(users_table)}")
    user_options = {
        **synced,
        "managed_apple_id": options.managed_apple_id,
        "appleid_subdomain": options.appleid_subdomain,
    }
    return {
        "users": warehouse.replace_table(con, "mdm.users", users_sql, user_options),
        "groups": warehouse.replace_table(con, "mdm.groups", GROUPS_SQL, synced),
        "group_members": warehouse.replace_table(
            con, "mdm.group_members", GROUP_MEMBERS_SQL, synced
        ),
        "user_attributes": warehouse.replace_table(
            con, "mdm.user_attributes", user_attributes_sql(attributes, users_table), synced
        ),
    }


def _users_metadata(con: duckdb.DuckDBPyConnection, options: UserSourceOptions) -> dict[str, Any]:
    [(enabled, disabled, guests, apple_ids, without_apple_id)] = con.execute(
        "SELECT count(*) FILTER (WHERE accountEnabled), "
        "count(*) FILTER (WHERE NOT coalesce(accountEnabled, false)), "
        "count(*) FILTER (WHERE is_guest), count(managed_apple_id), "
        "count(*) FILTER (WHERE managed_apple_id IS NULL) FROM mdm.users"
    ).fetchall()
    return {
        "enabled_users": enabled,
        "disabled_users": disabled,
        "guest_users": guests,
        "managed_apple_id_mode": options.managed_apple_id
        + (" (appleid. subdomain)" if options.appleid_subdomain else ""),
        "managed_apple_ids": apple_ids,
        # Users the configured source (mail or UPN) has no value for; `none` counts nobody.
        "managed_apple_id_missing": 0 if options.managed_apple_id == "none" else without_apple_id,
    }


# ---- custom attribute coverage: notifications and the warning check --------------------------


@dataclass(frozen=True)
class AttributeCoverage:
    """How many users have no value for one configured custom attribute, with a few of them."""

    attribute: str
    users: int
    missing: int
    examples: tuple[str, ...]  # UPNs of users without a value, first few in UPN order

    @property
    def missing_for_all(self) -> bool:
        return self.users > 0 and self.missing == self.users

    @property
    def missing_for_some(self) -> bool:
        return 0 < self.missing < self.users

    def details(self) -> dict[str, Any]:
        return {"users": self.users, "missing": self.missing, "examples": list(self.examples)}


def attribute_coverage(
    con: duckdb.DuckDBPyConnection, attributes: Sequence[str]
) -> list[AttributeCoverage]:
    """The coverage of each configured attribute in mdm.user_attributes, in configured order."""
    rows = con.execute(
        "SELECT attribute, count(*), count(*) FILTER (WHERE value IS NULL), "
        "(list(coalesce(userPrincipalName, user_id) ORDER BY userPrincipalName, user_id) "
        "FILTER (WHERE value IS NULL))[1:$shown] "
        "FROM mdm.user_attributes GROUP BY attribute",
        {"shown": EXAMPLES_SHOWN},
    ).fetchall()
    found = {
        attribute: AttributeCoverage(attribute, users, missing, tuple(examples or ()))
        for attribute, users, missing, examples in rows
    }
    return [found.get(a, AttributeCoverage(a, 0, 0, ())) for a in attributes]


def notify_attribute_coverage(warehouse: Warehouse, coverage: Sequence[AttributeCoverage]) -> None:
    """The seed's two notifications: attributes no user has, and attributes some users lack."""
    none_have = [c for c in coverage if c.missing_for_all]
    some_lack = [c for c in coverage if c.missing_for_some]
    if none_have:
        names = ", ".join(c.attribute for c in none_have)
        warehouse.notify(
            "attributes_not_synchronized_all",
            "warning",
            f"Custom attribute(s) {names} have no value for any of the {none_have[0].users} "
            "users: check the names in user_source.custom_attributes (a directory extension is "
            "extension_<appId without dashes>_<name>) and that Entra ID fills them in.",
            {"attributes": {c.attribute: c.details() for c in none_have}},
        )
    if some_lack:
        counts = ", ".join(
            f"{c.attribute} ({c.missing} of {c.users} users, e.g. "
            f"{', '.join(c.examples[:EXAMPLES_IN_MESSAGE])})"
            for c in some_lack
        )
        warehouse.notify(
            "attributes_not_synchronized_some",
            "warning",
            f"Custom attribute(s) have no value for some users: {counts}; features that use "
            "them may not work as expected for those users.",
            {"attributes": {c.attribute: c.details() for c in some_lack}},
        )


@dg.asset_check(
    asset=mdm_key("user_attributes"),
    name=ATTRIBUTES_CHECK,
    blocking=False,
    description="Every configured custom attribute has a value for every user (a warning: the "
    "users are synchronized either way).",
)
def mdm_custom_attributes_synchronized(
    warehouse: Warehouse, connector: ConnectorResource
) -> dg.AssetCheckResult:
    with warehouse.reader() as con:
        coverage = attribute_coverage(con, connector.settings.user_source.custom_attributes)
    lacking = [c for c in coverage if c.missing]
    return dg.AssetCheckResult(
        passed=not lacking,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            "; ".join(
                f"{c.attribute}: missing for {'every' if c.missing_for_all else 'some'} user "
                f"({c.missing} of {c.users})"
                for c in lacking
            )
            or None
        ),
        metadata={
            "attributes": dg.MetadataValue.json({c.attribute: c.details() for c in coverage}),
            "attributes_missing_for_all": [c.attribute for c in coverage if c.missing_for_all],
            "attributes_missing_for_some": [c.attribute for c in coverage if c.missing_for_some],
        },
    )


MDM_USERS_COLUMNS = IdentityColumns(
    object_ids=("id",),
    upns=("userPrincipalName",),
    # A guest's UPN-based Apple ID keeps its #EXT# local part: UPN-shaped, not e-mail-shaped.
    optional_upns=("managed_apple_id",),
    emails=("mail",),
)


@dg.asset_check(
    asset=mdm_key("users"),
    name=MDM_USERS_CHECK,
    blocking=True,
    description="mdm.users: unique non-null object ids, UPN and e-mail shape, Managed Apple ID "
    "shape, no timestamp in the future (pandera).",
)
def mdm_users_valid(warehouse: Warehouse) -> dg.AssetCheckResult:
    return check_identity_table(warehouse, "mdm.users", MDM_USERS_COLUMNS)


# ---- templates -------------------------------------------------------------------------------

RENDERED_SCHEMA = {
    "tenant_id": pl.String,
    "user_id": pl.String,
    "userPrincipalName": pl.String,
    "template": pl.String,
    "rendered": pl.String,
    "missing_variables": pl.List(pl.String),
}


def template_parts(text: str) -> list[tuple[str, bool]]:
    """(piece, is_variable) in order: `Hi ${userFirstName}!` -> Hi , userFirstName, !."""
    pieces = TEMPLATE_VAR_RE.split(text)
    return [(piece, index % 2 == 1) for index, piece in enumerate(pieces) if piece or index % 2]


def variable_column(name: str) -> str:
    """The frame column of a template variable, apart from the key columns beside it."""
    return f"var:{name}"


def template_variables(con: duckdb.DuckDBPyConnection, attributes: Sequence[str]) -> pl.DataFrame:
    """One row per user: tenant_id, user_id, userPrincipalName and a column per variable."""
    builtins = ", ".join(
        f"{_quoted(column)} AS {_quoted(variable_column(v))}"
        for v, column in BUILTIN_VARIABLES.items()
    )
    frame = con.sql(
        f"SELECT tenant_id, id AS user_id, userPrincipalName, {builtins} FROM mdm.users "
        "ORDER BY userPrincipalName, id"
    ).pl()
    values = con.sql("SELECT user_id, attribute, value FROM mdm.user_attributes").pl()
    for attribute in attributes:
        if attribute in BUILTIN_VARIABLES:
            continue  # an attribute named like a built-in variable is shadowed by it
        column = values.filter(pl.col("attribute") == attribute).select(
            "user_id", pl.col("value").alias(variable_column(attribute))
        )
        frame = frame.join(column, on="user_id", how="left")
    return frame


def render_templates(variables: pl.DataFrame, templates: dict[str, str]) -> pl.DataFrame:
    """Each template rendered per user; a variable without a value renders as empty text and is
    listed in `missing_variables`."""
    rendered = []
    for name, text in templates.items():
        parts = template_parts(text)
        used = list(dict.fromkeys(piece for piece, is_variable in parts if is_variable))
        pieces = [
            pl.col(variable_column(piece)).cast(pl.String).fill_null("")
            if is_variable
            else pl.lit(piece)
            for piece, is_variable in parts
        ]
        missing = (
            pl.concat_list(
                [
                    pl.when(pl.col(variable_column(v)).is_null()).then(pl.lit(v)).otherwise(None)
                    for v in used
                ]
            ).list.drop_nulls()
            if used
            else pl.lit([], dtype=pl.List(pl.String))
        )
        rendered.append(
            variables.select(
                "tenant_id",
                "user_id",
                "userPrincipalName",
                pl.lit(name).alias("template"),
                (pl.concat_str(pieces) if pieces else pl.lit("")).alias("rendered"),
                missing.cast(pl.List(pl.String)).alias("missing_variables"),
            )
        )
    return pl.concat(rendered) if rendered else pl.DataFrame(schema=RENDERED_SCHEMA)


@dg.asset(
    key=mdm_key("rendered_templates"),
    deps=[mdm_key("users"), mdm_key("user_attributes")],
    group_name=MDM_GROUP,
    description=DESCRIPTIONS["rendered_templates"],
    kinds={"duckdb"},
    metadata={"dagster/table_name": "mdm.rendered_templates"},
)
def mdm_rendered_templates(
    warehouse: Warehouse, connector: ConnectorResource
) -> dg.MaterializeResult:
    """Render each `${attributeName}` template of the user source for every user."""
    started = time.perf_counter()
    options = connector.settings.user_source
    with warehouse.transaction() as con:
        variables = template_variables(con, options.custom_attributes)
        frame = render_templates(variables, options.templates)
        con.register("rendered_frame", frame)
        rows = warehouse.replace_table(
            con,
            "mdm.rendered_templates",
            "SELECT *, $synced_at::TIMESTAMPTZ AS synced_at FROM rendered_frame "
            "ORDER BY template, userPrincipalName, user_id",
            {"synced_at": warehouse.run.started_at},
        )
        metadata = table_metadata(con, "mdm.rendered_templates", rows)
    incomplete = frame.filter(pl.col("missing_variables").list.len() > 0).group_by("template").len()
    metadata["rendered_with_missing_values"] = dg.MetadataValue.json(
        {name: 0 for name in options.templates} | dict(incomplete.iter_rows())
    )
    metadata["duration_seconds"] = round(time.perf_counter() - started, 3)
    return dg.MaterializeResult(metadata=metadata)


# ---- invitations -----------------------------------------------------------------------------


@dg.asset(
    key=mdm_key("invitations"),
    deps=[mdm_key("users"), mdm_key("rendered_templates")],
    group_name=MDM_GROUP,
    description=DESCRIPTIONS["invitations"],
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
    ledger = InvitationLedger(ledger_path(settings.duckdb_path))
    with warehouse.reader() as con:
        recipients = _recipients(con) if options.auto_invite else []
        templated = _templated_letters(con, options) if options.auto_invite else {}
    if not options.auto_invite:
        context.log.info("user_source.auto_invite is false: nobody is invited this run.")
    report, invitations = invite(
        ledger,
        tenant_id=settings.tenant_id,
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
        rows = load_invitations(con, warehouse, invitations.values())
        metadata = table_metadata(con, "mdm.invitations", rows)
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
    con: duckdb.DuckDBPyConnection, warehouse: Warehouse, invitations: Iterable[Invitation]
) -> int:
    """Replace mdm.invitations with the ledger's invitations of the tenant."""
    frame = pl.DataFrame(
        [vars(invitation) for invitation in invitations],
        schema={name: _POLARS_TYPES[kind] for name, kind in INVITATION_COLUMNS.items()},
    )
    con.register("invitations_frame", frame)
    rows = warehouse.replace_table(
        con,
        "mdm.invitations",
        "SELECT * FROM invitations_frame ORDER BY recorded_at, userPrincipalName, user_id",
    )
    return rows


_POLARS_TYPES = {"VARCHAR": pl.String, "TIMESTAMPTZ": pl.Datetime("us", "UTC")}


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def mdm_definitions() -> dg.Definitions:
    """The MDM user source's assets and checks; the root definitions add its job and schedule."""
    return dg.Definitions(
        assets=[mdm_directory, mdm_rendered_templates, mdm_invitations],
        asset_checks=[mdm_users_valid, mdm_custom_attributes_synchronized],
    )
