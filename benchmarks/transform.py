"""Benchmark of the transform layer: staging, filters, mapping and checks over a large raw layer.

Generates a 200k-user / 400k-device raw layer with DuckDB SQL (realistic mixes of licences, guests,
join types, stale objects and group membership), then times one Dagster run of the transform assets.
Run: .venv/bin/python benchmarks/transform.py [--users N] [--devices N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import dagster as dg
import duckdb
import yaml

from entra_pipeline.connector.definitions import transform_definitions
from entra_pipeline.connector.raw_layer import LANDED
from entra_pipeline.resources import ConnectorResource
from entra_pipeline.warehouse.loading import PROVENANCE_COLUMNS
from entra_pipeline.warehouse.resource import Warehouse

TENANT = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
SKUS = [
    "ENTERPRISEPACK",
    "SPE_E3",
    "SPE_E5",
    "EMS",
    "POWER_BI_PRO",
    "PROJECTPROFESSIONAL",
    "VISIOCLIENT",
    "FLOW_FREE",
    "TEAMS_EXPLORATORY",
    "O365_BUSINESS_PREMIUM",
    "WIN_DEF_ATP",
    "AAD_PREMIUM",
    "INTUNE_A",
    "STANDARDPACK",
    "EXCHANGESTANDARD",
]

# Every row draws its attributes from hash(i, salt): deterministic at any thread count.
GENERATE = {
    "subscribed_skus": """
        SELECT $tenant, now(), 'sku-' || i, name, 'Enabled', 1000
        FROM (SELECT unnest($skus) AS name, generate_subscripts($skus, 1) AS i)
    """,
    "users": """
        WITH u AS (
            SELECT i, CAST(hash(i, 'u') % 1000 AS INTEGER) AS r, CAST(hash(i, 'c') % 2920 AS INTEGER) AS created_days,
                CAST(hash(i, 'l') % 3 + 1 AS INTEGER) AS licences
            FROM range($users) AS t(i)
        )
        SELECT $tenant, now(),
            'user-' || i,
            CASE WHEN r < 80 THEN 'guest' || i || '_fabrikam.com#EXT#@contoso.onmicrosoft.com'
                ELSE 'user' || i || '@contoso.com' END,
            'Ünïcode Person ' || i, 'First' || i, 'Last' || i,
            CASE WHEN r % 10 = 0 THEN NULL ELSE 'user' || i || '@contoso.com' END,
            'Engineer', 'Dept ' || (i % 40), 'Office ' || (i % 25), '+1 555 ' || (i % 10000),
            CASE WHEN r % 5 = 0 THEN [] ELSE ['+1 555 0100', '+1 555 0199'] END,
            'E' || i, 'Employee', r >= 50, CASE WHEN r < 80 THEN 'Guest' ELSE 'Member' END,
            strftime(now() - to_days(created_days), '%Y-%m-%dT%H:%M:%SZ'),
            r % 3 = 0,
            CASE WHEN r % 3 = 0
                THEN strftime(now() - to_hours(r), '%Y-%m-%dT%H:%M:%SZ') END,
            json_object('extensionAttribute1', 'cc-' || (i % 100)),
            'City ' || (i % 300), 'State', 'Country', 'US', 'Contoso',
            -- 15% unlicensed; the others hold one to three SKUs
            CASE WHEN r >= 850 THEN '[]'::JSON ELSE to_json(list_transform(range(licences), lambda k:
                {'skuId': 'sku-' || ((i + k) % 15 + 1), 'disabledPlans': []})) END,
            CASE WHEN r % 5 = 0 THEN NULL
                ELSE json_object('id', 'user-' || (i // 20), 'userPrincipalName',
                    'user' || (i // 20) || '@contoso.com') END
        FROM u
    """,
    "sign_in_activity": """
        WITH s AS (SELECT i, CAST(hash(i, 's') % 1000 AS INTEGER) AS r FROM range($users) AS t(i))
        SELECT $tenant, now(), 'user-' || i,
            json_object(
                -- 70% signed in within a month, 15% long ago, 15% never ("" or 0001-01-01)
                'lastSignInDateTime', CASE
                    WHEN r < 700 THEN strftime(now() - to_hours(r), '%Y-%m-%dT%H:%M:%SZ')
                    WHEN r < 850 THEN strftime(now() - to_days(r), '%Y-%m-%dT%H:%M:%SZ')
                    WHEN r < 925 THEN '' ELSE '0001-01-01T00:00:00Z' END,
                'lastNonInteractiveSignInDateTime', CASE WHEN r % 2 = 0
                    THEN strftime(now() - to_hours(r * 2), '%Y-%m-%dT%H:%M:%SZ')
                    ELSE '' END,
                'lastSuccessfulSignInDateTime', '')
        FROM s
    """,
    "devices": """
        WITH d AS (SELECT i, CAST(hash(i, 'd') % 1000 AS INTEGER) AS r, CAST(hash(i, 'a') % 730 AS INTEGER) AS seen_days
                   FROM range($devices) AS t(i))
        SELECT $tenant, now(), 'device-' || i, 'dev-id-' || i, 'DESKTOP-' || i,
            CASE WHEN r < 500 THEN 'Windows' WHEN r < 700 THEN 'iOS' WHEN r < 900 THEN 'Android'
                ELSE 'MacMDM' END,
            '10.0.' || (r * 7),
            -- 40% joined, 30% registered, 25% hybrid, 5% without a trust type
            CASE WHEN r < 400 THEN 'AzureAd' WHEN r < 700 THEN 'Workplace'
                WHEN r < 950 THEN 'ServerAd' END,
            r % 20 <> 0, r % 4 <> 0, r % 3 <> 0, 'Lenovo', 'T' || (r % 20),
            CASE WHEN r % 10 = 0 THEN ''
                ELSE strftime(now() - to_days(seen_days), '%Y-%m-%dT%H:%M:%SZ') END,
            strftime(now() - to_days(seen_days + 30), '%Y-%m-%dT%H:%M:%SZ'),
            CASE WHEN r >= 700 AND r < 950
                THEN strftime(now() - to_hours(r), '%Y-%m-%dT%H:%M:%SZ') END,
            CASE WHEN r % 10 < 7 THEN to_json([{'id': 'user-' || (i // 2),
                'userPrincipalName': 'user' || (i // 2) || '@contoso.com'}]) ELSE '[]'::JSON END
        FROM d
    """,
    "groups": """
        SELECT $tenant, now(), 'group-' || i, 'Group ' || i, NULL, NULL, false, true, [],
            '2020-01-01T00:00:00Z'
        FROM range(2000) AS t(i)
    """,
    # transitiveMembers of the two filter groups: 60% of users, 60% of devices.
    "group_members": """
        SELECT $tenant, now(), 'group-1', 'user-' || i, 'user'
        FROM range($users) AS t(i) WHERE CAST(hash(i, 'g') % 10 AS INTEGER) < 6
        UNION ALL
        SELECT $tenant, now(), 'group-2', 'device-' || i, 'device'
        FROM range($devices) AS t(i) WHERE CAST(hash(i, 'h') % 10 AS INTEGER) < 6
    """,
    "group_filters": """
        SELECT $tenant, now(), 'users', 'Group 1', 'group-1'
        UNION ALL SELECT $tenant, now(), 'devices', 'Group 2', 'group-2'
    """,
    "extraction_status": """
        SELECT $tenant, now(), name, 'complete', NULL
        FROM (SELECT unnest(['users', 'sign_in_activity', 'devices', 'groups']) AS name)
    """,
}

RAW_COLUMNS = {
    **{landed.table: landed.columns for landed in LANDED},
    "group_filters": {"applies_to": "VARCHAR", "group_ref": "VARCHAR", "group_id": "VARCHAR"},
    "extraction_status": {"collection": "VARCHAR", "status": "VARCHAR", "reason": "VARCHAR"},
}


def generate_raw(db: Path, users: int, devices: int, filters: bool) -> dict[str, int]:
    """Write the raw layer into `db`; returns rows per table."""
    params = {"tenant": TENANT, "users": users, "devices": devices, "skus": SKUS}
    counts = {}
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS raw")
        for table, sql in GENERATE.items():
            if table == "group_filters" and not filters:
                sql = "SELECT * FROM (VALUES (NULL, NULL, NULL, NULL, NULL)) WHERE false"
            typed = {**PROVENANCE_COLUMNS, **RAW_COLUMNS[table]}
            ddl = ", ".join(f'"{name}" {kind}' for name, kind in typed.items())
            con.execute(f"CREATE OR REPLACE TABLE raw.{table} ({ddl})")
            used = {name: value for name, value in params.items() if f"${name}" in sql}
            con.execute(f"INSERT INTO raw.{table} {sql}", used)
            counts[table] = con.execute(f"SELECT count(*) FROM raw.{table}").fetchone()[0]
    return counts


def write_config(folder: Path, filters: bool) -> Path:
    os.environ.setdefault("ENTRA_BENCHMARK_SECRET", "benchmark-secret")  # never sent anywhere
    config = folder / "connector.yaml"
    document = {
        "tenant_id": TENANT,
        "client_id": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
        "client_secret": "${ENTRA_BENCHMARK_SECRET}",
        "devices": {
            "stale_threshold_days": 90 if filters else None,
            "join_types": ["entra_joined", "hybrid_entra_joined"] if filters else [],
            "groups": ["Group 2"] if filters else [],
        },
        "users": {
            "stale_threshold_days": 90 if filters else None,
            "groups": ["Group 1"] if filters else [],
        },
        "mapping_path": str(Path(__file__).resolve().parents[1] / "mappings" / "entra_id.csv"),
    }
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=400_000)
    parser.add_argument("--keep", type=Path, help="folder to keep the DuckDB file in")
    parser.add_argument(
        "--no-filters",
        action="store_true",
        help="every option off: the most rows through mapping and checks",
    )
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="entra-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "bench.duckdb"
    db.unlink(missing_ok=True)

    started = time.perf_counter()
    counts = generate_raw(db, args.users, args.devices, filters=not args.no_filters)
    print(f"raw layer generated in {time.perf_counter() - started:.1f} s: {counts}")

    definitions = transform_definitions()
    instance = dg.DagsterInstance.ephemeral()
    started = time.perf_counter()
    result = dg.materialize(
        [*definitions.assets, *definitions.asset_checks],  # type: ignore[list-item]
        resources={
            "warehouse": Warehouse(path=str(db), tenant_id=TENANT),
            "connector": ConnectorResource(
                config_path=str(write_config(folder, not args.no_filters))
            ),
        },
        instance=instance,
        raise_on_error=False,
    )
    total = time.perf_counter() - started

    print(f"\n{'step':<45} {'seconds':>8}")
    steps = sorted(instance.get_run_step_stats(result.run_id), key=lambda s: s.start_time)
    for step in steps:
        print(f"{step.step_key:<45} {step.end_time - step.start_time:>8.2f}")
    in_steps = sum(step.end_time - step.start_time for step in steps)
    print(f"{'staging + filter + map + checks (steps)':<45} {in_steps:>8.2f}")
    print(f"{'work copy, publication, Dagster overhead':<45} {total - in_steps:>8.2f}")
    print(f"{'whole run':<45} {total:>8.2f}")
    with duckdb.connect(str(db), read_only=True) as con:
        for table in (
            "staging.filtered_users",
            "staging.filtered_devices",
            "neurons.users",
            "neurons.devices",
        ):
            print(
                f"{table:<45} {con.execute(f'SELECT count(*) FROM {table}').fetchone()[0]:>8} rows"
            )
    print("success" if result.success else "FAILED")
    return 0 if result.success else 1


if __name__ == "__main__":
    raise SystemExit(main())
