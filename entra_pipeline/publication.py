"""Each sync job's last step: publish what the run built, so that Dagster's run status is the
publication's.

Publishing in the warehouse resource's teardown alone would run after Dagster has recorded the
run's success: a publication the lake refused (or a full disk) would show a successful run, fire
success sensors and let `entra-pipeline sync` print "published". The step depends on every asset
of its job, so it runs only when they all succeeded (a failed blocking check skips it); the
teardown still publishes a run whose selection left the step out, and records a failed run.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import dagster as dg

from entra_pipeline.warehouse.errors import WarehouseError
from entra_pipeline.warehouse.metadata import markdown_table
from entra_pipeline.warehouse.resource import Warehouse

PUBLICATION_GROUP = "publication"
SUMMARY_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("table", "VARCHAR", description="A table the run published (schema.table)."),
        dg.TableColumn("rows", "BIGINT", description="Its rows as published."),
    ]
)


def publication_key(job: str) -> dg.AssetKey:
    return dg.AssetKey(["publication", job])


def publication_asset(job: str, built: Iterable[object]) -> dg.AssetsDefinition:
    """The asset `publication/<job>`, downstream of every asset in `built` (the job's others;
    anything that is not an AssetsDefinition is ignored)."""
    keys = {key for asset in built if isinstance(asset, dg.AssetsDefinition) for key in asset.keys}
    upstream = sorted(keys, key=lambda key: key.to_user_string())

    @dg.asset(
        key=publication_key(job),
        deps=upstream,
        group_name=PUBLICATION_GROUP,
        kinds={"duckdb"},
        description=f"The tables {job} built, published in one step: readers see all of them "
        "or none (docs/tables.md). It runs only when every other step of the run succeeded.",
    )
    def _publish(warehouse: Warehouse) -> dg.MaterializeResult:
        started = time.perf_counter()
        try:
            published = warehouse.publish()
        except WarehouseError as error:
            raise dg.Failure(description=str(error), allow_retries=False) from None
        tables = sorted(published.rows_per_table.items())
        # Described as a table of its own, one row per published table, like every other asset.
        metadata: dict[str, dg.RawMetadataValue] = {
            "dagster/row_count": len(tables),
            "dagster/column_schema": SUMMARY_SCHEMA,
            "preview": dg.MetadataValue.md(markdown_table(["table", "rows"], tables)),
            "published_to": published.target,
            "duration_seconds": round(time.perf_counter() - started, 3),
        }
        if published.lake_snapshot is not None:
            metadata["lake_snapshot"] = published.lake_snapshot
        return dg.MaterializeResult(metadata=metadata)

    return _publish
