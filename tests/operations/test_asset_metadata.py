"""What an engineer sees in Dagster: every asset described and grouped by layer, and every
materialization of a real sync carrying row count, column schema, a preview, its duration and,
where it read Graph, its requests and retries."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest

from entra_pipeline.config_file import load_settings
from entra_pipeline.definitions import build_definitions
from entra_pipeline.emulator import Emulator
from entra_pipeline.graph.collections import ALL as GRAPH_COLLECTIONS
from entra_pipeline.names import CONNECTOR_JOB
from entra_pipeline.names import USER_SOURCE_JOB as MDM_JOB
from entra_pipeline.operations.freshness import FRESHNESS_JOB, FRESHNESS_SCHEDULE
from entra_pipeline.user_source.directory import DIRECTORY_TABLES

LAYERS = {
    "raw", "staging", "filtered", "mapping", "neurons", "history", "reports", "mdm", "publication"
}  # fmt: skip
EVERY_MATERIALIZATION = {
    "dagster/row_count",
    "dagster/column_schema",
    "preview",
    "duration_seconds",
}


@pytest.fixture
def definitions(emulator: Emulator, config_for: Callable[..., Path]) -> dg.Definitions:
    config = config_for(
        emulator,
        users={"groups": ["Dept - Sales"]},
        user_source={"custom_attributes": ["employeeId", "extensionAttribute1"]},
    )
    return build_definitions(load_settings(config), str(config))


def test_every_asset_has_a_description_and_a_layer_group(definitions: dg.Definitions) -> None:
    specs = definitions.resolve_all_asset_specs()

    assert {spec.key.to_user_string() for spec in specs if not spec.description} == set()
    assert {spec.group_name for spec in specs} == LAYERS


def test_jobs_schedules_and_sensors_are_all_there(definitions: dg.Definitions) -> None:
    assert {job.name for job in definitions.resolve_all_job_defs()} >= {
        CONNECTOR_JOB,
        MDM_JOB,
        FRESHNESS_JOB,
    }
    repository = definitions.get_repository_def()
    assert {s.name for s in repository.schedule_defs} == {
        "entra_id_sync_schedule",
        "mdm_user_source_sync_schedule",
        FRESHNESS_SCHEDULE,
    }
    assert {s.name for s in repository.sensor_defs} == {
        "record_failed_sync_runs",
        "record_canceled_sync_runs",
    }


def test_every_materialization_of_both_syncs_carries_the_standard_metadata(
    definitions: dg.Definitions,
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    materializations: dict[str, dict[str, object]] = {}
    for job in (CONNECTOR_JOB, MDM_JOB):
        result = definitions.resolve_job_def(job).execute_in_process(instance=instance)
        for event in result.get_asset_materialization_events():
            materialization = event.materialization
            materializations[materialization.asset_key.to_user_string()] = dict(
                materialization.metadata
            )

    every_asset = {spec.key.to_user_string() for spec in definitions.resolve_all_asset_specs()}
    assert set(materializations) == every_asset
    lacking = {
        key: sorted(EVERY_MATERIALIZATION - set(metadata))
        for key, metadata in materializations.items()
        if EVERY_MATERIALIZATION - set(metadata)
    }
    assert lacking == {}
    for key, metadata in materializations.items():
        rows = metadata["dagster/row_count"]
        assert isinstance(rows.value, int), key
        assert rows.value >= 0, key
        assert isinstance(metadata["dagster/column_schema"].schema, dg.TableSchema), key
        assert isinstance(metadata["preview"], dg.MarkdownMetadataValue), key
    graph_backed = [f"raw/{c.table}" for c in GRAPH_COLLECTIONS] + [
        "raw/group_members",
        *(f"mdm/{table}" for table in DIRECTORY_TABLES),
    ]
    for key in graph_backed:
        assert materializations[key]["graph_requests"].value >= 1, key
        assert materializations[key]["graph_retries"].value == 0, key
    # Each job's last step lists what it published, with the rows each table's step reported.
    for job, table in ((CONNECTOR_JOB, "neurons.users"), (MDM_JOB, "mdm.users")):
        published = materializations[f"publication/{job}"]
        lines = published["preview"].md_str.splitlines()  # type: ignore[attr-defined]
        rows = materializations[table.replace(".", "/")]["dagster/row_count"].value  # type: ignore[attr-defined]
        assert f"| {table} | {rows} |" in lines, job
        assert published["dagster/row_count"].value == len(lines) - 2, job  # type: ignore[attr-defined]
