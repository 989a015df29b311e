"""Fixtures for the transform tests (helpers live in transform_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.connector.transform_fixtures import Transform


@pytest.fixture
def transform(tmp_path: Path) -> Transform:
    """A published DuckDB file in tmp_path and a way to run the transform assets against it."""
    return Transform(db=tmp_path / "entra.duckdb", tmp_path=tmp_path)
