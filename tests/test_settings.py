"""The connector config: interpolation, defaults, and every kind of bad value rejected by name."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from entra_pipeline.config_file import load_settings, parse_settings
from entra_pipeline.secrets import redact
from entra_pipeline.settings import ConfigError

TENANT = "8f0c1a52-3c1e-4d7a-9a57-2f1f8f9b0c11"
CLIENT = "11111111-2222-3333-4444-555555555555"
SECRET = "s3cr3t-value-never-printed"


def _config(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "tenant_id": "${ENTRA_TENANT_ID}",
        "client_id": "${ENTRA_CLIENT_ID}",
        "client_secret": "${ENTRA_CLIENT_SECRET}",
    }
    base.update(overrides)
    return base


ENV = {"ENTRA_TENANT_ID": TENANT, "ENTRA_CLIENT_ID": CLIENT, "ENTRA_CLIENT_SECRET": SECRET}


def _error(document: dict[str, object], env: dict[str, str] = ENV) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_settings(document, env=env)
    message = str(caught.value)
    assert SECRET not in message
    return message


def test_env_interpolation_and_spec_defaults() -> None:
    settings = parse_settings(_config(), env=ENV)
    assert settings.tenant_id == TENANT
    assert settings.client_id == CLIENT
    assert settings.client_secret.get_secret_value() == SECRET
    assert SECRET not in repr(settings)
    assert settings.devices.stale_threshold_days == 90
    assert settings.devices.join_types == []
    assert settings.users.import_sign_in_activity is True
    assert (settings.schedule.repeats, settings.schedule.hour, settings.schedule.minute) == (
        "daily",
        2,
        0,
    )
    assert settings.scope == "https://graph.microsoft.com/.default"


def test_missing_environment_variable_is_named() -> None:
    env = {k: v for k, v in ENV.items() if k != "ENTRA_CLIENT_SECRET"}
    message = _error(_config(), env=env)
    assert "client_secret refers to ${ENTRA_CLIENT_SECRET}" in message
    assert "ENTRA_CLIENT_SECRET is not set" in message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"tenant_id": "not a tenant"}, "tenant_id: 'not a tenant' is neither a GUID"),
        ({"client_id": "abc"}, "client_id: 'abc' is not a GUID"),
        (
            {"devices": {"join_types": ["entra_joined", "azure"]}},
            "devices.join_types.1: 'azure' is not allowed; allowed: 'entra_registered', "
            "'entra_joined' or 'hybrid_entra_joined'",
        ),
        (
            {"users": {"stale_threshold_days": -5}},
            "users.stale_threshold_days: Input should be greater than or equal to 0",
        ),
        ({"schedule": {"start_time": "7pm"}}, "schedule.start_time: must be a time of day HH:MM"),
        ({"schedule": {"timezone": "Mars/Olympus"}}, "unknown timezone 'Mars/Olympus'"),
        (
            {"schedule": {"repeats": "monthly"}},
            "schedule.repeats: 'monthly' is not allowed; allowed: 'hourly', 'daily' or 'weekly'",
        ),
        ({"colour": "blue"}, "colour: unknown key; allowed here: connector_name, tenant_id"),
        (
            {"users": {"stale_days": 3}},
            "users.stale_days: unknown key; allowed here: stale_threshold_days, groups, "
            "import_sign_in_activity",
        ),
        (
            {"user_source": {"managed_apple_id": "phone"}},
            "user_source.managed_apple_id: 'phone' is not allowed; allowed: 'none', 'email' or 'upn'",
        ),
        ({"graph_url": "http://graph.microsoft.com"}, "graph_url: 'http://graph.microsoft.com'"),
        ({"devices": {"groups": ["a", "a"]}}, "devices.groups: Value error, 'a' is listed twice"),
        (
            {"sync": {"mode": "sometimes"}},
            "sync.mode: 'sometimes' is not allowed; allowed: 'incremental' or 'full'",
        ),
        (
            {"sync": {"full_resync_days": 0}},
            "sync.full_resync_days: Input should be greater than or equal to 1",
        ),
        (
            {"history": {"retention_days": 0}},
            "history.retention_days: Input should be greater than or equal to 1",
        ),
    ],
)
def test_invalid_values_are_rejected_naming_the_key(
    override: dict[str, object], expected: str
) -> None:
    message = _error(_config(**override))
    assert expected.replace("Value error, ", "") in message


def test_a_second_tenant_is_rejected_with_the_single_idp_reason() -> None:
    message = _error(_config(user_source={"tenant_id": "other.onmicrosoft.com"}))
    assert "supports a single identity provider" in message
    message = _error(_config(tenant_id=[TENANT, "other.onmicrosoft.com"]))
    assert "supports a single identity provider" in message


def test_templates_keep_their_variables_and_unknown_ones_are_errors() -> None:
    settings = parse_settings(
        _config(
            user_source={
                "custom_attributes": ["employeeId"],
                "templates": {"vpn": "${userUPN}-${employeeId}"},
            }
        ),
        env=ENV,
    )
    assert settings.user_source.templates == {"vpn": "${userUPN}-${employeeId}"}
    message = _error(_config(user_source={"templates": {"vpn": "${costCenter}"}}))
    assert "template 'vpn' uses ${costCenter}, which is not defined" in message


def test_literal_secret_is_accepted_with_a_warning_that_does_not_print_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text(f"tenant_id: {TENANT}\nclient_id: {CLIENT}\nclient_secret: {SECRET}\n")
    with caplog.at_level(logging.WARNING):
        settings = load_settings(config, env={})
    assert settings.client_secret.get_secret_value() == SECRET
    assert "client_secret is written in the file" in caplog.text
    assert SECRET not in caplog.text


def test_unquoted_yaml_time_is_read_as_a_time(tmp_path: Path) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text(
        f"tenant_id: {TENANT}\nclient_id: {CLIENT}\nclient_secret: x\nschedule:\n  start_time: 02:30\n"
    )
    assert load_settings(config, env={}).schedule.start_time == "02:30"


def test_missing_file_and_bad_yaml_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found: set ENTRA_CONNECTOR_CONFIG"):
        load_settings(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("tenant_id: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(broken)


def test_shipped_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "connector.example.yaml"
    settings = load_settings(example, env=ENV)
    assert settings.connector_name == "Contoso Entra ID"
    assert settings.user_source.templates == {}


def test_a_secret_written_into_the_wrong_key_is_never_echoed() -> None:
    # The client secret pasted into client_id, through its variable: the GUID error hides it.
    # A value no other test registered: the redaction registry is per process.
    fresh = "fresh-secret-for-the-wrong-key"
    env = {**ENV, "ENTRA_CLIENT_SECRET": fresh}
    message = _error(_config(client_id="${ENTRA_CLIENT_SECRET}"), env=env)
    assert fresh not in message
    assert message.splitlines()[-1] == (
        "  client_id: '***' is not a GUID; use the Application (client) ID of the app registration"
    )


def test_any_secret_looking_variable_is_masked_wherever_it_is_used() -> None:
    password = "smtp-relay-password-42"
    env = {**ENV, "SMTP_RELAY_PASSWORD": password}
    message = _error(_config(tenant_id="${SMTP_RELAY_PASSWORD}"), env=env)
    assert "tenant_id:" in message
    assert password not in message


def test_a_literal_secret_repeated_under_another_key_is_masked() -> None:
    literal = "literal-secret-pasted-twice"
    message = _error(_config(client_id=literal, client_secret=literal))
    assert "client_id: '***' is not a GUID" in message


@pytest.mark.parametrize("key", ["authority_host", "graph_url"])
def test_urls_with_credentials_are_rejected_without_echoing_them(key: str) -> None:
    message = _error(_config(**{key: "https://svc-user:url-password-9@graph.microsoft.com"}))
    assert f"{key}: must not carry credentials (user:password@host)" in message
    assert "url-password-9" not in message
    assert "svc-user" not in message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        # strict types: YAML's true is not 1 day, the text '30' is not 30
        (
            {"users": {"stale_threshold_days": True}},
            "users.stale_threshold_days: Input should be a valid integer",
        ),
        (
            {"devices": {"stale_threshold_days": "30"}},
            "devices.stale_threshold_days: Input should be a valid integer",
        ),
        (
            {"users": {"import_sign_in_activity": "yes"}},
            "users.import_sign_in_activity: Input should be a valid boolean",
        ),
        # bounded: past 2^31 days passed check and failed every sync after the extraction
        (
            {"devices": {"stale_threshold_days": 2**31}},
            "devices.stale_threshold_days: Input should be less than or equal to 36500",
        ),
        ({"users": {"stale_threshold_days": 36501}}, "less than or equal to 36500"),
    ],
)
def test_numbers_and_switches_are_strict_and_bounded(
    override: dict[str, object], expected: str
) -> None:
    assert expected in _error(_config(**override))


def test_an_empty_client_secret_is_rejected_before_the_token_service(tmp_path: Path) -> None:
    message = _error(_config(), env={**ENV, "ENTRA_CLIENT_SECRET": ""})
    assert "client_secret: is empty: set it to the app registration's client secret" in message


def test_a_ca_bundle_that_is_not_pem_is_rejected(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("not a certificate\n")
    message = _error(_config(ca_bundle=str(bundle)))
    assert f"ca_bundle: CA bundle {str(bundle)!r} is not a PEM file of CA certificates" in message


def test_duckdb_path_must_name_a_duckdb_file(tmp_path: Path) -> None:
    message = _error(_config(duckdb_path=str(tmp_path)))
    assert f"duckdb_path: {str(tmp_path)!r} is a directory" in message
    other = tmp_path / "notes.txt"
    other.write_text("meeting notes\n")
    message = _error(_config(duckdb_path=str(other)))
    assert f"duckdb_path: {str(other)!r} exists and is not a DuckDB database" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("tenant_id: x\n".encode("utf-16"), "not UTF-8 text (invalid start byte at byte 0"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8 text"),
        (
            b"tenant_id: a\nclient_id: b\ntenant_id: c\n",
            "not valid YAML: the key 'tenant_id' is written twice",
        ),
    ],
)
def test_files_that_are_not_one_utf8_yaml_mapping_are_clear(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "connector.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env=ENV)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


def _load(tmp_path: Path, text: str) -> str:
    """The ConfigError message of loading `text` (after the credentials) as a config file."""
    config = tmp_path / "connector.yaml"
    config.write_text(f"tenant_id: {TENANT}\nclient_id: {CLIENT}\nclient_secret: x\n{text}")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env={})
    return str(caught.value)


@pytest.mark.parametrize("written", ["2", "120", "1:30:00"])
def test_a_number_for_start_time_is_refused_not_read_as_minutes(
    tmp_path: Path, written: str
) -> None:
    # YAML 1.1 reads 2 as 2 and 1:30:00 as 5400: neither is a time of day the user meant.
    message = _load(tmp_path, f"schedule:\n  start_time: {written}\n")
    assert 'schedule.start_time: must be a time of day HH:MM (24-hour clock), e.g. "02:00"' in (
        message
    )


def test_numbers_read_as_yaml_1_2_reads_them(tmp_path: Path) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text(
        f"tenant_id: {TENANT}\nclient_id: {CLIENT}\nclient_secret: x\n"
        "devices:\n  stale_threshold_days: 1_0\nusers:\n  stale_threshold_days: 0x10\n"
        "schedule:\n  start_time: 23:59\n"
    )
    settings = load_settings(config, env={})
    assert settings.devices.stale_threshold_days == 10
    assert settings.users.stale_threshold_days == 16
    assert settings.schedule.start_time == "23:59"


def test_a_yaml_alias_is_refused_before_it_expands(tmp_path: Path) -> None:
    # "Billion laughs": nine levels of ten aliases, a few hundred bytes that expand to 10**9.
    levels = ['a0: &a0 ["lol"]'] + [
        f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 10)
    ]
    message = _load(tmp_path, "\n".join(levels) + "\n")
    assert "not valid YAML: an alias (*a0) is not allowed in a connector config" in message


def test_a_template_without_its_closing_brace_is_refused(tmp_path: Path) -> None:
    message = _error(_config(user_source={"templates": {"welcome": "Hello ${userUPN, welcome"}}))
    assert (
        "template 'welcome' opens a variable with ${ that is never closed "
        "('${userUPN, welcome'): write ${name}"
    ) in message


@pytest.mark.parametrize("sender", ["not an address", "user@", "@example.com", "a b@example.com"])
def test_the_smtp_sender_must_be_an_address(sender: str) -> None:
    message = _error(_config(user_source={"smtp": {"host": "smtp.example.com", "from": sender}}))
    assert f"user_source.smtp.from: {sender!r} is not an e-mail address" in message


def test_the_smtp_sender_may_carry_a_name() -> None:
    smtp = {"host": "smtp.example.com", "from": "IT Desk <it@example.com>"}
    settings = parse_settings(_config(user_source={"smtp": smtp}), env=ENV)
    assert settings.user_source.smtp is not None
    assert settings.user_source.smtp.from_address == "IT Desk <it@example.com>"


@pytest.mark.parametrize("key", ["connector_name", "duckdb_path"])
def test_a_secret_is_refused_where_it_would_be_written_as_it_is(key: str) -> None:
    env = {**ENV, "TENANT_API_TOKEN": "tok-3f9a8c7e-value"}  # named like a secret: registered
    message = _error(_config(**{key: "${TENANT_API_TOKEN}"}), env=env)
    assert f"{key}: holds the value of a secret" in message
    assert "tok-3f9a8c7e-value" not in message
    message = _error(_config(**{key: "${ENTRA_CLIENT_SECRET}"}))
    assert f"{key}: holds the value of a secret" in message


def test_a_lake_catalog_uri_with_a_password_is_refused_and_masked() -> None:
    catalog = "postgres:postgresql://entra:Hunter2-pg-pass@db.internal/entra"
    message = _error(
        _config(warehouse={"backend": "ducklake", "catalog": catalog, "data_path": "/lake"})
    )
    assert "warehouse.catalog: must not hold the password" in message
    assert "Hunter2-pg-pass" not in message


def test_a_uri_password_is_masked_wherever_it_shows_up() -> None:
    assert redact("connect to postgresql://app:S3cr3t!x@db:5432/lake failed") == (
        "connect to postgresql://app:***@db:5432/lake failed"
    )
    # A host with a port and a path is no user info.
    assert redact("https://127.0.0.1:8443/v1.0/users") == "https://127.0.0.1:8443/v1.0/users"
