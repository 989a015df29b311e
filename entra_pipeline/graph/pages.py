"""What a successful Graph answer must be to be taken as Graph's: a JSON object, a page of rows
that tables can hold, a listing that moves on. Anything else is a GraphRequestError with its ids.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx

from entra_pipeline.graph.errors import malformed_answer

Row = dict[str, Any]


def check_progress(
    link: str, links: set[int], max_pages: int, response: httpx.Response, described: str
) -> None:
    """A listing must move on: a next link seen before would page forever, and one that never
    ends is bounded. `links` holds the links followed so far, so len(links) + 1 pages are in."""
    fetched = len(links) + 1
    if hash(link) in links:
        raise malformed_answer(
            response,
            described,
            f"a next link it already gave on an earlier page (page {fetched}); the "
            "listing would never end",
        )
    if fetched >= max_pages:
        raise malformed_answer(
            response, described, f"more than {max_pages} pages; the listing would not end"
        )
    links.add(hash(link))


def json_object(response: httpx.Response, described: str, method: str = "GET") -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        problem = (
            f"a body that is not JSON ({response.headers.get('content-type')}): "
            f"{response.text[:200]!r}"
        )
        raise malformed_answer(response, described, problem, method) from exc
    if not isinstance(body, dict):
        raise malformed_answer(
            response, described, f"a JSON {type(body).__name__}, not an object", method
        )
    return body


# A \uD800-\uDFFF escape without its pair: JSON can carry it, UTF-8 (and so no table) cannot.
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def page_rows(
    response: httpx.Response, described: str, check_row: Callable[[Row], str | None] | None
) -> tuple[dict[str, Any], list[Row]]:
    """A listing page's body and its `value` rows, or GraphRequestError naming what is wrong:
    no `value`, a `value` that is not a list of objects, text no table can hold, or a row that
    `check_row` finds fault with."""
    body = json_object(response, described)
    if "value" not in body:
        raise malformed_answer(response, described, "a page without `value`")
    rows = body["value"]
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise malformed_answer(
            response, described, f"a `value` that is not a list of objects ({rows!r:.80})"
        )
    # Searched in the bytes (no second decode of every page); Graph rarely escapes at all.
    if b"\\u" in response.content and _LONE_SURROGATE.search(response.content):
        raise malformed_answer(
            response, described, "a lone UTF-16 surrogate escape, which is not text"
        )
    if check_row is not None:
        for row in rows:
            problem = check_row(row)
            if problem:
                raise malformed_answer(response, described, f"object {row.get('id')!r}: {problem}")
    return body, rows
