"""Microsoft Graph over httpx: paging, retries and throttling, so callers only see pages of rows.

One `GraphClient` is shared by every extraction thread; it owns the retries (callers never retry),
turns Graph's error answers into the typed errors of `errors.py`, and counts what it did per label.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import httpx

from entra_pipeline.graph.errors import (
    ExpiredPageTokenError,
    GraphError,
    GraphRequestError,
    GraphUnreachableError,
    display_path,
    error_from_response,
    fields,
    ids,
)
from entra_pipeline.graph.pages import Row, check_progress, json_object, page_rows
from entra_pipeline.graph.throttle import ThrottleGate, retry_after_seconds
from entra_pipeline.graph.tls import tls_not_trusted, tls_verify

logger = logging.getLogger(__name__)

API_VERSION = "v1.0"
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=30.0, pool=120.0)

# Graph asks clients to wait Retry-After on these; other 5xx get exponential backoff.
_RETRY_AFTER_STATUSES = frozenset({429, 503, 504})
MAX_BATCH = 20  # requests in one $batch call (learn.microsoft.com/graph/json-batching)


class TokenSource(Protocol):
    """What the client needs from `auth.TokenProvider`."""

    def token(self) -> str: ...

    def invalidate(self, token: str | None = None) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How hard the client tries before a failure becomes `GraphUnreachableError`."""

    max_retries: int = 6  # re-sends of one request after throttling or a transient failure
    backoff_base: float = 1.0  # seconds; retry n waits uniform(0, min(max, base * 2**n))
    backoff_max: float = 60.0
    retry_after_max: float = 300.0  # a longer Retry-After is capped to this
    max_restarts: int = 3  # restarts of one listing after DirectoryExpiredPageTokenError
    # A listing longer than this is not a directory but a loop: 100,000 pages hold 10 million
    # objects at the 100 a page `$expand` allows, 99.9 million at 999.
    max_pages: int = 100_000

    def backoff(self, retry: int) -> float:
        # Full jitter: concurrent threads that failed together do not retry together.
        return random.uniform(0.0, min(self.backoff_max, self.backoff_base * 2**retry))


@dataclass(frozen=True)
class RequestStats:
    """What the client did for one label (a collection): published as Dagster metadata."""

    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0  # requests re-sent after throttling, a failure or a 401
    throttled: int = 0  # 429 answers
    pages: int = 0  # pages of rows received
    restarts: int = 0  # listings restarted after an expired page token

    def __add__(self, other: RequestStats) -> RequestStats:
        return RequestStats(
            self.requests + other.requests,
            self.retries + other.retries,
            self.throttled + other.throttled,
            self.pages + other.pages,
            self.restarts + other.restarts,
        )


