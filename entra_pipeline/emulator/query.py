"""OData query options as Graph reads them: `$select`, `$top`, `$expand`, `$count`, page tokens.

Page and delta tokens are stateless: a signed blob holding the scan position and a fingerprint of
the query, so the server keeps nothing per client and memory never grows with paging.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from entra_pipeline.emulator.errors import GraphError, bad_request, unsupported_query
from entra_pipeline.emulator.schema import DEFAULT_SELECT, PROPERTIES, absent_value

MAX_TOP = 999
EXPAND_PAGE_CAP = 100  # Graph's cap for list pages with $expand on directory objects
SIGN_IN_PAGE_CAP = 500  # ... and for pages that select signInActivity
_EXTENSION = re.compile(r"^extension_[0-9a-fA-F]{32}_\w+$")
# Options that shape the answer (part of the page-token fingerprint): $skiptoken excluded.
_SHAPING = ("select", "expand", "filter", "top", "count", "orderby", "search")


@dataclass
class Expand:
    """One `$expand=name($select=...)`."""

    name: str
    select: list[str] | None


@dataclass
class QueryOptions:
    """The OData options of one request, names normalised (`$select` and `select` alike)."""

    raw: dict[str, str]
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, query: dict[str, str]) -> QueryOptions:
        options: dict[str, str] = {}
        for key, value in query.items():
            name = key.lower().lstrip("$") if key.startswith("$") or key.lower() in _ALL else None
            if name is None:
                continue
            if name not in _ALL:
                raise bad_request(f"Query option '{key}' is not allowed.")
            options[name] = value
        return cls(raw=query, options=options)

    def get(self, name: str) -> str | None:
        return self.options.get(name)

    def top(self, default: int) -> int:
        text = self.get("top")
        if text is None:
            return default
        try:
            top = int(text)
        except ValueError:
            raise bad_request(f"Invalid page size specified: '{text}'.") from None
        if not 1 <= top <= MAX_TOP:
            raise bad_request(
                f"Invalid page size specified: '{text}'. Must be between 1 and {MAX_TOP} inclusive."
            )
        return top

    def count_requested(self) -> bool:
        text = self.get("count")
        if text is None:
            return False
        if text.lower() not in ("true", "false"):
            raise bad_request(f"Invalid value '{text}' for $count: true or false expected.")
        return text.lower() == "true"

    def fingerprint(self, path: str) -> str:
        """A short hash of the path and the shaping options: a page token only fits its query."""
        shaping = sorted((k, v) for k, v in self.options.items() if k in _SHAPING)
        return hashlib.sha256(json.dumps([path.lower(), shaping]).encode()).hexdigest()[:16]


_ALL = {
    "select", "expand", "filter", "top", "count", "orderby", "search", "skip",
    "skiptoken", "deltatoken", "format",
}  # fmt: skip


def type_name(kind: str) -> str:
    return f"microsoft.graph.{kind}"


def parse_select(text: str | None, kind: str, *, allowed_extra: tuple[str, ...] = ()) -> list[str]:
    """Canonical property names for a `$select` (Graph's default set when absent)."""
    if text is None or text.strip() == "":
        return list(DEFAULT_SELECT[kind])
    known = {p.lower(): p for p in (*PROPERTIES[kind], *allowed_extra)}
    selected: list[str] = []
    for item in text.split(","):
        name = item.strip()
        if not name:
            continue
        if name == "*":
            # `$select=*` means every non-heavy property; signInActivity is never implied.
            selected.extend(p for p in PROPERTIES[kind] if p != "signInActivity")
            continue
        canonical = known.get(name.lower())
        if canonical is None and _EXTENSION.match(name):
            canonical = name
        if canonical is None:
            raise bad_request(
                f"Could not find a property named '{name}' on type '{type_name(kind)}'."
            )
        if canonical not in selected:
            selected.append(canonical)
    if "id" not in selected:
        selected.append("id")  # Graph always sends the id
    return selected


def project(obj: dict[str, Any], select: list[str]) -> dict[str, Any]:
    """The selected properties of `obj`; known-but-missing ones answer null, extensions are omitted."""
    out: dict[str, Any] = {}
    for prop in select:
        if prop in obj:
            out[prop] = obj[prop]
        elif not prop.startswith("extension_"):
            out[prop] = absent_value(prop)
    return out


_EXPAND_ITEM = re.compile(r"^\s*([A-Za-z]+)\s*(?:\((.*)\))?\s*$")


def parse_expand(text: str | None, allowed: dict[str, str]) -> Expand | None:
    """One `$expand` (directory objects allow a single one); `allowed` maps name -> target kind."""
    if text is None or not text.strip():
        return None
    items = _split_top_level(text)
    if len(items) > 1:
        raise unsupported_query("Only one $expand is supported on directory objects.")
    match = _EXPAND_ITEM.match(items[0])
    if match is None:
        raise bad_request(f"Invalid $expand value '{text}'.")
    name, inner = match.group(1), match.group(2)
    canonical = next((a for a in allowed if a.lower() == name.lower()), None)
    if canonical is None:
        raise bad_request(f"Could not find a navigation property named '{name}' for $expand.")
    select = None
    if inner:
        for option in inner.split(";"):
            key, _, value = option.partition("=")
            if key.strip().lower() not in ("$select", "select"):
                raise unsupported_query(f"'{key.strip()}' is not supported inside $expand.")
            select = [s.strip() for s in value.split(",") if s.strip()]
    return Expand(canonical, select)


def _split_top_level(text: str) -> list[str]:
    items, depth, current = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        current += ch
    items.append(current)
    return [item for item in items if item.strip()]


@dataclass
class GraphContext:
    """What a handler needs about the request beyond its path."""

    query: dict[str, str]
    options: QueryOptions
    eventual: bool  # ConsistencyLevel: eventual
    max_page_size: int | None  # Prefer: odata.maxpagesize
    replay: bool = False  # a REPLAY_DELTA fault: this delta follow replays earlier changes


class TokenCodec:
    """Signs and reads the opaque `$skiptoken` / `$deltatoken` values."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def encode(self, payload: dict[str, Any]) -> str:
        body = json.dumps(payload, separators=(",", ":")).encode()
        mac = hmac.new(self._key, body, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(mac + body).rstrip(b"=").decode()

    def decode(self, token: str, *, error: GraphError) -> dict[str, Any]:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            mac, body = raw[:12], raw[12:]
            if not hmac.compare_digest(
                mac, hmac.new(self._key, body, hashlib.sha256).digest()[:12]
            ):
                raise error
            payload = json.loads(body)
        except (ValueError, TypeError):
            raise error from None
        if not isinstance(payload, dict):
            raise error
        return payload


def next_link(base: str, path: str, query: dict[str, str], token_name: str, token: str) -> str:
    """An absolute link repeating the request's options with a fresh token, as Graph writes them."""
    kept = [
        (k, v) for k, v in query.items() if k.lower().lstrip("$") not in ("skiptoken", "deltatoken")
    ]
    kept.append((token_name, token))
    return (
        f"{base}{path}?{urllib.parse.urlencode(kept, quote_via=urllib.parse.quote, safe='$,()=/:')}"
    )
