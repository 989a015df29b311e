"""A folder of connector configs, one connector (tenant) a file: each validated on its own, with
its partition key (docs/scaling-out.md, "Many connectors").
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from entra_pipeline.config_file import config_path, load_settings
from entra_pipeline.settings import ConfigError, ConnectorSettings

CONFIG_SUFFIXES = (".yaml", ".yml")


def connector_slug(name: str) -> str:
    """The partition key of a connector: its connector_name, lower case, runs of anything but
    letters and digits made one `-` ("Contoso EU (prod)" -> "contoso-eu-prod")."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "connector"


@dataclass(frozen=True)
class ConnectorFile:
    """One connector of a folder: its partition key, file and parsed settings."""

    slug: str
    path: Path
    settings: ConnectorSettings


@dataclass(frozen=True)
class Fleet:
    """The connectors of a folder: those that can run, and why each other file cannot."""

    folder: Path
    connectors: dict[str, ConnectorFile] = field(default_factory=dict)
    invalid: dict[Path, str] = field(default_factory=dict)


def is_fleet(path: str | os.PathLike[str] | None = None) -> bool:
    """Whether the config (argument, else $ENTRA_CONNECTOR_CONFIG) names a folder of connectors."""
    return config_path(path).is_dir()


def load_fleet(path: str | os.PathLike[str] | None = None) -> Fleet:
    """Every `*.yaml` / `*.yml` connector config of the folder, each validated on its own: a bad
    file is reported in `invalid` and never stops the others. Two files naming one connector
    (the same connector_name slug), or publishing to one DuckDB file, are both invalid, each
    message naming the other file. A folder with no config at all is a ConfigError."""
    folder = config_path(path)
    files = sorted(p for p in folder.iterdir() if p.suffix in CONFIG_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(
            f"connector folder {str(folder)!r} has no connector config (*.yaml, *.yml): add one "
            "per tenant (see connector.example.yaml)"
        )
    loaded: list[ConnectorFile] = []
    invalid: dict[Path, str] = {}
    for file in files:
        try:
            settings = load_settings(file)
        except ConfigError as error:
            invalid[file] = str(error)
            continue
        loaded.append(ConnectorFile(connector_slug(settings.connector_name), file, settings))
    for kind, key in (
        ("connector", lambda c: c.slug),
        ("DuckDB file", lambda c: str(Path(c.settings.duckdb_path).resolve())),
    ):
        seen: dict[str, ConnectorFile] = {}
        for connector in loaded:
            other = seen.setdefault(key(connector), connector)
            if other is connector or connector.path in invalid:
                continue
            what = (
                f"the connector {connector.slug!r} (connector_name {connector.settings.connector_name!r}"
                f" and {other.settings.connector_name!r}): give each its own connector_name"
                if kind == "connector"
                else f"the DuckDB file {connector.settings.duckdb_path!r}: give each its own "
                "duckdb_path (with warehouse.backend ducklake they share the lake, not the file)"
            )
            for one, two in ((connector, other), (other, connector)):
                invalid[one.path] = (
                    f"{one.path}: {one.path.name} and {two.path.name} both name {what}"
                )
    return Fleet(
        folder,
        {c.slug: c for c in loaded if c.path not in invalid},
        dict(sorted(invalid.items())),
    )
