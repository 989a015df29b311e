"""The mapping CSV checked offline, against the columns the SQL models build: what `check` reports
and what a run that will map checks before it reads Graph (a wrong source attribute then fails it
with no Graph request, not after the whole extraction)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb

from entra_pipeline.connector.mapping import MAPPED_TABLES, validated_mapping
from entra_pipeline.connector.mapping_csv import MappingInvalid
from entra_pipeline.connector.models import connector_models, connector_parameters
from entra_pipeline.connector.raw_layer import create_empty_raw_layer
from entra_pipeline.settings import ConnectorSettings
from entra_pipeline.warehouse.docs import table_columns
from entra_pipeline.warehouse.models import build_models, create_table


def filtered_columns(settings: ConnectorSettings) -> dict[str, list[str]]:
    """The columns of each filtered table, per data type, from the SQL models themselves.

    The model runner builds them in memory over empty raw tables typed like a real extraction, so
    the answer is exactly what a sync would build, without data and without a network call.
    """
    with duckdb.connect() as con:
        create_empty_raw_layer(con, settings)
        parameters = connector_parameters(settings, datetime.now(UTC), con)
        build_models(con, connector_models(), parameters, create_table)
        return {table.data_type: table_columns(con, table.source) for table in MAPPED_TABLES}


def require_valid_mapping(settings: ConnectorSettings) -> None:
    """MappingInvalid, naming every problem (a missing or unreadable file, its header, each row
    against the filtered tables' columns), unless the mapping CSV would map."""
    path = Path(settings.mapping_path)
    _, problems = validated_mapping(path, filtered_columns(settings))
    if problems:
        raise MappingInvalid(path, problems)
