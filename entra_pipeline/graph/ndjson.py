"""Graph rows appended to a file as JSON lines: what every extraction writes and DuckDB loads."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any


class NdjsonWriter:
    """Rows appended as JSON lines; a listing that restarts is cut back to where it began."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self._file: IO[bytes] = path.open("wb")
        self._listing_offset = 0
        self._listing_rows = 0

    def begin_listing(self) -> None:
        self._listing_offset = self._file.tell()
        self._listing_rows = self.rows

    def restart_listing(self) -> None:
        self._file.seek(self._listing_offset)
        self._file.truncate()
        self.rows = self._listing_rows

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        lines = [json.dumps(row, ensure_ascii=False, separators=(",", ":")) for row in rows]
        if lines:
            self._file.write(("\n".join(lines) + "\n").encode("utf-8"))
            self.rows += len(lines)

    def close(self) -> None:
        self._file.close()
