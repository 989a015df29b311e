"""The MDM user source (seed 001) as one Definitions: the directory, templates and invitations
assets, their checks, the `mdm_user_source_sync` job and its schedule.

The root `entra_pipeline.definitions` merges it; its assets need the `warehouse` and `connector`
resources.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from entra_pipeline.names import SYNC_JOB_TAGS, USER_SOURCE_JOB
from entra_pipeline.publication import publication_asset, publication_key
from entra_pipeline.settings import UserSourceOptions
from entra_pipeline.user_source.attributes import mdm_custom_attributes_synchronized
from entra_pipeline.user_source.directory import mdm_directory, mdm_users_valid
from entra_pipeline.user_source.invitations import mdm_invitations
from entra_pipeline.user_source.schedule import user_source_schedule
from entra_pipeline.user_source.tables import MDM_GROUP
from entra_pipeline.user_source.templates import mdm_rendered_templates


def user_source_definitions(
    options: UserSourceOptions,
    timezone: str,
    excluded: dg.AssetSelection,
    tags: Mapping[str, str] | None = None,
) -> dg.Definitions:
    """The user source's assets, checks, job (without `excluded`) and schedule."""
    job = dg.define_asset_job(
        USER_SOURCE_JOB,
        selection=(dg.AssetSelection.groups(MDM_GROUP) - excluded)
        | dg.AssetSelection.assets(publication_key(USER_SOURCE_JOB)),
        description="The MDM Entra ID user source: every user and group -> mdm.*, invitations, "
        "published in its last step",
        executor_def=dg.in_process_executor,
        tags={**SYNC_JOB_TAGS, **(tags or {})},
    )
    built = [mdm_directory, mdm_rendered_templates, mdm_invitations]
    publication = publication_asset(USER_SOURCE_JOB, built)
    return dg.Definitions(
        assets=[*built, publication],
        asset_checks=[mdm_users_valid, mdm_custom_attributes_synchronized],
        jobs=[job],
        schedules=[user_source_schedule(options, timezone, job)],
    )
