"""The CSV mapping: neurons.* follow the CSV alone, and a broken row fails the run, naming the row."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from entra_pipeline.connector.mapping import LISTED, validated_mapping
from entra_pipeline.connector.mapping_csv import MappingInvalid, read_mapping
from tests.connector.transform_fixtures import (
    SHIPPED_MAPPING,
    TENANT,
    Transform,
    connector,
    contoso,
    write_raw,
)

PUBLISHED = ("neurons.users", "neurons.devices", "ops.attribute_mapping")
# Rows of the shipped CSV (the header is row 1).
DEVICE_ID_ROW, USER_ID_ROW, USER_UPN_ROW, USER_FULL_NAME_ROW = 3, 16, 17, 18


def shipped_targets(data_type: str) -> list[str]:
    frame = read_mapping(SHIPPED_MAPPING)
    return frame.filter(frame["data_type"] == data_type)["target_attribute"].to_list()


def edited_mapping(
    tmp_path: Path,
    replace: dict[int, str] | None = None,
    remove: tuple[int, ...] = (),
    append: tuple[str, ...] = (),
) -> Path:
    """A copy of the shipped CSV with rows replaced, removed or appended (by row number)."""
    lines = SHIPPED_MAPPING.read_text(encoding="utf-8").splitlines()
    kept = [
        (replace or {}).get(number, line)
        for number, line in enumerate(lines, start=1)
        if number not in remove
    ]
    path = tmp_path / "edited.csv"
    path.write_text("\n".join([*kept, *append]) + "\n", encoding="utf-8")
    return path


def test_shipped_mapping_has_one_column_per_target_in_csv_order(transform: Transform) -> None:
    write_raw(transform.db, contoso())
    transform.run(connector(transform.tmp_path))
    assert transform.columns("neurons.users") == [
        "tenant_id",
        "connector",
        *shipped_targets("User"),
    ]
    assert transform.columns("neurons.devices") == [
        "tenant_id",
        "connector",
        *shipped_targets("Device"),
    ]
    assert transform.query(
        'SELECT "User.UPN", "User.FullName", "User.Licenses", "User.Manager", "User.BusinessPhone" '
        "FROM neurons.users WHERE \"User.EntraObjectId\" = 'u-signin-boundary'"
    ) == [
        (
            "u-signin-boundary@contoso.com",
            "Zoë O'Brien",
            "EMS,ENTERPRISEPACK,sku-unknown",
            "boss@contoso.com",
            "+1 555 0100",
        )
    ]
    assert transform.query(
        'SELECT tenant_id, connector, "DeviceName", "Device.JoinType", "Device.Owner", '
        '"Device.IsCompliant" FROM neurons.devices '
        "WHERE \"Device.EntraObjectId\" = 'd-signin-boundary'"
    ) == [
        (
            TENANT,
            "Entra ID",
            "D-SIGNIN-BOUNDARY",
            "Microsoft Entra joined",
            "owner@contoso.com",
            True,
        )
    ]
    assert transform.query(
        "SELECT tenant_id, row, data_type, source_attribute, target_attribute "
        "FROM ops.attribute_mapping WHERE row IN (2, 37) ORDER BY row"
    ) == [
        (TENANT, 2, "Device", "displayName", "DeviceName"),
        (TENANT, 37, "User", "license_names", "User.Licenses"),
    ]


def test_adding_a_mapping_row_adds_a_column(transform: Transform) -> None:
    write_raw(transform.db, contoso())
    mapping = edited_mapping(
        transform.tmp_path,
        append=("User,extensionAttribute3,User.CostCentre,On-premises cost centre",),
    )
    transform.run(connector(transform.tmp_path, mapping=mapping))
    assert transform.columns("neurons.users") == [
        "tenant_id",
        "connector",
        *shipped_targets("User"),
        "User.CostCentre",
    ]
    assert transform.query(
        'SELECT "User.CostCentre" FROM neurons.users WHERE "User.EntraObjectId" = \'u-signin-boundary\''
    ) == [("cost-centre-42",)]


def test_renaming_a_target_renames_the_column_in_place(transform: Transform) -> None:
    write_raw(transform.db, contoso())
    mapping = edited_mapping(
        transform.tmp_path,
        replace={USER_FULL_NAME_ROW: 'User,displayName,"User.Display ""Name""",Display name'},
    )
    transform.run(connector(transform.tmp_path, mapping=mapping))
    expected = [
        'User.Display "Name"' if target == "User.FullName" else target
        for target in shipped_targets("User")
    ]
    assert transform.columns("neurons.users") == ["tenant_id", "connector", *expected]


