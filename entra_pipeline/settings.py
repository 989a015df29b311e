"""The connector configuration (docs/configuration.md): one YAML file, `${ENV}` interpolation,
strict validation.

Everything is checked before any network call; errors name the key and what is allowed, and never
echo a secret.
"""

from __future__ import annotations

import email.utils
import logging
import re
import ssl
import zoneinfo
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from entra_pipeline.credential_options import ActionOptions, ClientCertificate, msal_credential
from entra_pipeline.errors import PipelineError
from entra_pipeline.secrets import URI_PASSWORD, register_secret
from entra_pipeline.vocabulary import JOIN_TYPE_OPTIONS, is_guid

log = logging.getLogger(__name__)

# Where the warehouse is published when the config does not say (and before there is a config).
DEFAULT_DUCKDB_PATH = "data/entra.duckdb"

# The option values of devices.join_types, from the one vocabulary.
JoinType = Literal[JOIN_TYPE_OPTIONS]  # type: ignore[valid-type]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)([a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}$"
)
# A stale threshold is days; a century bounds it (and keeps DuckDB's day arithmetic in range).
MAX_STALE_DAYS = 36500
TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
# A custom attribute: a top-level property, extensionAttribute1..15 or extension_<appId>_<name>.
ATTRIBUTE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
TEMPLATE_VAR_RE = re.compile(r"\$\{([^}]*)\}")
BUILTIN_TEMPLATE_VARIABLES = (
    "userUPN",
    "userEmail",
    "userDisplayName",
    "userFirstName",
    "userLastName",
)


class ConfigError(PipelineError, ValueError):
    """The connector configuration is missing or invalid; the message says where and what is allowed."""


class _Strict(BaseModel):
    # strict: YAML's `true` is not 1 day and the string '30' is not 30 (a number from ${ENV} is
    # text, so numbers are written in the file).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DeviceOptions(_Strict):
    stale_threshold_days: int | None = Field(default=90, ge=0, le=MAX_STALE_DAYS)
    join_types: list[JoinType] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)

    @field_validator("join_types", "groups")
    @classmethod
    def _no_duplicates(cls, values: list[str]) -> list[str]:
        return _unique(values)


class UserOptions(_Strict):
    stale_threshold_days: int | None = Field(default=90, ge=0, le=MAX_STALE_DAYS)
    groups: list[str] = Field(default_factory=list)
    import_sign_in_activity: bool = True
    # Graph lets an app read signInActivity 10 times a minute per tenant (identity and access
    # service limits, docs/performance.md): the pass is paced at this rate instead of running into
    # 429s.
    sign_in_requests_per_minute: int = Field(default=10, ge=1, le=10_000)

    @field_validator("groups")
    @classmethod
    def _no_duplicates(cls, values: list[str]) -> list[str]:
        return _unique(values)


class ScheduleOptions(_Strict):
    repeats: Literal["hourly", "daily", "weekly"] = "daily"
    start_time: str = "02:00"
    day_of_week: Weekday = "sunday"
    timezone: str = "UTC"
    active: bool = True

    @field_validator("start_time", mode="before")
    @classmethod
    def _time_of_day(cls, value: Any) -> str:
        # The config's YAML reads 02:00 as text (config_file.py has no sexagesimal numbers), so a
        # number here was written as one: `start_time: 2` is not "00:02".
        if not isinstance(value, str) or not TIME_RE.match(value):
            raise ValueError('must be a time of day HH:MM (24-hour clock), e.g. "02:00"')
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown timezone {value!r}; use an IANA name such as UTC, Europe/Berlin, "
                "America/New_York"
            ) from None
        return value

    @property
    def hour(self) -> int:
        return int(self.start_time[:2])

    @property
    def minute(self) -> int:
        return int(self.start_time[3:])


