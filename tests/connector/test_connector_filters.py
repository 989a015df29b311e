"""The connector's options (docs/options-and-mapping.md) as staging.filtered_users /
staging.filtered_devices apply them.

Every case runs the real SQL models through Dagster against the boundary tenant, with a 30-day
threshold where one is set: activity at exactly now - 30 days is kept, one second earlier dropped.
"""

from __future__ import annotations

import pytest

from entra_pipeline.settings import MAX_STALE_DAYS
from tests.connector.transform_fixtures import (
    ALL_DEVICES,
    LICENSED_USERS,
    STALE_DAYS,
    Transform,
    connector,
    contoso,
    with_group_filters,
    write_raw,
)

# -- devices ---------------------------------------------------------------------------------------


def test_every_device_kept_when_no_device_option_is_set(transform: Transform) -> None:
    write_raw(transform.db, contoso())
    transform.run(connector(transform.tmp_path), "staging/")
    assert transform.ids("staging.filtered_devices") == ALL_DEVICES


def test_device_stale_threshold_keeps_activity_at_the_boundary_on_each_timestamp(
    transform: Transform,
) -> None:
    write_raw(transform.db, contoso())
    transform.run(
        connector(transform.tmp_path, devices__stale_threshold_days=STALE_DAYS), "staging/"
    )
    # Dropped: each *-before (one second too old, per timestamp source) and d-no-activity.
    assert transform.ids("staging.filtered_devices") == [
        "d-onprem-boundary",  # onPremisesLastSyncDateTime
        "d-recent-no-trust",
        "d-recent-workplace",
        "d-registered-boundary",  # registrationDateTime
        "d-signin-boundary",  # approximateLastSignInDateTime
    ]


def test_device_without_any_activity_is_dropped_by_any_threshold(transform: Transform) -> None:
    write_raw(transform.db, contoso())
    transform.run(
        connector(transform.tmp_path, devices__stale_threshold_days=MAX_STALE_DAYS), "staging/"
    )
    assert transform.ids("staging.filtered_devices") == [
        d for d in ALL_DEVICES if d != "d-no-activity"
    ]


@pytest.mark.parametrize(
    ("join_types", "kept"),
    [
        (
            ["entra_registered"],
            ["d-recent-workplace", "d-registered-before", "d-registered-boundary"],
        ),
        (["entra_joined"], ["d-signin-before", "d-signin-boundary"]),
        (["hybrid_entra_joined"], ["d-onprem-before", "d-onprem-boundary"]),
        (
            ["entra_joined", "hybrid_entra_joined"],
            ["d-onprem-before", "d-onprem-boundary", "d-signin-before", "d-signin-boundary"],
        ),
        ([], ALL_DEVICES),  # every device, those without a trustType included
    ],
)
def test_join_types_keep_only_the_listed_trust_types(
    transform: Transform, join_types: list[str], kept: list[str]
) -> None:
    write_raw(transform.db, contoso())
    transform.run(connector(transform.tmp_path, devices__join_types=join_types), "staging/")
    assert transform.ids("staging.filtered_devices") == kept


def test_device_group_filter_keeps_transitive_device_members_only(transform: Transform) -> None:
    write_raw(transform.db, with_group_filters(contoso(), devices=True))
    transform.run(connector(transform.tmp_path, devices__groups=["g-laptops"]), "staging/")
    # d-recent-workplace and d-registered-before come through the nested Laptops Berlin group;
    # the group's user member is not a device.
    assert transform.ids("staging.filtered_devices") == [
        "d-recent-workplace",
        "d-registered-before",
        "d-signin-boundary",
    ]


def test_device_options_combine_with_and(transform: Transform) -> None:
    write_raw(transform.db, with_group_filters(contoso(), devices=True))
    transform.run(
        connector(
            transform.tmp_path,
            devices__stale_threshold_days=STALE_DAYS,
            devices__join_types=["entra_registered", "entra_joined"],
            devices__groups=["g-laptops"],
        ),
        "staging/",
    )
    # d-registered-before is in the group and registered, but one second too old.
    assert transform.ids("staging.filtered_devices") == ["d-recent-workplace", "d-signin-boundary"]


