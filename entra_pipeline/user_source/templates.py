"""Templates of the user source: each `${attributeName}` text rendered for every user into
`mdm.rendered_templates` (the custom attributes and five built-in variables are defined)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import dagster as dg
import duckdb
import polars as pl

from entra_pipeline.resources import ConnectorResource
from entra_pipeline.settings import BUILTIN_TEMPLATE_VARIABLES, TEMPLATE_VAR_RE
from entra_pipeline.user_source.tables import MDM_GROUP, mdm_key
from entra_pipeline.warehouse.docs import CONNECTOR_DOC, TENANT_ID_DOC, document_table
from entra_pipeline.warehouse.publish import Warehouse
from entra_pipeline.warehouse.sql import quoted

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

RENDERED_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "tenant_id": pl.String,
    "connector": pl.String,
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
    """One row per user: tenant_id, connector, user_id, userPrincipalName and a column per
    variable."""
    builtins = ", ".join(
        f"{quoted(column)} AS {quoted(variable_column(v))}"
        for v, column in BUILTIN_VARIABLES.items()
    )
    frame = con.sql(
        f"SELECT tenant_id, connector, id AS user_id, userPrincipalName, {builtins} FROM mdm.users "
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
                "connector",
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
        document_table(
            con, "mdm.rendered_templates", RENDERED_TEMPLATES_DESCRIPTION, RENDERED_TEMPLATES_DOCS
        )
        metadata = warehouse.table_metadata(con, "mdm.rendered_templates", rows)
    incomplete = frame.filter(pl.col("missing_variables").list.len() > 0).group_by("template").len()
    metadata["rendered_with_missing_values"] = dg.MetadataValue.json(
        {name: 0 for name in options.templates} | dict(incomplete.iter_rows())
    )
    metadata["duration_seconds"] = round(time.perf_counter() - started, 3)
    return dg.MaterializeResult(metadata=metadata)
