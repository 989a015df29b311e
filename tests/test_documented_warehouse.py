"""Every published table, view and column is documented, in DuckDB and in Dagster alike.

Both jobs run against the emulator into one DuckDB file (every option that adds tables or columns
on: sign-in activity, custom attributes of each kind, templates, invitations); then the file's
catalog must hold a comment for each table, view and column, and each materialization's column
schema must carry those same comments as descriptions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from entra_pipeline.config_file import load_settings
from entra_pipeline.definitions import build_definitions
from entra_pipeline.emulator import EmulatorConfig, running_emulator
from entra_pipeline.names import CONNECTOR_JOB, USER_SOURCE_JOB
from entra_pipeline.publication import PUBLICATION_GROUP, SUMMARY_SCHEMA
from entra_pipeline.resources import ConnectorResource
from tests.user_source.mdm_fixtures import SECRET_VARIABLE, UserSource

MAPPING = Path(__file__).resolve().parents[1] / "mappings" / "entra_id.csv"


@dataclass
class Published:
    db: Path
    results: list[dg.ExecuteInProcessResult]

    def query(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    with (
        running_emulator(EmulatorConfig(users=150, devices=120, seed=5)) as emu,
        pytest.MonkeyPatch.context() as monkeypatch,
    ):
        cost_center = emu.tenant.extension_property("costCenter")
        group = next(emu.tenant.groups())
        source = UserSource(
            emu,
            tmp_path_factory.mktemp("documented"),
            {
                "custom_attributes": ["employeeId", "extensionAttribute3", cost_center],
                "templates": {"badge": "${employeeId}/${" + cost_center + "}"},
            },
            {
                "mapping_path": str(MAPPING),
                "users": {"import_sign_in_activity": True},
                "devices": {"groups": [group["id"]]},
            },
        )
        mdm = source.run(monkeypatch)
        settings = load_settings(source.config_path)
        connector = ConnectorResource(config_path=str(source.config_path), max_retries=1)
        monkeypatch.setenv(SECRET_VARIABLE, emu.client_secret)
        definitions = build_definitions(settings, str(source.config_path), connector)
        sync = definitions.resolve_job_def(CONNECTOR_JOB).execute_in_process(
            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
        )
        assert mdm.success
        assert sync.success
        assert mdm.dagster_run.job_name == USER_SOURCE_JOB
        yield Published(source.db, [mdm, sync])


def test_every_published_table_view_and_column_has_a_comment(published: Published) -> None:
    objects = published.query(
        "SELECT schema_name || '.' || table_name, coalesce(comment, '') FROM duckdb_tables() "
        "UNION ALL SELECT schema_name || '.' || view_name, coalesce(comment, '') "
        "FROM duckdb_views() WHERE NOT internal ORDER BY 1"
    )
    names = [name for name, _ in objects]
    assert {"neurons.users_v", "neurons.devices_v", "mdm.rendered_templates"} <= set(names)
    assert {"mdm.invitations", "raw.sign_in_activity", "ops.attribute_mapping"} <= set(names)
    assert {"ops.delta_state", "history.changes", "mdm_extract.group_members"} <= set(names)
    assert {"ops.action_plans", "ops.action_plan_items", "ops.actions"} <= set(names)
    assert {"reports.licence_waste", "reports.device_hygiene"} <= set(names)
    assert len(names) == 36
    assert [name for name, comment in objects if not comment.strip()] == []
    columns = published.query(
        "SELECT schema_name || '.' || table_name || '.' || column_name, coalesce(comment, '') "
        "FROM duckdb_columns() WHERE NOT internal"
    )
    assert len(columns) > 350
    assert [name for name, comment in columns if not comment.strip()] == []


def test_dagster_column_descriptions_are_the_published_comments(published: Published) -> None:
    comments = {
        (table, column): comment
        for table, column, comment in published.query(
            "SELECT schema_name || '.' || table_name, column_name, comment FROM duckdb_columns() "
            "WHERE NOT internal"
        )
    }
    checked = set()
    for result in published.results:
        for event in result.get_asset_materialization_events():
            metadata = event.materialization.metadata
            if "dagster/column_schema" not in metadata:
                continue
            if event.asset_key.path[0] == PUBLICATION_GROUP:  # not a table: what was published
                assert metadata["dagster/column_schema"].value == SUMMARY_SCHEMA
                continue
            table = ".".join(event.asset_key.path)
            for column in metadata["dagster/column_schema"].value.columns:
                assert column.description == comments[(table, column.name)], (table, column)
            checked.add(table)
    # Every layer's assets: raw, staging, the mapping, neurons, history, reports and mdm.
    assert {"raw.users", "raw.group_filters", "staging.filtered_users", "neurons.users"} <= checked
    assert {"ops.attribute_mapping", "mdm.users", "mdm.invitations", "history.changes"} <= checked
    assert {"reports.licence_waste", "reports.device_hygiene"} <= checked
    assert len(checked) == 25


def test_columns_are_documented_from_the_mapping_the_registry_and_the_model_docs(
    published: Published,
) -> None:
    def comment(table: str, column: str) -> str:
        schema, name = table.split(".")
        [(text,)] = published.query(
            "SELECT comment FROM duckdb_columns() WHERE schema_name = "
            f"'{schema}' AND table_name = '{name}' AND column_name = '{column}'"
        )
        return text

    # neurons: the mapping CSV's description, naming the column it is read from.
    assert (
        comment("neurons.users", "User.Licenses")
        == "Assigned licences: sorted skuPartNumbers, comma separated. "
        "From staging.filtered_users.license_names."
    )
    # raw: the Graph registry; staging keeps it for a column it passes through, and its YAML
    # describes the columns it derives or parses.
    assert comment("raw.users", "mail") == comment("staging.users", "mail")
    assert comment("raw.users", "mail").startswith("Primary SMTP address")
    assert comment("raw.users", "createdDateTime").endswith(
        "(ISO 8601 UTC text; staging parses it)."
    )
    assert comment("staging.users", "createdDateTime") == (
        "When the user was created (UTC); null when Graph sent none."
    )
    # A custom attribute added to the user source's extraction is documented where it lands.
    assert comment("mdm.user_attributes", "value").startswith("The user's value as text")


def test_the_snake_case_views_read_the_neurons_tables(published: Published) -> None:
    rows = published.query(
        'SELECT u."User.UPN", v.user_upn, u."User.Licenses", v.user_licenses_list, '
        'v.user_entra_object_id = u."User.EntraObjectId" FROM neurons.users AS u '
        'JOIN neurons.users_v AS v ON v.user_entra_object_id = u."User.EntraObjectId" '
        "ORDER BY 1"
    )
    assert rows
    assert len(rows) == published.query("SELECT count(*) FROM neurons.users")[0][0]
    for upn, view_upn, licences, licence_list, same in rows:
        assert (view_upn, same) == (upn, True)
        assert licence_list == (licences.split(",") if licences else None)
    [(device_columns,)] = published.query(
        "SELECT list(column_name ORDER BY column_index) FROM duckdb_columns() "
        "WHERE schema_name = 'neurons' AND table_name = 'devices_v'"
    )
    assert device_columns[:5] == [
        "tenant_id",
        "connector",
        "device_name",
        "device_entra_object_id",
        "device_entra_device_id",
    ]
    assert "os_name" in device_columns
    assert "device_is_compliant" in device_columns
