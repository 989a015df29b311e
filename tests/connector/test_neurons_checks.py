"""The blocking pandera checks on neurons.*: what they reject, and that a failure publishes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from entra_pipeline.connector.checks import NEURONS_DEVICES_CHECK, NEURONS_USERS_CHECK
from entra_pipeline.warehouse.validation import IdentityColumns, validate_identity_table
from tests.connector.transform_fixtures import (
    Transform,
    connector,
    contoso,
    device,
    user,
    write_raw,
)

PUBLISHED = ("neurons.users", "neurons.devices")


def _evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _snapshot(transform: Transform) -> dict[str, list[tuple]]:
    return {t: transform.query(f"SELECT * FROM {t} ORDER BY 2") for t in PUBLISHED}


def test_checks_pass_on_the_boundary_tenant(transform: Transform) -> None:
    write_raw(transform.db, contoso())
    result = transform.run(connector(transform.tmp_path))
    evaluations = _evaluations(result)
    assert {name: e.passed for name, e in evaluations.items() if name.startswith("neurons")} == {
        NEURONS_USERS_CHECK: True,
        NEURONS_DEVICES_CHECK: True,
    }
    assert evaluations[NEURONS_USERS_CHECK].metadata["rows_checked"].value == 11
    assert transform.notifications("data_check_failed") == []


def test_duplicate_user_ids_fail_the_check_and_keep_the_published_tables(
    transform: Transform,
) -> None:
    write_raw(transform.db, contoso())
    transform.run(connector(transform.tmp_path))
    before = _snapshot(transform)
    raw = contoso()
    raw.users.append(user("u-guest", userPrincipalName="copy@contoso.com"))
    write_raw(transform.db, raw)

    result = transform.run(connector(transform.tmp_path), raise_on_error=False)

    assert not result.success
    evaluation = _evaluations(result)[NEURONS_USERS_CHECK]
    assert (evaluation.passed, evaluation.severity) == (False, dg.AssetCheckSeverity.ERROR)
    assert evaluation.metadata["failure_counts"].value == {
        "User.EntraObjectId: field_uniqueness": 2
    }
    assert evaluation.metadata["failing_row_count"].value == 2
    failures = evaluation.metadata["failures"].value
    assert failures.count("| u-guest | User.EntraObjectId | field_uniqueness | u-guest |") == 2
    failing_rows = evaluation.metadata["failing_rows"].value.splitlines()
    assert failing_rows[0].startswith("| tenant_id | connector | User.EntraObjectId | User.UPN |")
    assert sorted(line.split(" | ")[2:4] for line in failing_rows[2:]) == [
        ["u-guest", "alice_fabrikam.com#EXT#@contoso.onmicrosoft.com"],
        ["u-guest", "copy@contoso.com"],
    ]
    assert _snapshot(transform) == before
    [(severity, message, details)] = transform.notifications("data_check_failed")
    assert severity == "error"
    assert message.startswith("neurons.users failed its checks: 2 of 12 rows")
    assert details["failure_counts"] == {"User.EntraObjectId: field_uniqueness": 2}
    assert {f["User.EntraObjectId"] for f in details["failures"]} == {"u-guest"}


def test_future_timestamp_fails_the_device_check_and_keeps_the_published_tables(
    transform: Transform,
) -> None:
    write_raw(transform.db, contoso())
    transform.run(connector(transform.tmp_path))
    before = _snapshot(transform)
    raw = contoso()
    raw.devices.append(
        device("d-from-the-future", "AzureAd", registrationDateTime="2999-01-01T00:00:00Z")
    )
    write_raw(transform.db, raw)

    result = transform.run(connector(transform.tmp_path), raise_on_error=False)

    assert not result.success
    evaluations = _evaluations(result)
    assert evaluations[NEURONS_USERS_CHECK].passed
    evaluation = evaluations[NEURONS_DEVICES_CHECK]
    assert not evaluation.passed
    assert evaluation.metadata["failure_counts"].value == {
        "Device.RegistrationDate: not_in_future": 1
    }
    assert "| d-from-the-future | Device.RegistrationDate | not_in_future | 2999-01-01" in (
        evaluation.metadata["failures"].value
    )
    assert _snapshot(transform) == before
    assert len(transform.notifications("data_check_failed")) == 1


def test_id_rule_follows_the_source_attribute_when_the_target_is_renamed(
    transform: Transform, tmp_path: Path
) -> None:
    mapping = tmp_path / "renamed.csv"
    mapping.write_text(
        "data_type,source_attribute,target_attribute,description\n"
        "User,id,ObjectGuid,renamed id\n"
        "User,userPrincipalName,Login,renamed UPN\n"
        "Device,id,Device.EntraObjectId,\n",
        encoding="utf-8",
    )
    raw = contoso()
    raw.users.append(user("u-guest", userPrincipalName="not-a-upn"))
    write_raw(transform.db, raw)

    result = transform.run(connector(tmp_path, mapping=mapping), raise_on_error=False)

    assert _evaluations(result)[NEURONS_USERS_CHECK].metadata["failure_counts"].value == {
        "ObjectGuid: field_uniqueness": 2,
        "Login: upn_shape": 1,
    }


# -- the schema itself, as the MDM user source will reuse it ---------------------------------------

CHECKED_AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
MDM_USERS = IdentityColumns(
    object_ids=("id",), upns=("userPrincipalName",), emails=("mail",), join_types=()
)


def _frame(**columns: list) -> pl.DataFrame:
    base = {
        "id": ["a", "b"],
        "userPrincipalName": ["a@contoso.com", "bob_fabrikam.com#EXT#@contoso.onmicrosoft.com"],
        "mail": ["a@contoso.com", None],
    }
    return pl.DataFrame({**base, **columns})


def _failed(frame: pl.DataFrame, columns: IdentityColumns = MDM_USERS) -> list[tuple]:
    report = validate_identity_table(frame, "mdm.users", columns, CHECKED_AT)
    return report.failures.select("row_index", "column", "check", "value").rows()


def test_guest_upn_with_ext_marker_and_missing_mail_pass() -> None:
    assert _failed(_frame()) == []


@pytest.mark.parametrize(
    ("columns", "failure"),
    [
        ({"id": ["a", None]}, (1, "id", "not_nullable", None)),
        (
            {"userPrincipalName": ["a@contoso.com", "bob"]},
            (1, "userPrincipalName", "upn_shape", "bob"),
        ),
        (
            {"userPrincipalName": ["a@contoso.com", None]},
            (1, "userPrincipalName", "not_nullable", None),
        ),
        ({"mail": ["a b@contoso.com", None]}, (0, "mail", "email_shape", "a b@contoso.com")),
        ({"mail": ["a@localhost", None]}, (0, "mail", "email_shape", "a@localhost")),
    ],
)
def test_identity_schema_rejects(columns: dict[str, list], failure: tuple) -> None:
    assert _failed(_frame(**columns)) == [failure]


def test_timestamps_up_to_clock_skew_pass_and_later_ones_fail() -> None:
    frame = _frame(
        lastSeen=[CHECKED_AT + timedelta(minutes=4), CHECKED_AT + timedelta(minutes=6)],
        created=[None, datetime(2020, 1, 1)],  # naive: taken as UTC
    ).with_columns(pl.col("lastSeen").dt.convert_time_zone("Europe/Berlin"))
    assert [row[:3] for row in _failed(frame)] == [(1, "lastSeen", "not_in_future")]


def test_join_type_must_be_a_label_or_null() -> None:
    columns = IdentityColumns(object_ids=("id",), join_types=("JoinType",))
    frame = pl.DataFrame(
        {"id": ["a", "b", "c"], "JoinType": ["Microsoft Entra joined", None, "AzureAd"]}
    )
    assert _failed(frame, columns) == [(2, "JoinType", "join_type_known", "AzureAd")]


def test_missing_object_id_column_fails_but_other_missing_columns_are_tolerated() -> None:
    frame = pl.DataFrame({"name": ["x"]})
    assert _failed(frame) == [(None, "id", "column_in_dataframe", "id")]
