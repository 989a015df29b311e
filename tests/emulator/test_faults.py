"""Scripted and seeded faults: 429/503/504 with Retry-After, dropped connections, slow answers,
expired page and delta tokens, the sign-in-activity throttle, and the request log."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from entra_pipeline.emulator import Emulator, Faults
from entra_pipeline.emulator.faults import FaultRule

from .helpers import graph


def test_next_requests_on_a_path_are_throttled_with_retry_after(emulator: Emulator) -> None:
    client = graph(emulator)
    emulator.faults.throttle_next("/users", count=2, retry_after=3)
    assert client.get("/devices").status_code == 200  # other paths are untouched
    for _ in range(2):
        response = client.get("/users?$top=5")
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "3"
        assert response.json()["error"]["code"] == "TooManyRequests"
    assert client.get("/users?$top=5").status_code == 200
    assert emulator.faults.injected["throttle"] == 2


def test_unavailable_and_gateway_timeout(emulator: Emulator) -> None:
    client = graph(emulator)
    emulator.faults.unavailable_next("/v1.0/groups", retry_after=7).gateway_timeout_next("/groups")
    first = client.get("/groups")
    assert (first.status_code, first.headers["Retry-After"]) == (503, "7")
    assert first.json()["error"]["code"] == "serviceNotAvailable"
    assert client.get("/groups").status_code == 504
    assert client.get("/groups").status_code == 200


def test_dropped_connection_then_recovery(emulator: Emulator) -> None:
    client = graph(emulator)
    emulator.faults.drop_next("/users")
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/users")
    assert client.get("/users").status_code == 200
    assert [r.status for r in emulator.requests if r.path == "/v1.0/users"] == [0, 200]


def test_slow_answer(emulator: Emulator) -> None:
    client = graph(emulator)
    emulator.faults.slow_next("/users", seconds=0.4)
    started = time.monotonic()
    assert client.get("/users").status_code == 200
    assert time.monotonic() - started >= 0.4
    emulator.faults.slow_next("/users", seconds=0.5)
    with pytest.raises(httpx.ReadTimeout):
        client.get("/users", timeout=0.1)


def test_expired_page_token_on_next_link_follow(emulator: Emulator) -> None:
    client = graph(emulator)
    emulator.faults.expire_page_token_next("/users")
    first = client.get("/users?$top=10")
    assert first.status_code == 200  # first pages carry no token: unaffected
    expired = client.get(first.json()["@odata.nextLink"])
    assert expired.status_code == 400
    assert expired.json()["error"]["code"] == "Directory_ExpiredPageToken"
    assert client.get(first.json()["@odata.nextLink"]).status_code == 200


def test_nth_page_follow_expires_once(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory(users=40, devices=0, faults=Faults(expire_page_token_after=2))
    client = graph(emu)
    statuses = []
    url = "/users?$top=10"
    while url:
        response = client.get(url)
        statuses.append(response.status_code)
        if response.status_code == 400:
            continue  # retry the same link
        url = response.json().get("@odata.nextLink")
    assert statuses == [200, 200, 400, 200, 200]


def test_seeded_random_faults_repeat_exactly(emulator_factory: Callable[..., Emulator]) -> None:
    def run() -> list[int]:
        emu = emulator_factory(
            users=5, devices=0, faults=Faults(throttle=0.3, unavailable=0.2, seed=5)
        )
        client = graph(emu)
        return [client.get("/users").status_code for _ in range(30)]

    first, second = run(), run()
    assert first == second
    assert {200, 429, 503} == set(first)


def test_random_drops_and_slow_answers(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory(users=5, devices=0, faults=Faults(drop=0.5, seed=3))
    client = graph(emu)
    outcomes = []
    for _ in range(12):
        try:
            outcomes.append(client.get("/users").status_code)
        except httpx.RemoteProtocolError:
            outcomes.append(0)
    assert 0 in outcomes
    assert 200 in outcomes
    assert emu.faults.injected["drop"] == outcomes.count(0)


def test_token_service_is_not_hit_by_random_graph_faults(
    emulator_factory: Callable[..., Emulator],
) -> None:
    emu = emulator_factory(users=1, devices=0, faults=Faults(throttle=1.0))
    client = graph(emu)  # acquiring the token works although every Graph call is throttled
    assert client.get("/users").status_code == 429


def test_sign_in_activity_throttle(emulator_factory: Callable[..., Emulator]) -> None:
    emu = emulator_factory(users=5, devices=0, faults=Faults(sign_in_per_minute=2))
    client = graph(emu)
    assert [client.get("/users?$select=id,signInActivity").status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]
    throttled = client.get("/users?$select=id,signInActivity")
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert client.get("/users?$select=id,displayName").status_code == 200


def test_request_log_records_method_path_query_status_and_ids(emulator: Emulator) -> None:
    client = graph(emulator)
    emulator.clear_requests()
    client.get("/users?$top=3&$select=id", headers={"client-request-id": "abc-123"})
    (record,) = emulator.requests
    assert (record.method, record.path, record.status) == ("GET", "/v1.0/users", 200)
    assert record.query == {"$top": "3", "$select": "id"}
    assert record.client_request_id == "abc-123"
    assert record.in_batch is False


def test_a_hostile_fault_names_its_variant_and_only_it_takes_one() -> None:
    with pytest.raises(ValueError, match="a hostile fault needs a variant, one of no_value"):
        FaultRule("hostile")
    with pytest.raises(ValueError, match="other faults take none"):
        FaultRule("throttle", variant="no_value")
    assert FaultRule("hostile", variant="array_body").variant == "array_body"