class SmtpSettings(_Strict):
    host: str
    port: int = Field(default=25, ge=1, le=65535)
    from_address: str = Field(alias="from")
    starttls: bool = False
    # Implicit TLS from the first byte (SMTPS, usually port 465), instead of STARTTLS.
    ssl: bool = False
    username: str | None = None
    password: SecretStr | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)

    @field_validator("from_address")
    @classmethod
    def _an_address(cls, value: str) -> str:
        _, address = email.utils.parseaddr(value)
        local, _, domain = address.rpartition("@")
        if not local or "." not in domain or any(c.isspace() for c in address):
            raise ValueError(
                f"{value!r} is not an e-mail address; give the sender as "
                'user@example.com or "Name <user@example.com>"'
            )
        return value

    @model_validator(mode="after")
    def _one_tls_mode(self) -> SmtpSettings:
        if self.ssl and self.starttls:
            raise ValueError("set ssl (implicit TLS, port 465) or starttls (port 587/25), not both")
        return self


class UserSourceOptions(_Strict):
    name: str = "Entra ID"
    enabled: bool = True
    sync_interval_minutes: int = Field(default=240, ge=5, le=1440)
    auto_invite: bool = True
    managed_apple_id: Literal["none", "email", "upn"] = "none"
    appleid_subdomain: bool = False
    custom_attributes: list[str] = Field(default_factory=list)
    templates: dict[str, str] = Field(default_factory=dict)
    smtp: SmtpSettings | None = None
    # Accepted only to say clearly that a second identity provider is not supported.
    tenant_id: str | None = None

    @field_validator("sync_interval_minutes")
    @classmethod
    def _divides_a_day(cls, value: int) -> int:
        # The schedule fires at fixed times of day, so the interval must divide a day evenly.
        if 1440 % value:
            allowed = [m for m in range(5, 1441) if 1440 % m == 0]
            raise ValueError(
                f"{value} does not divide a day (1440 minutes) evenly; allowed: "
                + ", ".join(map(str, allowed))
            )
        return value

    @field_validator("custom_attributes")
    @classmethod
    def _attribute_names(cls, values: list[str]) -> list[str]:
        for value in values:
            if not ATTRIBUTE_RE.match(value):
                raise ValueError(
                    f"{value!r} is not an attribute name: use a user property (employeeId), "
                    "extensionAttribute1..15, or extension_<appId>_<name>"
                )
        return _unique(values)

    @model_validator(mode="after")
    def _templates_use_known_variables(self) -> UserSourceOptions:
        known = set(BUILTIN_TEMPLATE_VARIABLES) | set(self.custom_attributes)
        for name, text in self.templates.items():
            unclosed = TEMPLATE_VAR_RE.sub("", text).find("${")
            if unclosed != -1:
                raise ValueError(
                    f"template {name!r} opens a variable with ${{ that is never closed "
                    f"({TEMPLATE_VAR_RE.sub('', text)[unclosed:][:30]!r}): write ${{name}}"
                )
            for variable in TEMPLATE_VAR_RE.findall(text):
                if variable not in known:
                    raise ValueError(
                        f"template {name!r} uses ${{{variable}}}, which is not defined; defined "
                        f"variables are the custom attributes and {', '.join(sorted(known))}"
                    )
        return self


class SyncOptions(_Strict):
    """How each run reads the directory (docs/incremental.md)."""

    # incremental: delta rounds after a first full round; full: every collection listed each run.
    mode: Literal["incremental", "full"] = "incremental"
    # The backstop against missed changes: a full round at least this often.
    full_resync_days: int = Field(default=7, ge=1, le=365)
    # Graph's sign-in data can lag about 6 hours: the incremental sign-in pass reads every user
    # who signed in since the previous pass minus this margin.
    sign_in_margin_hours: int = Field(default=6, ge=0, le=168)


class HistoryOptions(_Strict):
    """`history.changes` keeps what changed for this many days (docs/incremental.md)."""

    retention_days: int = Field(default=400, ge=1, le=36_500)


class ReportOptions(_Strict):
    """The thresholds of the `reports.*` tables (docs/tables.md, "Reports")."""

    licence_idle_days: int = Field(default=90, ge=1, le=3650)
    device_hygiene_days: int = Field(default=90, ge=1, le=3650)