def test_removing_a_row_removes_the_column(transform: Transform) -> None:
    write_raw(transform.db, contoso())
    mapping = edited_mapping(transform.tmp_path, remove=(USER_FULL_NAME_ROW,))
    transform.run(connector(transform.tmp_path, mapping=mapping))
    assert "User.FullName" not in transform.columns("neurons.users")
    assert transform.columns("neurons.users") == [
        "tenant_id",
        "connector",
        *(target for target in shipped_targets("User") if target != "User.FullName"),
    ]


@pytest.fixture(scope="module")
def published_good_sync(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB file holding a successful sync with the shipped mapping."""
    tmp_path = tmp_path_factory.mktemp("good")
    transform = Transform(db=tmp_path / "entra.duckdb", tmp_path=tmp_path)
    write_raw(transform.db, contoso())
    transform.run(connector(tmp_path))
    return transform.db


BROKEN_ROWS = {
    "unknown source": (
        {"replace": {USER_FULL_NAME_ROW: "User,displayNam,User.FullName,Display name"}},
        "row 18: source_attribute 'displayNam' is not a column of staging.filtered_users; "
        "nearest valid: displayName",
    ),
    "source in the wrong case": (
        {"replace": {USER_FULL_NAME_ROW: "User,DisplayName,User.FullName,Display name"}},
        "row 18: source_attribute 'DisplayName' is not a column of staging.filtered_users; "
        "nearest valid: displayName (names are case-sensitive)",
    ),
    "unknown device source": (
        {"replace": {2: "Device,dispayName,DeviceName,Device display name"}},
        "row 2: source_attribute 'dispayName' is not a column of staging.filtered_devices; "
        "nearest valid: displayName, isManaged",
    ),
    "unknown data type": (
        {"replace": {USER_FULL_NAME_ROW: "user,displayName,User.FullName,Display name"}},
        "row 18: data_type 'user' is not one of User, Device; nearest valid: User "
        "(names are case-sensitive)",
    ),
    "duplicate target, other case": (
        {"append": ("User,mail,user.upn,Mail again",)},
        "row 38: target_attribute 'user.upn' is already mapped for User on row 17 "
        "(as 'User.UPN'; names are case-insensitive); rename or remove one of them",
    ),
    "empty source": (
        {"replace": {USER_FULL_NAME_ROW: "User,,User.FullName,Display name"}},
        "row 18: source_attribute is empty",
    ),
    "empty target": (
        {"replace": {USER_FULL_NAME_ROW: "User,displayName, ,Display name"}},
        "row 18: target_attribute is empty",
    ),
    "reserved target": (
        {"replace": {USER_FULL_NAME_ROW: "User,displayName,tenant_id,Display name"}},
        "row 18: target_attribute 'tenant_id' is reserved (tenant_id and connector are added "
        "to every mapped table); choose another name",
    ),
    "reserved target, any case": (
        {"replace": {USER_FULL_NAME_ROW: "User,displayName,Connector,Display name"}},
        "row 18: target_attribute 'Connector' is reserved (tenant_id and connector are added "
        "to every mapped table); choose another name",
    ),
    "same snake_case view name": (
        {"append": ("User,mail,User_UPN,Mail again",)},
        "row 38: target_attribute 'User_UPN' becomes user_upn in neurons.users_v, as row 17 "
        "does; rename one of them",
    ),
    "no letter for a view name": (
        {"append": ("User,mail,...,Mail again",)},
        "row 38: target_attribute '...' has no letter or digit to name its column in "
        "neurons.users_v; choose another name",
    ),
    "object id not mapped": (
        {"remove": (DEVICE_ID_ROW,)},
        "no row maps Device 'id': neurons.devices needs the object id (add a row: "
        "Device,id,<target>,<description>)",
    ),
}


@pytest.mark.parametrize("broken", list(BROKEN_ROWS))
def test_broken_mapping_row_fails_the_run_naming_row_and_nearest_name(
    broken: str, published_good_sync: Path, tmp_path: Path
) -> None:
    edit, problem = BROKEN_ROWS[broken]
    transform = Transform(db=tmp_path / "entra.duckdb", tmp_path=tmp_path)
    shutil.copyfile(published_good_sync, transform.db)
    before = {t: transform.query(f"SELECT * FROM {t} ORDER BY 2") for t in PUBLISHED}
    mapping = edited_mapping(tmp_path, **edit)

    result = transform.run(connector(tmp_path, mapping=mapping), raise_on_error=False)

    assert not result.success
    [(severity, message, details)] = transform.notifications("mapping_invalid")
    assert severity == "error"
    assert details["problems"] == [problem]
    assert details["path"] == str(mapping)
    assert problem in message
    [(status, error)] = transform.query(
        "SELECT status, error FROM ops.sync_runs ORDER BY finished_at DESC LIMIT 1"
    )
    assert status == "failure"
    assert problem in error
    assert {t: transform.query(f"SELECT * FROM {t} ORDER BY 2") for t in PUBLISHED} == before


def test_mapping_without_a_required_column_names_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("data_type,source,target_attribute\nUser,id,User.Id\n", encoding="utf-8")
    transform = Transform(db=tmp_path / "entra.duckdb", tmp_path=tmp_path)
    write_raw(transform.db, contoso())
    result = transform.run(connector(tmp_path, mapping=path), raise_on_error=False)
    assert not result.success
    [(_, _, details)] = transform.notifications("mapping_invalid")
    assert details["problems"] == [
        "the header has no 'source_attribute' column; the mapping CSV needs the columns "
        "data_type, source_attribute, target_attribute, description",
        "the header has no 'description' column; the mapping CSV needs the columns "
        "data_type, source_attribute, target_attribute, description",
    ]


def test_mapping_cells_are_trimmed_and_blank_lines_skipped(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        "\ufeffdata_type, source_attribute ,target_attribute,description\n"
        "User , id, User.Id ,\n\nDevice,id,Device.Id,x\n",
        encoding="utf-8",
    )
    assert read_mapping(path).rows() == [
        (2, "User", "id", "User.Id", None),
        (4, "Device", "id", "Device.Id", "x"),
    ]


def test_missing_mapping_file_is_a_mapping_invalid_error(tmp_path: Path) -> None:
    transform = Transform(db=tmp_path / "entra.duckdb", tmp_path=tmp_path)
    write_raw(transform.db, contoso())
    missing = tmp_path / "nowhere.csv"
    result = transform.run(connector(tmp_path, mapping=missing), raise_on_error=False)
    assert not result.success
    [(_, _, details)] = transform.notifications("mapping_invalid")
    assert details["problems"] == [
        f"the mapping CSV cannot be read ([Errno 2] No such file or directory: '{missing}'); "
        "mapping_path in the connector config names it"
    ]


NEEDS = (
    "the mapping CSV needs the columns data_type, source_attribute, target_attribute, description"
)
BROKEN_FILES = {
    "empty": (
        b"",
        "the mapping CSV is empty; its first row must be the header: data_type, "
        "source_attribute, target_attribute, description",
    ),
    "no target_attribute": (
        b"data_type,source_attribute,description\nUser,id,x\n",
        f"the header has no 'target_attribute' column; {NEEDS}",
    ),
    "no data_type": (
        b"source_attribute,target_attribute,description\nid,X,x\n",
        f"the header has no 'data_type' column; {NEEDS}",
    ),
    "capitalised header": (
        b"Data_Type,source_attribute,target_attribute,description\nUser,id,X,x\n",
        "the header has no 'data_type' column (it is written 'Data_Type'; names are "
        f"lower-case); {NEEDS}",
    ),
    "semicolons": (
        b"data_type;source_attribute;target_attribute;description\nUser;id;X;x\n",
        "the header 'data_type;source_attribute;target_attribute;description' is separated by "
        "';': the mapping CSV separates columns with commas (data_type, source_attribute, "
        "target_attribute, description)",
    ),
    "NUL in the header": (
        b"data_type,source_attribute,target\x00_attribute,description\nUser,id,X,x\n",
        "the header contains a NUL character: the file is not a text CSV",
    ),
    "unterminated quote": (
        b'data_type,source_attribute,target_attribute,description\nUser,id,X,"never closed\n',
        "the mapping CSV cannot be read (unexpected end of data); mapping_path in the "
        "connector config names it",
    ),
}


@pytest.mark.parametrize("broken", list(BROKEN_FILES))
def test_a_broken_mapping_file_is_mapping_invalid_and_nothing_is_published(
    broken: str, published_good_sync: Path, tmp_path: Path
) -> None:
    content, problem = BROKEN_FILES[broken]
    transform = Transform(db=tmp_path / "entra.duckdb", tmp_path=tmp_path)
    shutil.copyfile(published_good_sync, transform.db)
    before = {t: transform.query(f"SELECT * FROM {t} ORDER BY 2") for t in PUBLISHED}
    mapping = tmp_path / "broken.csv"
    mapping.write_bytes(content)

    result = transform.run(connector(tmp_path, mapping=mapping), raise_on_error=False)

    assert not result.success
    [(severity, message, details)] = transform.notifications("mapping_invalid")
    assert severity == "error"
    assert details["problems"] == [problem]
    assert problem in message
    assert {t: transform.query(f"SELECT * FROM {t} ORDER BY 2") for t in PUBLISHED} == before


def test_a_mapping_of_100000_unknown_sources_gets_a_bounded_answer(tmp_path: Path) -> None:
    """A generated CSV of 100,000 rows naming no real column: the first rows named with their
    suggestions, the valid names listed once, the rest counted (it took 372 s and 94 MB)."""
    path = tmp_path / "m.csv"
    rows = [f"User,unknownAttribute{i},User.Target{i},x" for i in range(100_000)]
    path.write_text(
        "data_type,source_attribute,target_attribute,description\n"
        "User,id,User.Id,x\nDevice,id,Device.Id,x\n" + "\n".join(rows) + "\n",
        encoding="utf-8",
    )
    columns = {"User": ["id", "accountEnabled", "userPrincipalName"], "Device": ["id"]}
    _, problems = validated_mapping(path, columns)
    assert len(problems) == LISTED + 1
    assert problems[0] == (
        "row 4: source_attribute 'unknownAttribute0' is not a column of "
        "staging.filtered_users; no similar name; valid names: id, accountEnabled, "
        "userPrincipalName"
    )
    assert problems[1] == (
        "row 5: source_attribute 'unknownAttribute1' is not a column of "
        "staging.filtered_users; no similar name; see the valid names above"
    )
    assert problems[-1] == (
        "99,980 more rows (rows 24 to 100003) name a source_attribute that is not a column: "
        "fix the ones above and run check again"
    )
    assert len(str(MappingInvalid(path, problems))) < 5_000


def test_a_mapping_error_message_lists_fifty_problems_and_counts_the_rest() -> None:
    message = str(MappingInvalid(Path("m.csv"), [f"row {n}: wrong" for n in range(2, 502)]))
    assert message.splitlines()[0] == "mapping m.csv is invalid (500 problems):"
    assert message.splitlines()[50] == "  - row 51: wrong"
    assert message.splitlines()[-1] == "  - and 450 more: fix these and run check again"
