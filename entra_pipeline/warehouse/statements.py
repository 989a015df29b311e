"""SQL statements that are not models (a ledger's fold, its loading), one `.sql` file each in
`dbt_like_sql/statements/`, read once. Values travel as bound `$name` parameters; the few
constants a view must carry as text are `{{ name }}` placeholders, given as SQL literals.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from entra_pipeline.warehouse.errors import WarehouseError
from entra_pipeline.warehouse.models import SQL_ROOT
from entra_pipeline.warehouse.sql import literal

STATEMENTS = "statements"
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@functools.cache
def _text(name: str, root: Path) -> str:
    return (root / STATEMENTS / f"{name}.sql").read_text(encoding="utf-8")


def statement(name: str, root: Path = SQL_ROOT, **constants: str | int) -> str:
    """The statement of `statements/<name>.sql`, each `{{ key }}` replaced by the SQL literal of
    `constants[key]`; a placeholder without a value is a WarehouseError naming it."""
    text = _text(name, root)

    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in constants:
            raise WarehouseError(f"{STATEMENTS}/{name}.sql: no value for {{{{ {key} }}}}")
        given = constants[key]
        return str(given) if isinstance(given, int) else literal(given)

    return _PLACEHOLDER.sub(value, text)
