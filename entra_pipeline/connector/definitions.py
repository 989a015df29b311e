"""The Entra ID connector (seed 000) as one Definitions: raw extraction, SQL models, the mapping,
`neurons.*` with their blocking checks, the `entra_id_sync` job and its schedule.

The root `entra_pipeline.definitions` merges it; its assets need the `warehouse` and `connector`
resources.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from entra_pipeline.connector.checks import transform_checks
from entra_pipeline.connector.history import HISTORY_GROUP, history_changes
from entra_pipeline.connector.mapping import mapping_assets
from entra_pipeline.connector.models import model_assets, report_checks
from entra_pipeline.connector.raw import RAW_GROUP, raw_entra
from entra_pipeline.connector.schedule import connector_schedule
from entra_pipeline.dagster_private import AssetJob
from entra_pipeline.names import CONNECTOR_JOB, SYNC_JOB_TAGS
from entra_pipeline.publication import publication_asset, publication_key
from entra_pipeline.settings import ScheduleOptions

CONNECTOR_GROUPS = (
    RAW_GROUP,
    "staging",
    "filtered",
    "mapping",
    "neurons",
    HISTORY_GROUP,
    "reports",
)


def transform_definitions() -> dg.Definitions:
    """Every staging, filtered, mapping and `neurons.*` asset, with the blocking checks."""
    return dg.Definitions(
        assets=[*model_assets(), *mapping_assets()],
        asset_checks=[*transform_checks(), *report_checks()],
    )


def connector_job(excluded: dg.AssetSelection, tags: Mapping[str, str] | None = None) -> AssetJob:
    """`entra_id_sync`: Graph -> raw -> staging -> filtered -> neurons.*, without `excluded`
    (checks the root runs on their own, such as freshness)."""
    return dg.define_asset_job(
        CONNECTOR_JOB,
        selection=(dg.AssetSelection.groups(*CONNECTOR_GROUPS) - excluded)
        | dg.AssetSelection.assets(publication_key(CONNECTOR_JOB)),
        description="The Entra ID connector: Graph -> raw -> staging -> filtered -> neurons.*, "
        "and history.changes, published in its last step",
        executor_def=dg.in_process_executor,
        tags={**SYNC_JOB_TAGS, **(tags or {})},
    )


def connector_definitions(
    schedule: ScheduleOptions,
    excluded: dg.AssetSelection,
    tags: Mapping[str, str] | None = None,
) -> dg.Definitions:
    """The connector's assets, checks, job and schedule."""
    job = connector_job(excluded, tags)
    transform = transform_definitions()
    publication = publication_asset(
        CONNECTOR_JOB, [raw_entra, history_changes, *(transform.assets or [])]
    )
    return dg.Definitions.merge(
        dg.Definitions(
            assets=[raw_entra, history_changes, publication],
            jobs=[job],
            schedules=[connector_schedule(schedule, job)],
        ),
        transform,
    )
