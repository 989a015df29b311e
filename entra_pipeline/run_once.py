"""`entra-pipeline sync`: one run of `entra_id_sync` in this process, as the schedule would start
it (incremental unless `--full`), without `dagster dev`.

It uses the Dagster instance of `$DAGSTER_HOME` when that is set (the run shows in the UI's run
history), else a throwaway one. Exit codes: 0 published, 1 the run failed (nothing published; the
reason is in `ops.sync_runs` and printed), 2 the config is invalid.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from typing import Any

import dagster as dg
from rich.console import Console

from entra_pipeline.config_file import config_path, load_settings
from entra_pipeline.connector_folder import is_fleet, load_fleet
from entra_pipeline.definitions import build_definitions
from entra_pipeline.incremental import FULL_SYNC_TAG
from entra_pipeline.names import CONNECTOR_JOB, CONNECTORS_PARTITIONS
from entra_pipeline.run_log import RunProgress, short_log, with_short_log
from entra_pipeline.run_tags import run_tags
from entra_pipeline.settings import ConfigError
from entra_pipeline.warehouse.failures import failure_causes


def run_sync(args: argparse.Namespace) -> int:
    if is_fleet(args.config):
        return _run_fleet(args)
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"Invalid config {config_path(args.config)}: {error}")
        return 2
    path = str(config_path(args.config))
    job = build_definitions(settings, path).resolve_job_def(CONNECTOR_JOB)
    tags = {FULL_SYNC_TAG: "true"} if args.full else {}
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None
    with instance or dg.DagsterInstance.ephemeral() as active, _run_log(args) as progress:
        job, run_config = _logged(job, progress)
        result = job.execute_in_process(
            instance=active, raise_on_error=False, tags=tags, run_config=run_config
        )
    mode = "full" if args.full else settings.sync.mode
    if result.success:
        print(f"{CONNECTOR_JOB} ({mode}) published to {settings.duckdb_path}")
        return 0
    print(
        f"{CONNECTOR_JOB} ({mode}) failed; nothing was published: "
        + "; ".join(failure_causes(result))
    )
    return 1


def _run_fleet(args: argparse.Namespace) -> int:
    """A folder of connectors: each connector's `entra_id_sync` partition in turn, in this
    process. One that fails or cannot run stops nobody else; the exit code is the worst."""
    from entra_pipeline.fleet import fleet_definitions

    try:
        fleet = load_fleet(args.config)
    except ConfigError as error:
        print(f"Invalid config {config_path(args.config)}: {error}")
        return 2
    codes = [2 for _ in fleet.invalid]
    for file, problem in fleet.invalid.items():
        print(f"{file.name} cannot run: {problem}")
    job = fleet_definitions(fleet.folder).resolve_job_def(CONNECTOR_JOB)
    tags = {FULL_SYNC_TAG: "true"} if args.full else {}
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None
    with instance or dg.DagsterInstance.ephemeral() as active, _run_log(args) as progress:
        job, run_config = _logged(job, progress)
        known = set(active.get_dynamic_partitions(CONNECTORS_PARTITIONS))
        active.add_dynamic_partitions(
            CONNECTORS_PARTITIONS, [s for s in fleet.connectors if s not in known]
        )
        for slug, connector in fleet.connectors.items():
            result = job.execute_in_process(
                instance=active,
                partition_key=slug,
                raise_on_error=False,
                run_config=run_config,
                tags={**tags, **run_tags(connector.settings, str(connector.path))},
            )
            where = connector.settings.duckdb_path
            if result.success:
                print(f"{slug}: {CONNECTOR_JOB} published to {where}")
                codes.append(0)
            else:
                print(
                    f"{slug}: {CONNECTOR_JOB} failed; nothing was published: "
                    + "; ".join(failure_causes(result))
                )
                codes.append(1)
    return max(codes, default=0)


@contextlib.contextmanager
def _run_log(args: argparse.Namespace) -> Iterator[RunProgress | None]:
    """The short run log on stderr (None with --verbose: Dagster's console log, all of it)."""
    if getattr(args, "verbose", False):
        yield None
        return
    with short_log(Console(stderr=True, highlight=False, soft_wrap=True)) as progress:
        progress.begin(CONNECTOR_JOB)
        yield progress


def _logged(
    job: dg.JobDefinition, progress: RunProgress | None
) -> tuple[dg.JobDefinition, dict[str, Any]]:
    return (job, {}) if progress is None else with_short_log(job, progress)
