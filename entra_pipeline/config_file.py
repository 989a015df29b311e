"""The connector config file: which file, read as YAML (a key written twice refused), `${ENV}`
interpolated, validated into `ConnectorSettings`; every error names the key and what is allowed,
and never echoes a secret.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from entra_pipeline.secrets import redact, register_secret
from entra_pipeline.settings import ConfigError, ConnectorSettings

log = logging.getLogger(__name__)

CONFIG_ENV_VAR = "ENTRA_CONNECTOR_CONFIG"
DEFAULT_CONFIG_FILE = "connector.yaml"
ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
SECRET_KEYS = {"client_secret", "password", "passphrase"}
# An environment variable whose name says it holds a secret: its value is masked wherever it shows
# up, whichever key it was (mistakenly) written into.
SECRET_VARIABLE_RE = re.compile(r"SECRET|PASSWORD|PASSWD|PWD|TOKEN|CREDENTIAL|PRIVATE|KEY", re.I)
# Template text is rendered per user later: `${attributeName}` there is not an environment variable.
NOT_INTERPOLATED = {("user_source", "templates")}


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader for a config: a key written twice in one mapping is refused (the last
    would win); so are aliases (a few nested ones expand to billions of nodes: "billion
    laughs"); and `02:00` is text, not YAML 1.1's sexagesimal number 120."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"an alias (*{event.anchor}) is not allowed in a connector config: write the "
                "value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)


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
# YAML 1.1's numbers without the base-60 forms (`1:30` is 90 there): integers and floats as
# YAML 1.2 reads them. The resolvers are per class: the safe loader itself is left as it is.
_NUMBERS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag not in _NUMBERS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The config file to read: the argument, else $ENTRA_CONNECTOR_CONFIG, else ./connector.yaml.
    An empty argument (`--config ''`) is a ConfigError, not the default."""
    if path is not None and not str(path):
        raise ConfigError(
            "the connector config path is empty: give the YAML file (--config connector.yaml), "
            f"or leave it out to use ${CONFIG_ENV_VAR} or ./{DEFAULT_CONFIG_FILE}"
        )
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
    if env is not None:
        return parse_settings(document, env=env, source=str(file))
    # Read from the process's environment: once per process while nothing it reads changed.
    key = _cache_key(file, text)
    with _PARSED_LOCK:
        cached = _PARSED.get(key)
        if cached is not None and cached[1] == _stats(cached[0]):
            return cached[0]
    settings = parse_settings(document, env=env, source=str(file))
    with _PARSED_LOCK:
        _PARSED[key] = (settings, _stats(settings))
    return settings


# The settings of a config read from os.environ, by (file, its text, the environment variables it
# names): the code location's read and each run's (its connector resource) are one parse in a run
# process. A certificate file the settings loaded that changed since (a rotation) parses again.
_PARSED: dict[tuple[Any, ...], tuple[ConnectorSettings, tuple[Any, ...]]] = {}
_PARSED_LOCK = threading.Lock()


def _cache_key(file: Path, text: str) -> tuple[Any, ...]:
    names = sorted(set(ENV_RE.findall(text)))
    return (str(file.resolve()), text, tuple((name, os.environ.get(name)) for name in names))


def _stats(settings: ConnectorSettings) -> tuple[Any, ...]:
    """What the settings read from files other than the config: the certificate's."""
    certificate = settings.client_certificate
    if certificate is None:
        return ()
    paths = (certificate.private_key_path, certificate.certificate_path, certificate.pfx_path)
    stats = []
    for path in paths:
        try:
            found = Path(path).stat() if path else None
        except OSError:
            found = None
        stats.append((found.st_mtime_ns, found.st_size, found.st_ino) if found else None)
    return tuple(stats)


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
    _refuse_secrets_where_they_land(settings, source)
    if secret_literal:
        log.warning(
            "%s: client_secret is written in the file; prefer client_secret: "
            "${ENTRA_CLIENT_SECRET} and keep the secret in the environment",
            source,
        )
    return settings


# Values written into tables, file names and Dagster's tags as they are: a secret must not be one.
_LANDS_AS_IS = {
    "connector_name": lambda s: s.connector_name,
    "user_source.name": lambda s: s.user_source.name,
    "duckdb_path": lambda s: s.duckdb_path,
}


def _refuse_secrets_where_they_land(settings: ConnectorSettings, source: str) -> None:
    """A value that holds a known secret (a client secret, a password, a variable named like
    one) is refused in a key whose value is written into tables, paths or tags unmasked."""
    for key, value_of in _LANDS_AS_IS.items():
        value = value_of(settings)
        if redact(value) != value:
            raise ConfigError(
                f"{source}: invalid connector configuration:\n  {key}: holds the value of a "
                "secret (a client secret, a password, or a variable named like one); it is "
                "written into tables and logs as it is, so give it a plain name"
            )


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
