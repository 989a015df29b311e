"""Request dispatch: token service or Graph, faults first, request ids, the request log, `$batch`.

Transport-free: the server hands in a `Request` and writes back the `Response`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import urllib.parse
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from entra_pipeline.emulator import faults as fault_kinds
from entra_pipeline.emulator.costs import CostModel, request_cost
from entra_pipeline.emulator.delta import resync_required
from entra_pipeline.emulator.errors import (
    GraphError,
    StsError,
    expired_page_token,
    graph_error_body,
    too_many_requests,
)
from entra_pipeline.emulator.faults import Fault, Faults
from entra_pipeline.emulator.handlers import GraphResources
from entra_pipeline.emulator.query import GraphContext, QueryOptions
from entra_pipeline.emulator.tokens import TokenService
from entra_pipeline.emulator.writes import write

MAX_BATCH = 20
_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
_STS_JSON = "application/json; charset=utf-8"


@dataclass
class Request:
    method: str
    path: str  # URL path, percent-decoded
    query: dict[str, str]  # last value wins, as Graph reads options
    headers: dict[str, str]  # names lower-cased
    body: bytes = b""
    in_batch: bool = False


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection instead of answering
    objects: int = 0  # objects in the answer's `value` (what its latency depends on)


@dataclass(frozen=True)
class RequestRecord:
    """One handled request, for tests to assert on (`emu.requests`)."""

    method: str
    path: str
    query: dict[str, str]
    status: int  # 0 when the connection was dropped
    client_request_id: str
    request_id: str
    in_batch: bool
    at: float  # time.time() when handled


def parse_target(target: str) -> tuple[str, dict[str, str]]:
    """Split a request target into its decoded path and query dict."""
    parts = urllib.parse.urlsplit(target)
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.unquote(parts.path), query


class EmulatorApp:
    """Routes requests to the token service or Graph, after faults and before logging."""

    def __init__(
        self,
        *,
        tokens: TokenService,
        resources: GraphResources,
        faults: Faults,
        log_limit: int = 20_000,
        costs: CostModel | None = None,
    ) -> None:
        self.tokens = tokens
        self.resources = resources
        self.faults = faults
        self.costs = costs
        self._log: deque[RequestRecord] = deque(maxlen=log_limit)
        self._log_lock = threading.Lock()
        # Which front end answered: Graph names it in x-ms-ags-diagnostic's ServerInfo (e.g.
        # {"DataCenter":"South India",...,"RoleInstance":"AGSFE_IN_0"} in answers quoted in
        # public issue threads); each worker process of the emulator has its own.
        self.role_instance = "Loopback_IN_0"

    @property
    def requests(self) -> list[RequestRecord]:
        with self._log_lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._log_lock:
            self._log.clear()

    def handle(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        client_request_id = request.headers.get("client-request-id") or str(uuid.uuid4())
        graph = request.path.startswith("/v1.0/")
        fault = self._fault(request)
        response = self._faulted(request, graph, fault)
        cost = 0
        # A $batch is charged by its items (each passes through here), not as a request.
        metered = graph and self.costs is not None and not request.path.endswith("/$batch")
        if response is None and metered and self.costs is not None:
            write = request.method != "GET"
            cost = 1 if write else request_cost(request.path, request.query)
            wait = self.costs.take_write() if write else self.costs.take(cost)
            if wait is not None:
                response = _graph_error(too_many_requests(wait), request_id, client_request_id)
        if response is None:
            try:
                replay = fault is not None and fault.kind == fault_kinds.REPLAY_DELTA
                response = self._route(request, graph, replay=replay)
            except GraphError as error:
                response = _graph_error(error, request_id, client_request_id)
            except StsError as error:
                response = Response(error.status, _dump(error.body()), {"Content-Type": _STS_JSON})
            if fault is not None and fault.kind == fault_kinds.HOSTILE and response.status == 200:
                response = _spoiled(response, fault.variant, request)
        if graph and self.costs is not None:
            if cost:
                response.headers["x-ms-resource-unit"] = str(cost)
            if not request.in_batch:  # a batch answers in the time of its largest item
                time.sleep(self.costs.latency(response.objects))
        if graph:
            response.headers.setdefault("Content-Type", _JSON)
            response.headers["request-id"] = request_id
            response.headers["client-request-id"] = client_request_id
            response.headers["x-ms-ags-diagnostic"] = (
                '{"ServerInfo":{"DataCenter":"Loopback","RoleInstance":"'
                + self.role_instance
                + '"}}'
            )
        with self._log_lock:
            self._log.append(
                RequestRecord(
                    method=request.method,
                    path=request.path,
                    query=dict(request.query),
                    status=0 if response.drop else response.status,
                    client_request_id=client_request_id,
                    request_id=request_id,
                    in_batch=request.in_batch,
                    at=time.time(),
                )
            )
        return response

    # ---- faults -----------------------------------------------------------------------------

    def _fault(self, request: Request) -> Fault | None:
        lowered = {k.lower() for k in request.query}
        return self.faults.decide(
            request.path,
            page_follow="$skiptoken" in lowered,
            delta_follow="$deltatoken" in lowered,
            in_batch=request.in_batch,
            method=request.method,
        )

    def _faulted(self, request: Request, graph: bool, fault: Fault | None) -> Response | None:
        """The answer a fault gives instead of Graph's (None: Graph answers)."""
        if fault is None or fault.kind in (fault_kinds.HOSTILE, fault_kinds.REPLAY_DELTA):
            return None
        if fault.kind == fault_kinds.SLOW:
            time.sleep(fault.seconds)
            return None
        if fault.kind == fault_kinds.DROP:
            return Response(0, drop=True)
        error = _fault_error(fault)
        if graph:
            client_request_id = request.headers.get("client-request-id") or ""
            return _graph_error(error, str(uuid.uuid4()), client_request_id)
        # The token service answers throttling/outages in its own AADSTS shape.
        sts = StsError(
            error.status,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        )
        headers = {"Content-Type": _STS_JSON, **error.headers}
        return Response(error.status, _dump(sts.body()), headers)

    # ---- routing ----------------------------------------------------------------------------

    def _route(self, request: Request, graph: bool, *, replay: bool = False) -> Response:
        segments = [s for s in request.path.split("/") if s]
        if graph:
            return self._graph(request, segments[1:], replay=replay)
        if request.method == "GET" and segments == ["common", "discovery", "instance"]:
            body = self.tokens.instance_discovery(request.query.get("authorization_endpoint"))
            return Response(200, _dump(body), {"Content-Type": _STS_JSON})
        if (
            request.method == "GET"
            and len(segments) == 4
            and segments[1:] == ["v2.0", ".well-known", "openid-configuration"]
        ):
            body = self.tokens.openid_configuration(segments[0])
            return Response(200, _dump(body), {"Content-Type": _STS_JSON})
        if (
            request.method == "POST"
            and len(segments) == 4
            and segments[1:] == ["oauth2", "v2.0", "token"]
        ):
            form = dict(urllib.parse.parse_qsl(request.body.decode("utf-8", "replace")))
            body = self.tokens.issue(segments[0], form, _basic_auth(request.headers))
            return Response(
                200, _dump(body), {"Content-Type": _STS_JSON, "Cache-Control": "no-store, no-cache"}
            )
        # Not Graph: a path outside what the emulator serves at all.
        raise GraphError(404, "NotFound", f"No emulator route for {request.method} {request.path}.")

    def _graph(self, request: Request, segments: list[str], *, replay: bool = False) -> Response:
        app = None
        if not request.in_batch:
            check = self.tokens.check(request.headers.get("authorization"))
            if check.error is not None:
                # 401 InvalidAuthenticationToken with a Bearer WWW-Authenticate challenge, as Graph
                # answers an expired or foreign token (learn.microsoft.com/graph/errors, 401).
                raise GraphError(
                    401,
                    "InvalidAuthenticationToken",
                    check.error,
                    {
                        "WWW-Authenticate": 'Bearer realm="", authorization_uri='
                        '"https://login.microsoftonline.com/common/oauth2/authorize", '
                        'client_id="00000003-0000-0000-c000-000000000000"'
                    },
                )
            app = self.tokens.apps.get(str((check.claims or {}).get("appid", "")).lower())
        if app is None:
            return self._graph_as_app(request, segments, replay=replay)
        with self.resources.acting_as(app.permissions):  # the action app's own permissions
            return self._graph_as_app(request, segments, replay=replay)

    def _graph_as_app(self, request: Request, segments: list[str], *, replay: bool) -> Response:
        if not segments:
            # Graph's 400 for an unknown path segment, message verbatim
            # (microsoftgraph/msgraph-beta-sdk-python#764, microsoft-graph-docs#1914).
            raise GraphError(400, "BadRequest", "Resource not found for the segment ''.")
        if segments == ["$batch"]:
            if request.method != "POST":
                # 405: $batch is POST only (learn.microsoft.com/graph/json-batching); message ours.
                raise GraphError(405, "Request_BadRequest", "Use POST for $batch.")
            batch = self._batch(request)
            largest = max((r.pop("objects") for r in batch["responses"]), default=0)
            return Response(200, _dump(batch), objects=largest)
        if request.method != "GET":
            status, answer = write(self.resources, request.method, segments, request.body)
            return Response(status, b"" if answer is None else _dump(answer), objects=1)
        ctx = GraphContext(
            query=request.query,
            options=QueryOptions.parse(request.query),
            eventual=request.headers.get("consistencylevel", "").lower() == "eventual",
            max_page_size=_max_page_size(request.headers.get("prefer")),
            replay=replay,
        )
        body = self.resources.get(segments, ctx)
        value = body.get("value") if isinstance(body, dict) else None
        return Response(200, _dump(body), objects=len(value) if isinstance(value, list) else 1)

    # ---- $batch -----------------------------------------------------------------------------

    def _batch(self, request: Request) -> dict[str, Any]:
        try:
            payload = json.loads(request.body or b"{}")
            items = payload["requests"]
            if not isinstance(items, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise GraphError(400, "BadRequest", "Invalid batch payload format.") from None
        # At most 20 requests a batch, each id unique (learn.microsoft.com/graph/json-batching,
        # known-issues "Limit on batch size"; pnp/pnpcore#4). Messages are the emulator's.
        if len(items) > MAX_BATCH:
            raise GraphError(
                400,
                "BadRequest",
                f"The number of batch requests exceeds the maximum of {MAX_BATCH}.",
            )
        ids = [str(item.get("id")) for item in items]
        if len(set(ids)) != len(ids):
            raise GraphError(400, "BadRequest", "Batch request contains duplicate ids.")
        responses: list[dict[str, Any]] = []
        for item in items:
            url = str(item.get("url", ""))
            path, query = parse_target(url if url.startswith("/") else "/" + url)
            if path.startswith("/v1.0/"):
                path = path[len("/v1.0") :]
            headers = {k.lower(): str(v) for k, v in (item.get("headers") or {}).items()}
            inner = Request(
                method=str(item.get("method", "GET")).upper(),
                path="/v1.0" + path,
                query=query,
                headers=headers,
                in_batch=True,
            )
            answer = self.handle(inner)
            body = json.loads(answer.body) if answer.body else None
            kept = {
                k: v
                for k, v in answer.headers.items()
                if k.lower() in ("content-type", "retry-after", "location", "x-ms-resource-unit")
            }
            responses.append(
                {
                    "id": ids[len(responses)],
                    "status": answer.status,
                    "headers": kept,
                    "body": body,
                    "objects": answer.objects,
                }
            )
        # Graph answers batch items in no particular order; a stable shuffle keeps tests exact.
        responses.sort(key=lambda r: hashlib.sha256(r["id"].encode()).digest())
        return {"responses": responses}


def _spoiled(response: Response, variant: str, request: Request) -> Response:
    """A hostile fault's answer: Graph's page, spoiled the way `variant` names (see faults.py).
    None of these is something Graph sends; they prove the client refuses them."""
    body = json.loads(response.body)
    rows = body.get("value") or []
    if variant == "no_value":
        del body["value"]
    elif variant == "null_value":
        body["value"] = None
    elif variant == "array_body":
        body = rows
    elif variant == "lone_surrogate" and rows:
        rows[0]["displayName"] = "\ud800"
    elif variant == "bad_timestamp" and rows:
        for key in [k for k in rows[0] if k.endswith("DateTime")]:
            rows[0][key] = "not a timestamp"
    elif variant in ("repeat_next_link", "foreign_next_link"):
        query = urllib.parse.urlencode(request.query, quote_via=urllib.parse.quote)
        own_host = request.headers.get("host", "127.0.0.1")
        host = "graph.evil.example" if variant == "foreign_next_link" else own_host
        body["@odata.nextLink"] = f"https://{host}{request.path}?{query}"
    # ensure_ascii: the lone surrogate travels as the \ud800 escape a hostile server would send.
    return replace(response, body=json.dumps(body, ensure_ascii=True).encode("ascii"))


def _fault_error(fault: Fault) -> GraphError:
    if fault.kind == fault_kinds.THROTTLE:
        return too_many_requests(fault.retry_after)
    if fault.kind == fault_kinds.UNAVAILABLE:
        # 503 serviceNotAvailable (microsoft-graph-docs-contrib#6045) with Retry-After, which
        # Graph sends on 503 as on 429 (learn.microsoft.com/graph/throttling); message ours.
        # `retry_after=0` answers without it: "the Retry-After is not always included in a
        # response" (Microsoft Q&A 922050).
        return GraphError(
            503,
            "serviceNotAvailable",
            "The service is temporarily unavailable. Please retry after the specified time.",
            {"Retry-After": str(fault.retry_after)} if fault.retry_after > 0 else {},
        )
    if fault.kind == fault_kinds.GATEWAY_TIMEOUT:
        # 504 without Retry-After (microsoftgraph/msgraph-sdk-design#2: "Graph does return 504s
        # sometimes. Unfortunately they don't have retry-after headers"); code and message ours.
        return GraphError(504, "UnknownError", "The gateway did not receive a timely response.")
    if fault.kind == fault_kinds.EXPIRE_PAGE_TOKEN:
        return expired_page_token()
    return resync_required()


def _graph_error(error: GraphError, request_id: str, client_request_id: str) -> Response:
    body = graph_error_body(error.code, error.message, request_id, client_request_id)
    return Response(error.status, _dump(body), {"Content-Type": _JSON, **error.headers})


def _dump(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _basic_auth(headers: dict[str, str]) -> tuple[str, str] | None:
    value = headers.get("authorization", "")
    if not value.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(value[6:]).decode()
    except ValueError:
        return None
    user, _, password = decoded.partition(":")
    return urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)


def _max_page_size(prefer: str | None) -> int | None:
    if not prefer:
        return None
    for part in prefer.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "odata.maxpagesize" and value.strip().isdigit():
            return max(1, min(int(value), 999))
    return None
