"""Templates of the user source: each `${attributeName}` text rendered for every user into
`mdm.rendered_templates` (the custom attributes and five built-in variables are defined)."""

from __future__ import annotations

import time

import dagster as dg

from entra_pipeline.resources import ConnectorResource
from entra_pipeline.settings import BUILTIN_TEMPLATE_VARIABLES, TEMPLATE_VAR_RE
from entra_pipeline.user_source.tables import MDM_GROUP, USER_SOURCE_MEMORY_LIMIT, mdm_key
from entra_pipeline.warehouse.docs import CONNECTOR_DOC, TENANT_ID_DOC, document_table
from entra_pipeline.warehouse.resource import Warehouse
from entra_pipeline.warehouse.sql import literal, quoted

RENDERED_TEMPLATES_DESCRIPTION = "Each configured template rendered for each user."
RENDERED_TEMPLATES_DOCS = {
    "tenant_id": TENANT_ID_DOC,
    "connector": CONNECTOR_DOC,
    "user_id": "Object id of the user (mdm.users.id).",
    "userPrincipalName": "UPN of the user.",
    "template": "The template's name, as user_source.templates lists it.",
    "rendered": "The template with each ${variable} replaced by the user's value ('' when the "
    "user has none).",
    "missing_variables": "The variables the user has no value for; empty when complete.",
    "synced_at": "When the run that rendered it started (UTC).",
}
# Template variables that are always defined (settings validates templates against the same
# names), and the mdm.users column each reads.
BUILTIN_VARIABLES = dict(
    zip(
        BUILTIN_TEMPLATE_VARIABLES,
        ("userPrincipalName", "mail", "displayName", "givenName", "surname"),
        strict=True,
    )
)


def template_parts(text: str) -> list[tuple[str, bool]]:
    """(piece, is_variable) in order: `Hi ${userFirstName}!` -> Hi , userFirstName, !."""
    pieces = TEMPLATE_VAR_RE.split(text)
    return [(piece, index % 2 == 1) for index, piece in enumerate(pieces) if piece or index % 2]


def variable_column(name: str) -> str:
    """The column of a template variable, apart from the key columns beside it."""
    return quoted(f"var:{name}")


def rendered_templates_sql(templates: dict[str, str]) -> str:
    """One query rendering each template for each user of mdm.users (in DuckDB: no frame of
    the whole tenant in Python); a variable without a value renders as empty text and is listed
    in `missing_variables`."""
    used = list(
        dict.fromkeys(
            piece
            for text in templates.values()
            for piece, is_variable in template_parts(text)
            if is_variable
        )
    )
    values = [
        f"u.{quoted(BUILTIN_VARIABLES[v])} AS {variable_column(v)}"
        if v in BUILTIN_VARIABLES
        else f"a{i}.value AS {variable_column(v)}"
        for i, v in enumerate(used)
    ]
    # A custom attribute's values, one join each (a name like a built-in variable is shadowed).
    joins = [
        f"LEFT JOIN mdm.user_attributes AS a{i} ON u.id = a{i}.user_id "
        f"AND a{i}.attribute = {literal(v)}"
        for i, v in enumerate(used)
        if v not in BUILTIN_VARIABLES
    ]
    variables = (
        "SELECT u.tenant_id, u.connector, u.id AS user_id, u.userPrincipalName"
        + "".join(f", {value}" for value in values)
        + " FROM mdm.users AS u "
        + " ".join(joins)
    )
    selects = [_rendered_select(name, text) for name, text in templates.items()] or [
        "SELECT tenant_id, connector, user_id, userPrincipalName, NULL::VARCHAR AS template, "
        "NULL::VARCHAR AS rendered, NULL::VARCHAR[] AS missing_variables FROM variables LIMIT 0"
    ]
    return f"WITH variables AS ({variables}) " + " UNION ALL ".join(selects)


def _rendered_select(name: str, text: str) -> str:
    parts = template_parts(text)
    pieces = [
        f"coalesce(CAST({variable_column(piece)} AS VARCHAR), '')"
        if is_variable
        else literal(piece)
        for piece, is_variable in parts
    ]
    used = list(dict.fromkeys(piece for piece, is_variable in parts if is_variable))
    missing = ", ".join(
        f"CASE WHEN {variable_column(v)} IS NULL THEN {literal(v)} END" for v in used
    )
    return (
        "SELECT tenant_id, connector, user_id, userPrincipalName, "
        f"{literal(name)} AS template, "
        f"{' || '.join(pieces) if pieces else literal('')} AS rendered, "
        f"CAST(list_filter([{missing}], v -> v IS NOT NULL) AS VARCHAR[]) AS missing_variables "
        "FROM variables"
    )


@dg.asset(
    key=mdm_key("rendered_templates"),
    deps=[mdm_key("users"), mdm_key("user_attributes")],
    group_name=MDM_GROUP,
    description=RENDERED_TEMPLATES_DESCRIPTION,
    kinds={"duckdb"},
    metadata={"dagster/table_name": "mdm.rendered_templates"},
)
def mdm_rendered_templates(
    warehouse: Warehouse, connector: ConnectorResource
) -> dg.MaterializeResult:
    """Render each `${attributeName}` template of the user source for every user."""
    started = time.perf_counter()
    options = connector.settings.user_source
    with warehouse.transaction(USER_SOURCE_MEMORY_LIMIT) as con:
        rows = warehouse.replace_table(
            con,
            "mdm.rendered_templates",
            f"SELECT *, $synced_at::TIMESTAMPTZ AS synced_at FROM ("
            f"{rendered_templates_sql(options.templates)}"
            ") ORDER BY template, userPrincipalName, user_id",
            {"synced_at": warehouse.run.started_at},
        )
        document_table(
            con, "mdm.rendered_templates", RENDERED_TEMPLATES_DESCRIPTION, RENDERED_TEMPLATES_DOCS
        )
        metadata = warehouse.table_metadata(con, "mdm.rendered_templates", rows)
        incomplete = con.execute(
            "SELECT template, count(*) FROM mdm.rendered_templates "
            "WHERE len(missing_variables) > 0 GROUP BY template"
        ).fetchall()
    metadata["rendered_with_missing_values"] = dg.MetadataValue.json(
        {name: 0 for name in options.templates} | dict(incomplete)
    )
    metadata["duration_seconds"] = round(time.perf_counter() - started, 3)
    return dg.MaterializeResult(metadata=metadata)
