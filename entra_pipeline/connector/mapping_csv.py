"""The mapping CSV as a file: read (a BOM, blank lines and stray spaces tolerated, an unterminated
quote not), its header checked, each problem said with its row.
"""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl

from entra_pipeline.errors import PipelineError

CSV_COLUMNS = ("data_type", "source_attribute", "target_attribute", "description")


# A message lists this many problems at most (a generated CSV may have thousands).
SHOWN = 50


class MappingInvalid(PipelineError, ValueError):
    """The mapping CSV has problems; `problems` lists each one with its row and a suggestion."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path, self.problems = path, problems
        listed = "\n".join(f"  - {problem}" for problem in problems[:SHOWN])
        if len(problems) > SHOWN:
            listed += f"\n  - and {len(problems) - SHOWN:,} more: fix these and run check again"
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        super().__init__(f"mapping {path} is invalid ({count}):\n{listed}")


def read_mapping(path: Path) -> pl.DataFrame:
    """The CSV as a frame of stripped strings ("" as null) with `row`, its line in the file.

    The row number is the line an editor or spreadsheet shows (the header is row 1).
    """
    with open(path, encoding="utf-8-sig", newline="") as handle:  # Excel writes a BOM
        # strict: an unterminated quote is an error, not a cell that swallows the file's rest.
        reader = csv.reader(handle, strict=True)
        header = [name.strip() for name in next(reader, [])]
        problems = header_problems(header)
        if problems:
            raise MappingInvalid(path, problems)
        records = []
        for values in reader:
            if not any(value.strip() for value in values):
                continue  # a blank line is not a row
            cells = dict(zip(header, values, strict=False))
            records.append(
                {"row": reader.line_num, **{name: _cell(cells.get(name)) for name in header}}
            )
    present = [name for name in CSV_COLUMNS if name in header]
    schema = {"row": pl.Int64, **dict.fromkeys(present, pl.String)}
    return pl.DataFrame(
        [{name: record.get(name) for name in schema} for record in records], schema=schema
    )


def header_problems(header: list[str]) -> list[str]:
    """What is wrong with the CSV's header row: every column must be there, named exactly."""
    expected = ", ".join(CSV_COLUMNS)
    if not header:
        return [f"the mapping CSV is empty; its first row must be the header: {expected}"]
    if any("\x00" in name for name in header):
        return ["the header contains a NUL character: the file is not a text CSV"]
    if len(header) == 1 and ";" in header[0]:
        return [
            f"the header {header[0]!r} is separated by ';': the mapping CSV separates columns "
            f"with commas ({expected})"
        ]
    problems = []
    by_lower = {name.lower(): name for name in header}
    for column in CSV_COLUMNS:
        if column in header:
            continue
        written = by_lower.get(column)
        hint = f" (it is written {written!r}; names are lower-case)" if written else ""
        problems.append(
            f"the header has no {column!r} column{hint}; the mapping CSV needs the columns "
            f"{expected}"
        )
    return problems


def _cell(value: str | None) -> str | None:
    return (value or "").strip() or None
