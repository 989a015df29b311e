"""What the warehouse layer raises: a misused warehouse, a bad table name, a model that cannot
be read or bound."""

from __future__ import annotations

from entra_pipeline.errors import PipelineError


class WarehouseError(PipelineError):
    """The warehouse was used wrongly (outside a run, a malformed table name)."""


class ModelError(PipelineError):
    """A SQL model file in dbt_like_sql/ cannot be read, ordered or bound; names the file."""
