"""GraphClient against the emulator over HTTPS: paging, headers, retries, restarts, typed errors.

Faults are scripted on the emulator; retry delays go to a recorder, so Retry-After is asserted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest

from entra_pipeline.emulator import Emulator
from entra_pipeline.graph.client import GraphClient, RequestStats, RetryPolicy
from entra_pipeline.graph.errors import (
    GraphPermissionError,
    GraphPremiumRequiredError,
    GraphRequestError,
    GraphUnreachableError,
)
from tests.graph.graph_fixtures import FAST_RETRY, SleepRecorder, graph_requests, provider_for
from tests.support import unused_port

ClientFactory = Callable[..., GraphClient]
ADVANCED = {"$filter": "userType ne 'Guest'", "$count": "true", "$top": 10, "$select": "id"}


def user_ids(emu: Emulator) -> list[str]:
    return [user["id"] for user in emu.tenant.users()]


def listed_ids(graph: GraphClient, path: str = "/users", **params: str | int) -> list[str]:
    return [row["id"] for page in graph.iter_pages(path, params) for row in page]


def test_pages_followed_to_the_end_in_order(emulator: Emulator, graph: GraphClient) -> None:
    pages = list(graph.iter_pages("/users", {"$select": "id,displayName", "$top": 25}))
    assert [len(page) for page in pages] == [25, 25, 10]
    assert [row["id"] for page in pages for row in page] == user_ids(emulator)
    assert graph.stats == {"/v1.0/users": RequestStats(requests=3, pages=3)}
    # $top went on the first request only; the next links carry the rest opaquely.
    assert [r.query.get("$top") for r in graph_requests(emulator)] == ["25", "25", "25"]
    assert ["$skiptoken" in r.query for r in graph_requests(emulator)] == [False, True, True]


def test_consistency_level_is_resent_on_every_page(emulator: Emulator, graph: GraphClient) -> None:
    # An advanced filter answers 400 on any page that arrives without ConsistencyLevel.
    pages = list(graph.iter_pages("/users", ADVANCED, headers={"ConsistencyLevel": "eventual"}))
    expected = [u["id"] for u in emulator.tenant.users() if u.get("userType") != "Guest"]
    assert [row["id"] for page in pages for row in page] == expected
    assert len(pages) == 6
    with pytest.raises(GraphRequestError) as raised:
        list(graph.iter_pages("/users", ADVANCED))
    assert raised.value.code == "Request_UnsupportedQuery"


def test_every_request_has_its_own_client_request_id(
    emulator: Emulator, graph: GraphClient
) -> None:
    emulator.faults.throttle_next("/users", count=2)
    emulator.faults.drop_next("/devices", count=1)
    listed_ids(graph, "/users", **{"$top": 20})
    listed_ids(graph, "/devices")
    ids = [r.client_request_id for r in graph_requests(emulator)]
    # Users: three pages after two throttled answers; devices: one dropped, then its page.
    assert len(ids) == 3 + 2 + 1 + 1
    assert all(ids)
    assert len(set(ids)) == len(ids)


def test_throttling_storm_waits_each_retry_after_and_succeeds(
    emulator: Emulator, graph: GraphClient, sleeps: SleepRecorder
) -> None:
    emulator.faults.throttle_next("/users", count=3, retry_after=7)
    assert listed_ids(graph) == user_ids(emulator)
    assert sleeps.delays == [7.0, 7.0, 7.0]
    assert graph.stats["/v1.0/users"] == RequestStats(requests=4, retries=3, throttled=3, pages=1)


def test_a_429_without_retry_after_backs_off_exponentially_for_every_thread(
    emulator: Emulator, graph: GraphClient, sleeps: SleepRecorder
) -> None:
    emulator.faults.throttle_next("/users", count=2, retry_after=0)  # no Retry-After header
    paused: list[float] = []
    pause = graph.gate.throttled
    graph.gate.throttled = lambda seconds: paused.append(seconds) or pause(seconds)  # type: ignore[method-assign]
    assert listed_ids(graph) == user_ids(emulator)
    assert [r.status for r in graph_requests(emulator)] == [429, 429, 200]
    # Each backoff paused the whole gate (the app's bucket is every thread's), then was waited.
    assert len(paused) == 2
    assert 0 <= paused[0] <= FAST_RETRY.backoff_base
    assert 0 <= paused[1] <= FAST_RETRY.backoff_base * 2
    # Each pause was waited, in order; the emptied RU bucket may add a refill wait of its own
    # (how long depends on the real time the retry took: seen on a loaded machine).
    waited = iter(sleeps.delays)
    assert all(any(delay == pause for delay in waited) for pause in paused), sleeps.delays
    assert len(sleeps.delays) <= len(paused) + 1, sleeps.delays
    assert graph.stats["/v1.0/users"] == RequestStats(requests=3, retries=2, throttled=2, pages=1)


def test_retry_after_is_capped(
    emulator: Emulator, client_factory: ClientFactory, sleeps: SleepRecorder
) -> None:
    emulator.faults.throttle_next("/users", count=1, retry_after=3600)
    graph = client_factory(emulator, retry=RetryPolicy(retry_after_max=30.0))
    assert listed_ids(graph) == user_ids(emulator)
    assert sleeps.delays == [30.0]


def test_service_unavailable_waits_its_retry_after(
    emulator: Emulator, graph: GraphClient, sleeps: SleepRecorder
) -> None:
    emulator.faults.unavailable_next("/devices", count=2, retry_after=2)
    assert len(listed_ids(graph, "/devices")) == 40
    assert sleeps.delays == [2.0, 2.0]
    assert graph.stats["/v1.0/devices"] == RequestStats(requests=3, retries=2, pages=1)


def test_gateway_timeout_without_retry_after_backs_off(
    emulator: Emulator, graph: GraphClient, sleeps: SleepRecorder
) -> None:
    emulator.faults.gateway_timeout_next("/groups", count=2)
    assert listed_ids(graph, "/groups") == [g["id"] for g in emulator.tenant.groups()]
    assert len(sleeps.delays) == 2
    # Full jitter within the exponential bound of each retry.
    assert 0 <= sleeps.delays[0] <= FAST_RETRY.backoff_base
    assert 0 <= sleeps.delays[1] <= FAST_RETRY.backoff_base * 2


def test_dropped_connections_are_retried(
    emulator: Emulator, graph: GraphClient, sleeps: SleepRecorder
) -> None:
    emulator.faults.drop_next("/users", count=2)
    assert listed_ids(graph) == user_ids(emulator)
    assert graph.stats["/v1.0/users"].retries == 2
    assert [r.status for r in graph_requests(emulator)] == [0, 0, 200]


def test_read_timeout_is_retried(emulator: Emulator, client_factory: ClientFactory) -> None:
    emulator.faults.slow_next("/groups", count=1, seconds=1.0)
    graph = client_factory(emulator, timeout=httpx.Timeout(5.0, read=0.3))
    assert len(listed_ids(graph, "/groups")) == emulator.tenant.group_count
    assert graph.stats["/v1.0/groups"].retries == 1


def test_retries_exhausted_is_unreachable_with_graph_ids(
    emulator: Emulator, graph: GraphClient
) -> None:
    emulator.faults.unavailable_next("/users", count=50, retry_after=1)
    with pytest.raises(GraphUnreachableError) as raised:
        listed_ids(graph)
    error = raised.value
    last = graph_requests(emulator)[-1]
    assert str(error) == (
        "Microsoft Graph did not answer GET /v1.0/users after 5 attempts (last: 503 "
        f"serviceNotAvailable; request-id {last.request_id}, client-request-id "
        f"{last.client_request_id}); check graph_url and the network or proxy, or retry later"
    )
    assert (error.status, error.code, error.request_id) == (
        503,
        "serviceNotAvailable",
        last.request_id,
    )
    assert error.notification_code == "service_unreachable"
    assert len(graph_requests(emulator)) == 5


def test_graph_on_a_closed_port_is_unreachable(
    emulator: Emulator, client_factory: ClientFactory
) -> None:
    graph = client_factory(emulator)
    with pytest.raises(GraphUnreachableError) as raised:
        graph.get_json(f"https://127.0.0.1:{unused_port()}/v1.0/users")
    assert str(raised.value).startswith(
        "Microsoft Graph did not answer GET /v1.0/users after 5 attempts (last: ConnectError: "
    )


def test_expired_page_token_restarts_without_duplicates_or_gaps(
    emulator: Emulator, graph: GraphClient
) -> None:
    emulator.faults.expire_page_token_next("/users", count=1)
    ids = listed_ids(graph, "/users", **{"$top": 20, "$select": "id"})
    assert ids == user_ids(emulator)
    assert graph.stats["/v1.0/users"].restarts == 1
    # page 1, expired page 2, then pages 1-3 again
    assert [r.status for r in graph_requests(emulator)] == [200, 400, 200, 200, 200]


def test_expired_page_token_tells_the_caller_to_start_over(
    emulator: Emulator, graph: GraphClient
) -> None:
    emulator.faults.expire_page_token_next("/users", count=1)
    received: list[str] = []

    def start_over() -> None:
        received.clear()

    for page in graph.iter_pages("/users", {"$top": 20}, on_restart=start_over):
        received.extend(row["id"] for row in page)
    assert received == user_ids(emulator)


def test_page_token_that_keeps_expiring_is_an_error(emulator: Emulator, graph: GraphClient) -> None:
    emulator.faults.expire_page_token_next("/users", count=10)
    with pytest.raises(GraphRequestError) as raised:
        listed_ids(graph, "/users", **{"$top": 20})
    assert str(raised.value).startswith(
        "Graph kept expiring the page token of GET /v1.0/users: restarted 2 times without "
        "finishing the listing; retry the run when the directory is less busy (request-id "
    )


@pytest.mark.parametrize(
    ("path", "params", "permission"),
    [
        ("/users", {}, "User.Read.All"),
        ("/users", {"$select": "id,signInActivity"}, "AuditLog.Read.All"),
        ("/devices", {}, "Device.Read.All"),
        ("/groups", {}, "GroupMember.Read.All"),
        ("/subscribedSkus", {}, "LicenseAssignment.Read.All"),
        ("/groups/{group}/transitiveMembers", {}, "GroupMember.Read.All"),
    ],
)
def test_permission_denied_names_the_missing_permission(
    emulator: Emulator,
    graph: GraphClient,
    path: str,
    params: dict[str, str],
    permission: str,
) -> None:
    group_id = next(emulator.tenant.groups())["id"]
    path = path.format(group=group_id)
    emulator.permissions = set()
    with pytest.raises(GraphPermissionError) as raised:
        list(graph.iter_pages(path, params))
    error = raised.value
    denied = graph_requests(emulator)[-1]
    assert str(error) == (
        f"Graph denied GET /v1.0{path}: the app registration lacks the application permission "
        f"{permission}; grant it with admin consent (request-id {denied.request_id}, "
        f"client-request-id {denied.client_request_id})"
    )
    assert error.permission == permission
    assert error.notification_code == "permission_missing"


def test_sign_in_activity_on_a_non_premium_tenant(emulator: Emulator, graph: GraphClient) -> None:
    emulator.premium = False
    with pytest.raises(GraphPremiumRequiredError) as raised:
        list(graph.iter_pages("/users", {"$select": "id,signInActivity", "$top": 500}))
    assert str(raised.value).startswith(
        "Graph denied GET /v1.0/users with signInActivity: sign-in activity needs a Microsoft "
        "Entra ID P1 or P2 licence in the tenant; license the tenant or set "
        "users.import_sign_in_activity to false (request-id "
    )
    assert raised.value.code == "Authentication_RequestFromNonPremiumTenantOrB2CTenant"


def test_other_client_errors_carry_code_message_and_ids(
    emulator: Emulator, graph: GraphClient
) -> None:
    with pytest.raises(GraphRequestError) as raised:
        graph.get_json("/users", {"$select": "id,notAProperty"})
    error = raised.value
    assert error.status == 400
    assert error.request_id == graph_requests(emulator)[-1].request_id
    assert str(error).startswith(f"Graph answered 400 {error.code} to GET /v1.0/users: ")
    assert graph.stats["/v1.0/users"].retries == 0


def test_bearer_token_never_in_errors_or_logs(
    emulator: Emulator, sleeps: SleepRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = provider_for(emulator)
    graph = GraphClient(
        emulator.graph_url, tokens, ca_bundle=emulator.ca_bundle, retry=FAST_RETRY, sleep=sleeps
    )
    emulator.faults.unavailable_next("/users", count=50)
    with pytest.raises(GraphUnreachableError) as unreachable:
        graph.get_json("/users")
    emulator.permissions = set()
    with pytest.raises(GraphPermissionError) as denied:
        graph.get_json("/devices")
    token = tokens.token()
    for text in (str(unreachable.value), str(denied.value), repr(graph), caplog.text):
        assert token not in text
    graph.close()
    tokens.close()


def test_a_listing_longer_than_max_pages_is_refused(
    emulator: Emulator, client_factory: Callable[..., GraphClient]
) -> None:
    client = client_factory(emulator, retry=RetryPolicy(max_retries=1, max_pages=2))
    pages = client.iter_pages("/users", {"$select": "id", "$top": 10})
    assert [len(rows) for rows in (next(pages), next(pages))] == [10, 10]
    with pytest.raises(GraphRequestError, match=r"more than 2 pages; the listing would not end"):
        next(pages)


def test_a_next_link_seen_before_ends_the_listing_with_the_request_ids(
    emulator: Emulator, graph: GraphClient
) -> None:
    emulator.faults.hostile_next("repeat_next_link", "/users", count=2)
    with pytest.raises(GraphRequestError) as caught:
        list(graph.iter_pages("/users", {"$select": "id", "$top": 10}))
    error = caught.value
    assert "a next link it already gave on an earlier page (page 2)" in str(error)
    assert error.request_id == emulator.requests[-1].request_id
    assert f"request-id {error.request_id}" in str(error)


def test_a_batch_call_that_keeps_failing_is_named_as_the_post_it_is(
    emulator: Emulator, graph: GraphClient
) -> None:
    emulator.faults.unavailable_next("/$batch", count=50, retry_after=1)
    with pytest.raises(GraphUnreachableError) as raised:
        graph.batch_get(["/groups?$select=id"], label="groups")
    last = graph_requests(emulator)[-1]
    assert raised.value.method == "POST"
    assert str(raised.value).startswith(
        "Microsoft Graph did not answer POST /v1.0/$batch after 5 attempts (last: 503 "
        f"serviceNotAvailable; request-id {last.request_id}"
    )
