"""The connector configuration (docs/configuration.md): one YAML file, `${ENV}` interpolation,
strict validation.

Everything is checked before any network call; errors name the key and what is allowed, and never
echo a secret.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import zoneinfo
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from entra_pipeline.credentials import CertificateCredential, load_certificate_credential
from entra_pipeline.errors import PipelineError
from entra_pipeline.secrets import redact, register_secret
from entra_pipeline.vocabulary import JOIN_TYPE_OPTIONS, is_guid

log = logging.getLogger(__name__)

CONFIG_ENV_VAR = "ENTRA_CONNECTOR_CONFIG"
DEFAULT_CONFIG_FILE = "connector.yaml"
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
ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
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
SECRET_KEYS = {"client_secret", "password", "passphrase"}
# An environment variable whose name says it holds a secret: its value is masked wherever it shows
# up, whichever key it was (mistakenly) written into.
SECRET_VARIABLE_RE = re.compile(r"SECRET|PASSWORD|PASSWD|PWD|TOKEN|CREDENTIAL|PRIVATE|KEY", re.I)
# Template text is rendered per user later: `${attributeName}` there is not an environment variable.
NOT_INTERPOLATED = {("user_source", "templates")}


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
        # YAML reads an unquoted 02:00 as the sexagesimal integer 120.
        if isinstance(value, int) and not isinstance(value, bool):
            value = f"{value // 60:02d}:{value % 60:02d}"
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
            for variable in TEMPLATE_VAR_RE.findall(text):
                if variable not in known:
                    raise ValueError(
                        f"template {name!r} uses ${{{variable}}}, which is not defined; defined "
                        f"variables are the custom attributes and {', '.join(sorted(known))}"
                    )
        return self


class ClientCertificate(_Strict):
    """The app registration's certificate credential: a PEM private key with its PEM certificate,
    or one PKCS#12 (.pfx) file holding both; `passphrase` when the key is encrypted."""

    private_key_path: str | None = None
    certificate_path: str | None = None
    pfx_path: str | None = None
    passphrase: SecretStr | None = None
    _credential: CertificateCredential | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _loads(self) -> ClientCertificate:
        passphrase = self.passphrase.get_secret_value() if self.passphrase else None
        credential = load_certificate_credential(
            private_key_path=self.private_key_path,
            certificate_path=self.certificate_path,
            pfx_path=self.pfx_path,
            passphrase=passphrase,
        )
        register_secret(credential.private_key_pem)
        self._credential = credential
        return self

    @property
    def credential(self) -> CertificateCredential:
        assert self._credential is not None  # set by validation
        return self._credential


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
        if re.search(r"(?:^|\s|:)password\s*=", value, re.IGNORECASE):
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
    warehouse: WarehouseOptions = Field(default_factory=WarehouseOptions)

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
        if self.client_certificate is not None:
            return self.client_certificate.credential.msal_credential()
        assert self.client_secret is not None  # _one_credential
        return self.client_secret.get_secret_value()

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


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (the last would win)."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} is written twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The config file to read: the argument, else $ENTRA_CONNECTOR_CONFIG, else ./connector.yaml."""
    return Path(path or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_FILE)


def load_settings(
    path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None
) -> ConnectorSettings:
    """Read, interpolate and validate the connector config; raise ConfigError naming the problem."""
    file = config_path(path)
    if not file.is_file():
        raise ConfigError(
            f"connector config {str(file)!r} not found: set {CONFIG_ENV_VAR} to the YAML file "
            "(see connector.example.yaml)"
        )
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{file}: not UTF-8 text ({error.reason} at byte {error.start}; a UTF-16 or binary "
            "file?): save the config as UTF-8"
        ) from None
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"{file}: not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{file}: expected a mapping of keys at the top level")
    return parse_settings(document, env=env, source=str(file))