class GraphClient:
    """A thread-safe Microsoft Graph v1.0 client: `iter_pages` and `get_json`, retried inside."""

    def __init__(
        self,
        graph_url: str,
        tokens: TokenSource,
        *,
        ca_bundle: str | None = None,
        max_connections: int = 40,  # partitioned listings page 16 chains per collection
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        gate: ThrottleGate | None = None,
        observer: Callable[[str, int], None] | None = None,
    ) -> None:
        self.base_url = f"{graph_url.rstrip('/')}/{API_VERSION}"
        self.retry = retry or RetryPolicy()
        self.gate = gate or ThrottleGate(sleep=sleep)
        # Told (label, objects) after each successful answer, on the requesting thread: what a
        # benchmark projects Graph's latency from.
        self.observer = observer
        self._origin = _origin(self.base_url)
        self._tokens = tokens
        self._sleep = sleep
        self._http = httpx.Client(
            verify=tls_verify(ca_bundle),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            timeout=timeout,
            headers={"Accept": "application/json"},
        )
        self._stats: dict[str, RequestStats] = {}
        self._stats_lock = threading.Lock()

    def __enter__(self) -> GraphClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GraphClient(base_url={self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    @property
    def stats(self) -> dict[str, RequestStats]:
        """A snapshot of the counters, per label."""
        with self._stats_lock:
            return dict(self._stats)

    def total_stats(self) -> RequestStats:
        return sum(self.stats.values(), RequestStats())

    def access_token(self) -> str:
        """The app-only token the client sends (e.g. to read its tenant claim); never log it."""
        return self._tokens.token()

    def batch_get(self, paths: Sequence[str], *, label: str) -> list[tuple[int, dict[str, Any]]]:
        """GET each of `paths` (under /v1.0, at most 20) in one `$batch` call: (status, body)
        per path, in order. Graph throttles each inner request on its own: a 429 / 503 / 504
        item is sent again in a later call after its Retry-After (every thread waits it out),
        up to the retry policy's limit; any other answer is returned as it is."""
        if len(paths) > MAX_BATCH:
            raise ValueError(f"a $batch takes at most {MAX_BATCH} requests")
        answers: dict[int, tuple[int, dict[str, Any]]] = {}
        pending = list(range(len(paths)))
        url = self._absolute("/$batch")
        for attempt in range(self.retry.max_retries + 1):
            requests = [{"id": str(n), "method": "GET", "url": paths[n]} for n in pending]
            response = self._request(url, None, None, label, url, {"requests": requests})
            document = json_object(response, url, "POST")
            items = document.get("responses")
            if not isinstance(items, list):
                raise GraphRequestError("Graph answered POST /$batch without a responses list")
            if self.observer is not None:  # a batch takes the time of its largest answer
                sizes = [
                    len(i.get("body", {}).get("value") or [])
                    for i in items
                    if isinstance(i, dict) and isinstance(i.get("body"), dict)
                ]
                self.observer(label, max(sizes, default=1))
            retry_after = 0.0
            again = []
            for item in items:
                number = int(item["id"])
                status = int(item.get("status", 0))
                item_body = item.get("body") if isinstance(item.get("body"), dict) else {}
                if status in _RETRY_AFTER_STATUSES and attempt < self.retry.max_retries:
                    headers = {k.lower(): str(v) for k, v in (item.get("headers") or {}).items()}
                    wait = headers.get("retry-after", "")
                    retry_after = max(retry_after, float(wait) if wait.isdigit() else 1.0)
                    self._count(label, retries=1, throttled=int(status == 429))
                    again.append(number)
                else:
                    if status == 200:
                        self._count(label, pages=1)
                    answers[number] = (status, item_body)
            if not again:
                break
            pending = sorted(again)
            self.gate.throttled(min(retry_after, self.retry.retry_after_max))
        for number in pending:
            answers.setdefault(number, (429, {}))
        return [answers[n] for n in range(len(paths))]

    def get_json(
        self,
        path_or_url: str,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        label: str | None = None,
    ) -> dict[str, Any]:
        """GET one Graph resource and return its JSON body."""
        url = self._absolute(path_or_url)
        label = label or display_path(url)
        described = _described(url, params)
        body = json_object(self._request(url, params, headers, label, described), described)
        if self.observer is not None:
            self.observer(label, 1)
        return body

    def write(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, *, label: str
    ) -> httpx.Response:
        """One write (PATCH, DELETE, POST) with a read's retries: each action is idempotent in
        effect, so a request retried after a lost answer changes nothing more."""
        url = self._absolute(path)
        return self._request(url, None, None, label, display_path(url), body, method)

    def iter_pages(
        self,
        path_or_url: str,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        label: str | None = None,
        on_restart: Callable[[], None] | None = None,
        check_row: Callable[[Row], str | None] | None = None,
        on_page: Callable[[dict[str, Any]], None] | None = None,
    ) -> Iterator[list[Row]]:
        """Yield the `value` rows of each page of a Graph listing, following `@odata.nextLink`.

        `params` (`$select`, `$top`, ...) go on the first request only: the next link carries
        them. `headers` (e.g. `ConsistencyLevel: eventual`) go on every page, since Graph does not
        carry them over. When Graph answers `DirectoryExpiredPageTokenError` the listing restarts
        from its first page. With `on_restart`, the caller is told and discards what it has
        (nothing is remembered here, so a million rows cost no memory); without it, the ids
        already yielded are remembered and not yielded again.

        A page that is not a Graph page (no `value`, a `value` that is not a list of objects,
        a lone surrogate, a row `check_row` names a problem of), a next link that repeats an
        earlier one, or more than `retry.max_pages` pages end the listing with GraphRequestError
        naming the request and Graph's request-id. `on_page` sees each page's body before its
        rows are yielded (a delta round's last page carries its `@odata.deltaLink`).
        """
        first_url = self._absolute(path_or_url)
        label = label or display_path(first_url)
        described = _described(first_url, params)
        seen: set[str] | None = None if on_restart else set()
        restarts = 0
        while True:
            url: str | None = first_url
            page_params = params
            links: set[int] = set()  # hashes: a 20,000-page chain costs ~1 MB, not ~10
            try:
                while url is not None:
                    response = self._request(url, page_params, headers, label, described)
                    body, rows = page_rows(response, described, check_row)
                    if self.observer is not None:
                        self.observer(label, len(rows))
                    self._count(label, pages=1)
                    if on_page is not None:
                        on_page(body)
                    if seen is not None:
                        if restarts:
                            rows = [row for row in rows if row.get("id") not in seen]
                        seen.update(row["id"] for row in rows if "id" in row)
                    yield rows
                    url = self._next_link(body, described)
                    if url is not None:
                        check_progress(url, links, self.retry.max_pages, response, described)
                    page_params = None
                return
            except ExpiredPageTokenError as expired:
                restarts += 1
                self._restart(label, first_url, restarts, expired)
                if on_restart is not None:
                    on_restart()

    def _restart(
        self, label: str, first_url: str, restart: int, expired: ExpiredPageTokenError
    ) -> None:
        """Count and log restart number `restart` of a listing whose page token Graph expired,
        or raise GraphRequestError when the retry policy allows no more."""
        if restart > self.retry.max_restarts:
            raise GraphRequestError(
                f"Graph kept expiring the page token of GET {display_path(first_url)}: "
                f"restarted {restart - 1} times without finishing the listing; retry the "
                f"run when the directory is less busy ({ids(expired)})",
                **fields(expired),
            ) from expired
        self._count(label, restarts=1)
        logger.warning(
            "Graph expired the page token of GET %s; restarting the listing from its "
            "first page (restart %d/%d, %s)",
            display_path(first_url),
            restart,
            self.retry.max_restarts,
            ids(expired),
        )

    def _absolute(self, path_or_url: str) -> str:
        if path_or_url.startswith(("https://", "http://")):
            return path_or_url
        return f"{self.base_url}/{path_or_url.lstrip('/')}"

    def own_link(self, link: object, described: str, *, what: str = "link") -> str:
        """`link` (a delta link Graph gave), checked to be a URL of the Graph this client talks
        to: the bearer token goes wherever it points."""
        if not isinstance(link, str) or not link.startswith(("https://", "http://")):
            raise GraphRequestError(
                f"Graph answered GET {display_path(described)} without a usable link", url=described
            )
        if _origin(link) != self._origin:
            raise GraphRequestError(
                f"Graph's {what} for GET {display_path(described)} points to another host "
                f"({httpx.URL(link).host}); refusing to send the access token there",
                url=described,
            )
        return link

    def _next_link(self, body: dict[str, Any], described: str) -> str | None:
        link = body.get("@odata.nextLink")
        if link is None:
            return None
        # The bearer token goes wherever the link points: only ever to the Graph we were given.
        return self.own_link(link, described, what="next link")

    def _count(self, label: str, **increments: int) -> None:
        with self._stats_lock:
            current = self._stats.get(label, RequestStats())
            self._stats[label] = replace(
                current, **{k: getattr(current, k) + v for k, v in increments.items()}
            )

    def _request(
        self,
        url: str,
        params: Mapping[str, str | int] | None,
        headers: Mapping[str, str] | None,
        label: str,
        described: str,
        body: Any = None,
        method: str | None = None,
    ) -> httpx.Response:
        """One GET (a POST with `body`, or `method`) with every retry: throttling, 5xx,
        transport failures, one 401 refresh; the successful response."""
        method = method or ("GET" if body is None else "POST")
        retries = 0
        token_refreshed = False
        woke = 0.0
        while True:
            token = self._tokens.token()
            client_request_id = str(uuid.uuid4())
            self.gate.before(label, woke)  # where the other threads wait out a 429
            self._count(label, requests=1)
            try:
                response = self._send(url, params, headers, body, token, client_request_id, method)
            except (httpx.UnsupportedProtocol, httpx.LocalProtocolError):
                raise  # a malformed URL or request: ours to fix, not the network's
            except httpx.TransportError as exc:
                last: GraphError = self._transport_failure(
                    exc, method, described, client_request_id
                )
                failure = str(last)
                delay = self.retry.backoff(retries) * self.gate.time_scale
            else:
                self.gate.answered(label, response)
                if response.is_success:
                    return response
                last = error_from_response(response, method, described, client_request_id)
                if response.status_code == 401 and not token_refreshed:
                    # The token expired or was revoked server side: one fresh token, one retry.
                    self._tokens.invalidate(token)
                    token_refreshed = True
                    self._count(label, retries=1)
                    logger.info(
                        "Graph rejected the access token for %s %s; retrying with a new one (%s)",
                        method,
                        display_path(url),
                        ids(last),
                    )
                    continue
                delay = self._retry_delay(response, label, retries, last)
                failure = f"{response.status_code} {last.code or response.reason_phrase}"
            retries += 1
            self._before_retry(label, method, described, retries, failure, last, delay)
            slept_from = time.monotonic()
            self._sleep(delay)
            woke = slept_from + delay

    def _before_retry(
        self,
        label: str,
        method: str,
        described: str,
        retry: int,
        failure: str,
        last: GraphError,
        delay: float,
    ) -> None:
        """Count and log retry number `retry` of a request, or raise GraphUnreachableError when
        the retry policy allows no more."""
        if retry > self.retry.max_retries:
            raise GraphUnreachableError(
                f"Microsoft Graph did not answer {method} {display_path(described)} after "
                f"{retry} attempts (last: {failure}; {ids(last)}); check graph_url "
                "and the network or proxy, or retry later",
                **fields(last),
            ) from last
        self._count(label, retries=1)
        logger.warning(
            "%s %s failed (%s; %s); retry %d/%d in %.2fs",
            method,
            display_path(described),
            failure,
            ids(last),
            retry,
            self.retry.max_retries,
            delay,
        )

    def _transport_failure(
        self, exc: httpx.TransportError, method: str, described: str, client_request_id: str
    ) -> GraphUnreachableError:
        """A request that got no answer, as the error retried (raised at once when the
        server's certificate is not trusted: no retry fixes that)."""
        if tls_not_trusted(exc):
            raise GraphUnreachableError(
                f"Microsoft Graph at {self.base_url} presented a TLS certificate this "
                f"machine does not trust ({exc}); set ca_bundle to the PEM of the CA "
                "(TLS-inspecting proxy, emulator)",
                method=method,
                url=described,
                client_request_id=client_request_id,
            ) from exc
        failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return GraphUnreachableError(
            failure, method=method, url=described, client_request_id=client_request_id
        )

    def _send(
        self,
        url: str,
        params: Mapping[str, str | int] | None,
        headers: Mapping[str, str] | None,
        body: Any,
        token: str,
        client_request_id: str,
        method: str = "GET",
    ) -> httpx.Response:
        """One HTTP exchange with the ids Graph and its support trace a request by."""
        request_headers = {
            **(headers or {}),
            "Authorization": f"Bearer {token}",
            "client-request-id": client_request_id,
            "return-client-request-id": "true",
        }
        if method == "GET":
            return self._http.get(url, params=params, headers=request_headers)
        if method == "POST" or body is not None:
            return self._http.request(method, url, json=body, headers=request_headers)
        return self._http.request(method, url, headers=request_headers)

    def _retry_delay(
        self, response: httpx.Response, label: str, retries: int, error: GraphError
    ) -> float:
        """The real seconds to wait before re-sending a request Graph refused, or `error` raised
        when the answer is not worth another try (a 4xx other than 429)."""
        status = response.status_code
        if status not in _RETRY_AFTER_STATUSES:
            if status >= 500:
                return self.retry.backoff(retries) * self.gate.time_scale
            raise error
        retry_after = retry_after_seconds(response)
        wait = (
            min(retry_after, self.retry.retry_after_max)
            if retry_after is not None
            else self.retry.backoff(retries)
        )
        if status != 429:
            return wait * self.gate.time_scale
        self._count(label, throttled=1)
        # Every thread waits it out, the others in `gate.before`: the bucket is the app's.
        # Without Retry-After, the exponential backoff (Microsoft's advice) is the wait.
        return self.gate.throttled(wait)


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = httpx.URL(url)  # normalises case and the default port
    return parsed.scheme, parsed.host, parsed.port


def _described(url: str, params: Mapping[str, str | int] | None) -> str:
    """The first request's URL with its query: what errors name and permissions are read from."""
    return str(httpx.URL(url, params=params)) if params else url