class WarehouseOptions(_Strict):
    """Where the published tables go (docs/scaling-out.md). `duckdb` (the default): the DuckDB file
    at `duckdb_path`, no server. `ducklake`: also a DuckLake catalog on PostgreSQL that many
    connectors publish into at once, each tenant in one transaction; `duckdb_path` stays the
    connector's own state (delta links, what it read)."""

    backend: Literal["duckdb", "ducklake"] = "duckdb"
    # The DuckLake catalog after `ducklake:`, e.g. postgres:dbname=entra host=db.internal user=entra
    # (the password from PGPASSWORD or PGPASSFILE, never here).
    catalog: str | None = None
    # Where DuckLake writes the Parquet data files: a folder, or an object store prefix.
    data_path: str | None = None

    @field_validator("catalog")
    @classmethod
    def _catalog(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if re.search(r"(?:^|\s|:)password\s*=", value, re.IGNORECASE) or URI_PASSWORD.search(value):
            raise ValueError(
                "must not hold the password: set PGPASSWORD in the environment, or point "
                "PGPASSFILE at a .pgpass file (PostgreSQL's own ways; the catalog string is "
                "logged)"
            )
        if not value.startswith("postgres:"):
            raise ValueError(
                f"{value.split(':', 1)[0]!r} catalogs are not supported: give a PostgreSQL "
                "catalog, e.g. postgres:dbname=entra host=db.internal user=entra (a DuckDB or "
                "SQLite catalog file takes one writing process at a time)"
            )
        return value

    @model_validator(mode="after")
    def _lake_needs_both(self) -> WarehouseOptions:
        if self.backend == "ducklake" and not (self.catalog and self.data_path):
            raise ValueError(
                "backend ducklake needs catalog (e.g. postgres:dbname=entra host=db.internal "
                "user=entra) and data_path (a folder or s3:// prefix for the data files)"
            )
        if self.backend == "duckdb" and (self.catalog or self.data_path):
            raise ValueError("catalog and data_path are for backend ducklake; set backend too")
        return self


class ConnectorSettings(_Strict):
    connector_name: str = "Entra ID"
    tenant_id: str
    client_id: str
    # The app registration's credential: a client secret, or a certificate (exactly one).
    client_secret: SecretStr | None = None
    client_certificate: ClientCertificate | None = None
    authority_host: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com"
    ca_bundle: str | None = None
    duckdb_path: str = DEFAULT_DUCKDB_PATH
    mapping_path: str = "mappings/entra_id.csv"
    # Previews of person tables in Dagster's event log: values masked unless `full`.
    dagster_previews: Literal["masked", "full", "off"] = "masked"
    devices: DeviceOptions = Field(default_factory=DeviceOptions)
    users: UserOptions = Field(default_factory=UserOptions)
    schedule: ScheduleOptions = Field(default_factory=ScheduleOptions)
    user_source: UserSourceOptions = Field(default_factory=UserSourceOptions)
    sync: SyncOptions = Field(default_factory=SyncOptions)
    history: HistoryOptions = Field(default_factory=HistoryOptions)
    reports: ReportOptions = Field(default_factory=ReportOptions)
    warehouse: WarehouseOptions = Field(default_factory=WarehouseOptions)
    # Where its runs run: cloud, or a connector server's name, the Celery queue its workers
    # consume (docs/scaling-out.md).
    connector_server: str = Field(default="cloud", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    # The action credential and limits (docs/actions.md); None: no actions.
    actions: ActionOptions | None = None

    @field_validator("tenant_id", mode="before")
    @classmethod
    def _single_tenant(cls, value: Any) -> Any:
        if isinstance(value, list):
            raise ValueError(_SINGLE_IDP)
        return value

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if not (is_guid(value) or DOMAIN_RE.match(value)):
            raise ValueError(
                f"{value!r} is neither a GUID (Directory (tenant) ID) nor a verified domain "
                "name such as contoso.onmicrosoft.com"
            )
        return value

    @field_validator("client_id")
    @classmethod
    def _client(cls, value: str) -> str:
        if not is_guid(value):
            raise ValueError(
                f"{value!r} is not a GUID; use the Application (client) ID of the app registration"
            )
        return value

    @field_validator("authority_host", "graph_url")
    @classmethod
    def _https_url(cls, value: str) -> str:
        host = value.split("://", 1)[-1].split("/", 1)[0]
        if "@" in host:
            register_secret(host.rsplit("@", 1)[0])  # user:password, whatever follows
            raise ValueError(
                "must not carry credentials (user:password@host): the app authenticates with "
                "client_id and client_secret, and a proxy's credentials belong in HTTPS_PROXY"
            )
        if not re.match(r"^https://[^/\s]+(:\d+)?/?$", value):
            raise ValueError(
                f"{value!r} must be an https:// URL of a host, without a path "
                "(e.g. https://login.microsoftonline.com, https://graph.microsoft.com)"
            )
        return value.rstrip("/")

    @field_validator("ca_bundle")
    @classmethod
    def _bundle_exists(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not Path(value).is_file():
            raise ValueError(f"CA bundle {value!r} does not exist or is not a file")
        try:
            ssl.create_default_context(cafile=value)
        except (ssl.SSLError, OSError, ValueError) as error:
            raise ValueError(
                f"CA bundle {value!r} is not a PEM file of CA certificates ({error})"
            ) from None
        return value

    @model_validator(mode="after")
    def _actions_apart(self) -> ConnectorSettings:
        if self.actions is not None and self.actions.client_id.lower() == self.client_id.lower():
            raise ValueError("actions.client_id is the sync's: actions need an app of their own")
        return self

    @model_validator(mode="after")
    def _one_credential(self) -> ConnectorSettings:
        if (self.client_secret is None) == (self.client_certificate is None):
            raise ValueError(
                "give the app registration's credential: client_secret (e.g. client_secret: "
                "${ENTRA_CLIENT_SECRET}) or client_certificate (private_key_path and "
                "certificate_path, or pfx_path), exactly one of them"
            )
        return self

    def client_credential(self) -> str | dict[str, str]:
        """What MSAL authenticates the app with: the secret, or the certificate's key and
        certificate."""
        return msal_credential(self.client_secret, self.client_certificate)

    def credential_description(self) -> str:
        """The credential, named without a secret: for messages that say what to fix."""
        if self.client_certificate is not None:
            return self.client_certificate.credential.describe()
        return "client secret"

    @field_validator("client_secret")
    @classmethod
    def _secret_given(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        if not value.get_secret_value().strip():
            raise ValueError(
                "is empty: set it to the app registration's client secret (from the environment, "
                "e.g. client_secret: ${ENTRA_CLIENT_SECRET})"
            )
        return value

    @field_validator("duckdb_path")
    @classmethod
    def _database_file(cls, value: str) -> str:
        path = Path(value)
        if path.is_dir():
            raise ValueError(
                f"{value!r} is a directory; name the DuckDB file, e.g. data/entra.duckdb"
            )
        if path.is_file() and path.stat().st_size and not is_duckdb_file(path):
            raise ValueError(f"{value!r} exists and is not a DuckDB database; name another file")
        return value

    @model_validator(mode="after")
    def _one_identity_provider(self) -> ConnectorSettings:
        other = self.user_source.tenant_id
        if other is not None and other != self.tenant_id:
            raise ValueError(_SINGLE_IDP)
        return self

    @property
    def scope(self) -> str:
        return f"{self.graph_url}/.default"


_SINGLE_IDP = (
    "one tenant per configuration: the MDM user source supports a single identity provider "
    "(environments with multiple IdPs are not supported); run a second pipeline with its own "
    "config and DuckDB file for another tenant"
)


def _unique(values: list[str]) -> list[str]:
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise ValueError(f"{seen[0]!r} is listed twice")
    return values


def is_duckdb_file(path: Path) -> bool:
    """Whether `path` starts like a DuckDB database (the magic `DUCK` after an 8-byte checksum)."""
    with path.open("rb") as handle:
        return handle.read(12)[8:12] == b"DUCK"
