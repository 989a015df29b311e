"""The transform layer as one Definitions: SQL models, the mapping, `neurons.*` and their checks.

The root `entra_pipeline.definitions` merges it; the assets need the `warehouse` and `connector`
resources and run in the `entra_id_sync` job.
"""

from __future__ import annotations

import dagster as dg

from entra_pipeline.assets.mapping import mapping_assets
from entra_pipeline.assets.models import model_assets
from entra_pipeline.checks import transform_checks


def transform_definitions() -> dg.Definitions:
    """Every staging, filtered, mapping and `neurons.*` asset, with the blocking checks."""
    return dg.Definitions(
        assets=[*model_assets(), *mapping_assets()], asset_checks=transform_checks()
    )
