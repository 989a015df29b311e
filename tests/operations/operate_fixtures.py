"""Helpers for the operations tests: a connector config pointing at an emulator, secret in the
environment, published DuckDB file in the test's folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from entra_pipeline.emulator import Emulator
from tests.support import CONNECTOR_PERMISSIONS  # noqa: F401  (the operate tests import it from here)

REPO = Path(__file__).resolve().parents[2]
SHIPPED_MAPPING = REPO / "mappings" / "entra_id.csv"
SECRET_VARIABLE = "ENTRA_TEST_CLIENT_SECRET"


def emulator_config(emulator: Emulator, db: Path, **overrides: Any) -> dict[str, Any]:
    """A connector config (as YAML data) for `emulator`; `overrides` replace top-level keys."""
    return {
        "connector_name": "Operate test",
        **emulator.connection_settings(SECRET_VARIABLE),
        "duckdb_path": str(db),
        "mapping_path": str(SHIPPED_MAPPING),
        **overrides,
    }


def write_config(path: Path, emulator: Emulator, **overrides: Any) -> Path:
    """Write `emulator_config` next to a `entra.duckdb` in `path`'s folder; `None` drops a key."""
    document = emulator_config(emulator, path.with_name("entra.duckdb"), **overrides)
    path.write_text(
        yaml.safe_dump({k: v for k, v in document.items() if v is not None}, sort_keys=False)
    )
    return path