def configured_duckdb_path(path: str | os.PathLike[str] | None = None) -> str | None:
    """The `duckdb_path` an invalid config still names, when it names one plainly: where the
    failed runs it causes are recorded (rather than ./data/entra.duckdb of whatever folder)."""
    try:
        document = yaml.safe_load(config_path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    value = document.get("duckdb_path") if isinstance(document, dict) else None
    try:
        text = _interpolate(value, os.environ, "config", ("duckdb_path",))
    except ConfigError:
        return None
    if not isinstance(text, str) or not text or Path(text).is_dir():
        return None
    return text


def parse_settings(
    document: dict[str, Any], env: dict[str, str] | None = None, source: str = "config"
) -> ConnectorSettings:
    """Validate a config mapping (already read from YAML) after `${ENV}` interpolation."""
    environment = os.environ if env is None else env
    secret_literal = _literal_secret(document)
    interpolated = _interpolate(document, environment, source, ())
    # Before validation: an error about a key must not echo a secret written into it.
    _register_secret_values(interpolated)
    try:
        settings = ConnectorSettings.model_validate(interpolated)
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None
    if settings.client_secret is not None:
        register_secret(settings.client_secret.get_secret_value())
    certificate = settings.client_certificate
    if certificate is not None and certificate.credential.key_readable_by_others:
        log.warning(
            "%s: the private key of %s is readable by other users; make it owner-only "
            "(chmod 600) like any credential",
            source,
            certificate.credential.source,
        )
    smtp = settings.user_source.smtp
    if smtp and smtp.password:
        register_secret(smtp.password.get_secret_value())
    if secret_literal:
        log.warning(
            "%s: client_secret is written in the file; prefer client_secret: "
            "${ENTRA_CLIENT_SECRET} and keep the secret in the environment",
            source,
        )
    return settings


def _register_secret_values(value: Any, key: str = "") -> None:
    """Register every value written under a secret key (client_secret, password) anywhere."""
    if isinstance(value, dict):
        for name, item in value.items():
            _register_secret_values(item, str(name))
    elif isinstance(value, list):
        for item in value:
            _register_secret_values(item, key)
    elif isinstance(value, str) and key in SECRET_KEYS:
        register_secret(value)


def _literal_secret(document: dict[str, Any]) -> bool:
    value = document.get("client_secret")
    return isinstance(value, str) and not ENV_RE.search(value)


def _interpolate(value: Any, env: Any, source: str, where: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        if where in NOT_INTERPOLATED:
            return value
        return {k: _interpolate(v, env, source, (*where, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, source, where) for v in value]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(
                    f"{source}: {'.'.join(where)} refers to ${{{name}}}, but the environment "
                    f"variable {name} is not set"
                )
            if SECRET_VARIABLE_RE.search(name):
                register_secret(env[name])
            return env[name]

        return ENV_RE.sub(substitute, value)
    return value


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid connector configuration:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        kind = item["type"]
        if kind == "extra_forbidden":
            lines.append(f"  {key}: unknown key; allowed here: {_allowed_keys(item['loc'])}")
        elif kind == "missing":
            lines.append(f"  {key}: required key is missing")
        elif kind == "literal_error":
            allowed = item.get("ctx", {}).get("expected", "")
            lines.append(f"  {key}: {item['input']!r} is not allowed; allowed: {allowed}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            value = item["input"]
            scalar = isinstance(value, str | int | float | bool)
            shown = f" (got {value!r})" if scalar and not _is_secret(item["loc"]) else ""
            if "'" in message:  # the message quotes the value already
                shown = ""
            lines.append(f"  {key or 'config'}: {message}{shown}")
    return redact("\n".join(lines))


def _is_secret(loc: tuple[Any, ...]) -> bool:
    return any(str(part) in SECRET_KEYS for part in loc)


def _allowed_keys(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = ConnectorSettings
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            break
        model = nested[0]
    names = [f.alias or name for name, f in model.model_fields.items()]
    return ", ".join(names)
