"""staging.users / staging.devices derived columns, and the runner that turns .sql files into assets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from entra_pipeline.config_file import parse_settings
from entra_pipeline.connector.definitions import transform_definitions
from entra_pipeline.connector.models import connector_models, connector_parameters
from entra_pipeline.connector.raw_layer import create_empty_raw_layer
from entra_pipeline.graph.collections import DEVICES
from entra_pipeline.settings import ConnectorSettings
from entra_pipeline.warehouse.docs import TENANT_ID_DOC, column_comments, table_comment
from entra_pipeline.warehouse.errors import ModelError
from entra_pipeline.warehouse.models import (
    bind_parameters,
    build_models,
    create_table,
    discover_models,
    read_model,
)
from tests.connector.transform_fixtures import CUTOFF, NOW, Transform, connector, contoso, write_raw

CUTOFF_AT = datetime.fromisoformat(CUTOFF)


def test_staging_user_has_licence_names_manager_phone_and_sign_in(transform: Transform) -> None:
    write_raw(transform.db, contoso())
    transform.run(connector(transform.tmp_path), "staging/users")
    row = transform.query(
        "SELECT license_names, license_count, manager_upn, business_phone, lastSignInDateTime, "
        "lastSuccessfulSignInDateTime, last_sign_in_at, last_activity_at, extensionAttribute3, "
        "displayName, is_guest FROM staging.users WHERE id = 'u-signin-boundary'"
    )
    assert row == [
        (
            # sorted skuPartNumbers; a SKU missing from subscribedSkus keeps its id
            "EMS,ENTERPRISEPACK,sku-unknown",
            3,
            "boss@contoso.com",
            "+1 555 0100",
            CUTOFF_AT,
            None,  # "" is null
            CUTOFF_AT,
            CUTOFF_AT,
            "cost-centre-42",
            "Zoë O'Brien",
            False,
        )
    ]


def test_never_timestamps_are_null_and_activity_ignores_them(transform: Transform) -> None:
    write_raw(transform.db, contoso())
    transform.run(connector(transform.tmp_path), "staging/users")
    rows = transform.query(
        "SELECT id, lastSignInDateTime, createdDateTime, last_activity_at FROM staging.users "
        "WHERE id IN ('u-noninteractive-before', 'u-no-activity', 'u-created-before') ORDER BY id"
    )
    just_before = datetime.fromisoformat("2025-05-02T11:59:59+00:00")
    long_ago = datetime.fromisoformat("2024-04-27T12:00:00+00:00")
    assert rows == [
        ("u-created-before", None, just_before, just_before),  # 0001-01-01 sign-in is null
        ("u-no-activity", None, None, None),  # createdDateTime "" and no sign-in row
        ("u-noninteractive-before", None, long_ago, just_before),
    ]


def test_unlicensed_users_have_licence_count_zero_and_no_names(transform: Transform) -> None:
    write_raw(transform.db, contoso())
    transform.run(connector(transform.tmp_path), "staging/users")
    assert transform.query(
        "SELECT id, license_count, license_names, is_guest FROM staging.users "
        "WHERE license_count = 0 ORDER BY id"
    ) == [("u-guest-unlicensed", 0, None, True), ("u-unlicensed", 0, None, False)]


def test_staging_device_join_type_owner_and_activity(transform: Transform) -> None:
    write_raw(transform.db, contoso())
    transform.run(connector(transform.tmp_path), "staging/devices")
    assert transform.query(
        "SELECT id, trustType, join_type_label, join_type, last_activity_at FROM staging.devices "
        "WHERE id IN ('d-signin-boundary', 'd-registered-boundary', 'd-onprem-boundary', "
        "'d-no-activity') ORDER BY id"
    ) == [
        ("d-no-activity", None, None, None, None),
        (
            "d-onprem-boundary",
            "ServerAd",
            "Hybrid Microsoft Entra joined",
            "hybrid_entra_joined",
            CUTOFF_AT,
        ),
        (
            "d-registered-boundary",
            "Workplace",
            "Microsoft Entra registered",
            "entra_registered",
            CUTOFF_AT,
        ),
        ("d-signin-boundary", "AzureAd", "Microsoft Entra joined", "entra_joined", CUTOFF_AT),
    ]
    assert transform.query(
        "SELECT owner_upn, owner_count FROM staging.devices WHERE id = 'd-signin-boundary'"
    ) == [("owner@contoso.com", 2)]


def test_model_materialization_reports_rows_schema_preview_and_duration(
    transform: Transform,
) -> None:
    write_raw(transform.db, contoso())
    result = transform.run(connector(transform.tmp_path), "staging/devices")
    [materialization] = result.asset_materializations_for_node("staging__devices")
    metadata = materialization.metadata
    assert metadata["dagster/row_count"].value == 9
    schema = metadata["dagster/column_schema"].value
    # Each column's description is its DuckDB comment: the registry's for a column staging
    # keeps from raw, the model's YAML for one it derives.
    assert schema.columns[:3] == [
        dg.TableColumn(name="tenant_id", type="VARCHAR", description=TENANT_ID_DOC),
        dg.TableColumn(name="id", type="VARCHAR", description=DEVICES.docs["id"]),
        dg.TableColumn(name="deviceId", type="VARCHAR", description=DEVICES.docs["deviceId"]),
    ]
    [last_activity] = [c for c in schema.columns if c.name == "last_activity_at"]
    assert last_activity.type == "TIMESTAMP WITH TIME ZONE"
    assert last_activity.description is not None
    assert last_activity.description.startswith("What the device stale threshold compares")
    preview = metadata["preview"].value.splitlines()
    assert preview[0].startswith("| tenant_id | id | deviceId |")
    assert len(preview) == 2 + 9
    assert metadata["duration_seconds"].value >= 0


def parameters_of(settings: ConnectorSettings, now: datetime) -> dict[str, object]:
    """What the connector binds, over an empty raw layer (sign-in activity not imported)."""
    with duckdb.connect() as con:
        create_empty_raw_layer(con, settings)
        return connector_parameters(settings, now, con)


def test_models_are_discovered_from_files_with_refs_groups_and_descriptions() -> None:
    models = {model.table: model for model in connector_models()}
    assert sorted(models) == [
        "staging.devices",
        "staging.filtered_devices",
        "staging.filtered_users",
        "staging.users",
    ]
    filtered = models["staging.filtered_users"]
    assert filtered.key == dg.AssetKey(["staging", "filtered_users"])
    assert filtered.group == "filtered"
    assert models["staging.users"].group == "staging"
    # A model it builds on is a ref; a table the extraction loads is a source, declared with
    # depends_on where only a macro or a parameter reads it.
    assert filtered.refs == ("staging.users",)
    assert set(filtered.sources) == {
        "raw.extraction_status",
        "raw.group_filters",
        "raw.group_members",
    }
    assert filtered.parameters == ("sign_in_imported", "user_stale_days", "now")
    assert filtered.description.startswith(
        "Users the connector imports (docs/options-and-mapping.md)"
    )
    assert "group:" not in filtered.description
    assert "{{" not in filtered.sql
    assert "FROM staging.users AS u" in filtered.sql


def test_adding_a_model_is_adding_a_file(tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    model = tmp_path / "reports" / "licensed_guests.sql"
    model.write_text(
        "-- Guests holding a licence.\n"
        "SELECT id FROM {{ ref('staging.filtered_users') }} WHERE is_guest\n",
        encoding="utf-8",
    )
    [found] = discover_models("reports", tmp_path)
    assert (found.table, found.group, found.description) == (
        "reports.licensed_guests",
        "reports",
        "Guests holding a licence.",
    )
    assert found.refs == ("staging.filtered_users",)


def test_unknown_parameter_names_the_model_file_and_the_known_ones(tmp_path: Path) -> None:
    (tmp_path / "staging").mkdir()
    path = tmp_path / "staging" / "typo.sql"
    path.write_text("-- Typo.\nSELECT * FROM range(3) WHERE $stale_dayz > 0\n", encoding="utf-8")
    settings = parse_settings(
        {
            "tenant_id": "contoso.onmicrosoft.com",
            "client_id": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
            "client_secret": "x" * 8,
        }
    )
    with pytest.raises(
        ModelError,
        match=r"typo.sql: unknown parameter \$stale_dayz; models of staging can use \$now",
    ):
        bind_parameters(read_model(path, tmp_path), parameters_of(settings, datetime.now(UTC)))


def test_parameters_are_bound_from_the_settings_not_formatted_into_sql() -> None:
    settings = parse_settings(
        {
            "tenant_id": "contoso.onmicrosoft.com",
            "client_id": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
            "client_secret": "x" * 8,
            "devices": {"stale_threshold_days": 14, "join_types": ["entra_joined"]},
        }
    )
    model = {m.table: m for m in connector_models()}["staging.filtered_devices"]
    assert bind_parameters(model, parameters_of(settings, NOW)) == {
        "device_stale_days": 14,
        "now": NOW,
        "join_types": ["entra_joined"],
    }
    assert "$device_stale_days" in model.sql


def test_transform_definitions_expose_every_table_and_blocking_check() -> None:
    definitions = transform_definitions()
    groups = {
        key.to_user_string(): group
        for assets in definitions.assets  # type: ignore[union-attr]
        for key, group in assets.group_names_by_key.items()
    }
    assert groups == {
        "staging/users": "staging",
        "staging/devices": "staging",
        "staging/filtered_users": "filtered",
        "staging/filtered_devices": "filtered",
        "ops/attribute_mapping": "mapping",
        "neurons/users": "neurons",
        "neurons/devices": "neurons",
        "reports/licence_waste": "reports",
        "reports/licence_waste_by_sku": "reports",
        "reports/device_hygiene": "reports",
    }
    checks = {
        (key.asset_key.to_user_string(), key.name, spec.blocking)
        for check in definitions.asset_checks  # type: ignore[union-attr]
        for key, spec in zip(check.check_keys, check.check_specs, strict=True)
    }
    assert checks == {
        ("neurons/users", "neurons_users_valid", True),
        ("neurons/devices", "neurons_devices_valid", True),
        # The reports' checks warn, never block the publication.
        ("reports/licence_waste", "licence_waste_empty", False),
        ("reports/licence_waste_by_sku", "licence_waste_by_sku_empty", False),
        ("reports/device_hygiene", "device_hygiene_empty", False),
    }


def test_every_connector_model_documents_every_column_it_builds() -> None:
    # Built on an empty raw layer, as `check` does: building documents, or fails naming the file.
    settings = parse_settings(
        {
            "tenant_id": "contoso.onmicrosoft.com",
            "client_id": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
            "client_secret": "x" * 8,
        }
    )
    with duckdb.connect() as con:
        create_empty_raw_layer(con, settings)
        parameters = connector_parameters(settings, datetime.now(UTC), con)
        built = build_models(con, connector_models(), parameters, create_table)
        assert sorted(built) == sorted(model.table for model in connector_models())
        for table in built:
            assert table_comment(con, table), table
            assert all(column_comments(con, table).values()), column_comments(con, table)
