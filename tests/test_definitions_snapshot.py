"""The whole wiring, as a stored snapshot: a change to asset keys, groups, dependencies, checks,
jobs, schedules or sensors shows in review as a diff of `tests/snapshots/definitions.json`.

After an intended change: `UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/test_definitions_snapshot.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from entra_pipeline.config_file import parse_settings
from entra_pipeline.definitions import build_definitions

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def wiring(definitions: dg.Definitions) -> dict[str, Any]:
    """What a reviewer should see change: every node and edge of the Definitions."""
    repository = definitions.get_repository_def()
    graph = repository.asset_graph
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "table": node.metadata.get("dagster/table_name"),
        }
    checks = {
        f"{key.asset_key.to_user_string()}:{key.name}": {
            "blocking": graph.get(key).blocking,
        }
        for key in sorted(
            graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)
        )
    }
    jobs = {}
    for job in sorted(repository.get_all_jobs(), key=lambda j: j.name):
        if job.name.startswith("__"):
            continue  # Dagster's implicit asset job
        layer = job.asset_layer.asset_graph
        jobs[job.name] = {
            "assets": sorted(k.to_user_string() for k in layer.executable_asset_keys),
            "checks": sorted(
                f"{k.asset_key.to_user_string()}:{k.name}" for k in layer.asset_check_keys
            ),
            "executor": job.executor_def.name,
        }
    schedules = {
        s.name: {
            "job": s.job_name,
            "cron": s.cron_schedule,
            "timezone": s.execution_timezone,
            "default_status": s.default_status.value,
        }
        for s in repository.schedule_defs
    }
    sensors = {
        s.name: {
            "jobs": sorted(t.job_name for t in s.targets),
            "default_status": s.default_status.value,
        }
        for s in repository.sensor_defs
    }
    return {
        "assets": assets,
        "checks": checks,
        "jobs": jobs,
        "schedules": schedules,
        "sensors": sensors,
    }


def test_definitions_match_the_stored_snapshot() -> None:
    settings = parse_settings(
        {
            "tenant_id": "contoso.onmicrosoft.com",
            "client_id": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
            "client_secret": "snapshot-secret-not-real",
            "duckdb_path": "data/snapshot.duckdb",
            "schedule": {"repeats": "weekly", "day_of_week": "monday", "timezone": "Europe/Berlin"},
            "user_source": {"sync_interval_minutes": 90},
        }
    )
    found = wiring(build_definitions(settings, "connector.yaml"))
    text = json.dumps(found, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(text, encoding="utf-8")
    assert SNAPSHOT.exists(), f"no snapshot yet: run with UPDATE_SNAPSHOTS=1 to write {SNAPSHOT}"
    assert json.loads(SNAPSHOT.read_text(encoding="utf-8")) == found