# -- users -----------------------------------------------------------------------------------------


def test_only_licensed_users_are_kept_guests_included(transform: Transform) -> None:
    write_raw(transform.db, contoso())
    transform.run(connector(transform.tmp_path), "staging/")
    # u-unlicensed has [] and u-guest-unlicensed null assignedLicenses.
    assert transform.ids("staging.filtered_users") == LICENSED_USERS


def test_user_stale_threshold_keeps_activity_at_the_boundary_on_each_timestamp(
    transform: Transform,
) -> None:
    write_raw(transform.db, contoso())
    transform.run(connector(transform.tmp_path, users__stale_threshold_days=STALE_DAYS), "staging/")
    # Dropped: each *-before, u-no-activity, and u-successful-only (lastSuccessfulSignInDateTime is
    # not one of the activity timestamps).
    assert transform.ids("staging.filtered_users") == [
        "u-created-boundary",  # createdDateTime
        "u-guest",
        "u-noninteractive-boundary",  # signInActivity.lastNonInteractiveSignInDateTime
        "u-onprem-boundary",  # onPremisesLastSyncDateTime
        "u-signin-boundary",  # signInActivity.lastSignInDateTime
    ]


def test_user_without_any_activity_is_dropped_by_any_threshold(transform: Transform) -> None:
    write_raw(transform.db, contoso())
    transform.run(
        connector(transform.tmp_path, users__stale_threshold_days=MAX_STALE_DAYS), "staging/"
    )
    assert transform.ids("staging.filtered_users") == [
        u for u in LICENSED_USERS if u != "u-no-activity"
    ]


def test_user_group_filter_by_name_with_apostrophe_keeps_transitive_licensed_members(
    transform: Transform,
) -> None:
    write_raw(transform.db, with_group_filters(contoso(), users=True))
    transform.run(connector(transform.tmp_path, users__groups=["O'Brien's team"]), "staging/")
    # u-guest and u-created-before are members through the nested group; u-unlicensed is a member
    # but has no licence; the group's device member is not a user.
    assert transform.ids("staging.filtered_users") == [
        "u-created-before",
        "u-guest",
        "u-signin-boundary",
    ]


def test_user_options_combine_with_and(transform: Transform) -> None:
    write_raw(transform.db, with_group_filters(contoso(), users=True))
    transform.run(
        connector(
            transform.tmp_path,
            users__stale_threshold_days=STALE_DAYS,
            users__groups=["O'Brien's team"],
        ),
        "staging/",
    )
    assert transform.ids("staging.filtered_users") == ["u-guest", "u-signin-boundary"]


# The stale_filter_skipped warning itself is the raw layer's, where the sign-in status is known:
# tests/test_connector_job.py pins it against the emulator.
def test_user_stale_threshold_skipped_when_sign_in_activity_unavailable(
    transform: Transform,
) -> None:
    reason = "403 Authentication_RequestFromNonPremiumTenantOrB2CTenant: needs Entra ID P1"
    write_raw(transform.db, contoso(sign_in_status="unavailable", reason=reason))
    transform.run(connector(transform.tmp_path, users__stale_threshold_days=STALE_DAYS), "staging/")
    assert transform.ids("staging.filtered_users") == LICENSED_USERS
    # raw.sign_in_activity still holds rows (e.g. from an earlier run): they are not used.
    assert transform.query(
        "SELECT count(*) FROM staging.users WHERE last_sign_in_at IS NOT NULL"
    ) == [(0,)]


def test_user_stale_threshold_skipped_when_sign_in_import_is_off(transform: Transform) -> None:
    reason = "users.import_sign_in_activity is false"
    write_raw(transform.db, contoso(sign_in_status="skipped", reason=reason))
    transform.run(
        connector(
            transform.tmp_path,
            users__stale_threshold_days=STALE_DAYS,
            users__import_sign_in_activity=False,
        ),
        "staging/",
    )
    assert transform.ids("staging.filtered_users") == LICENSED_USERS
