"""The opt-in cost model: real Graph's resource units per request, its token bucket answering 429
with Retry-After, the latency of a page, and time running at a scale."""

from __future__ import annotations

import time

import pytest

from entra_pipeline.emulator import AppRegistration, EmulatorConfig, running_emulator
from entra_pipeline.emulator.costs import CostModel, bucket_size, request_cost
from tests.emulator.helpers import graph
from tests.graph.graph_fixtures import client_for


@pytest.mark.parametrize(
    ("path", "query", "cost"),
    [
        ("/v1.0/users", {}, 2),
        ("/v1.0/users", {"$select": "id"}, 1),
        ("/v1.0/users", {"$select": "id", "$expand": "manager"}, 2),
        ("/v1.0/devices", {"$select": "id", "$expand": "registeredOwners"}, 1),
        ("/v1.0/groups/abc/transitiveMembers", {"$select": "id"}, 4),
        ("/v1.0/groups/abc/members", {}, 3),
        ("/v1.0/subscribedSkus", {}, 3),
        ("/v1.0/groups", {"$select": "id"}, 1),
    ],
)
def test_request_costs_follow_microsofts_table(path: str, query: dict, cost: int) -> None:
    assert request_cost(path, query) == cost


def test_bucket_sizes_follow_the_tenant_tiers() -> None:
    assert [bucket_size(n) for n in (10, 49, 50, 500, 501, 10**6)] == [
        3_500,
        3_500,
        5_000,
        5_000,
        8_000,
        8_000,
    ]


def test_answers_carry_their_cost_and_an_empty_bucket_answers_429_until_it_refills() -> None:
    # 5 RU per 10 Graph seconds, a Graph second lasting 0.1 s: 5 RU a real second.
    costs = CostModel(time_scale=0.1, bucket_ru=5, base_seconds=0.0, per_object_seconds=0.0)
    with (
        running_emulator(EmulatorConfig(users=20, devices=5, costs=costs)) as emu,
        graph(emu) as client,
    ):
        answers = [client.get("/users", params={"$select": "id"}) for _ in range(6)]
        assert [a.status_code for a in answers[:5]] == [200] * 5
        assert [a.headers["x-ms-resource-unit"] for a in answers[:5]] == ["1"] * 5
        refused = answers[5]
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "TooManyRequests"
        retry_after = int(refused.headers["Retry-After"])
        assert retry_after >= 1
        time.sleep(retry_after * costs.time_scale + 0.005)
        assert client.get("/users", params={"$select": "id"}).status_code == 200
    assert (costs.charged, costs.refused) == (6, 1)


def test_a_page_takes_graph_time_scaled() -> None:
    costs = CostModel(time_scale=0.05, base_seconds=0.4, per_object_seconds=0.001)
    with (
        running_emulator(EmulatorConfig(users=200, devices=5, costs=costs)) as emu,
        graph(emu) as client,
    ):
        started = time.monotonic()
        answer = client.get("/users", params={"$select": "id", "$top": "200"})
        elapsed = time.monotonic() - started
    assert len(answer.json()["value"]) == 200
    # (0.4 + 200 * 0.001) Graph seconds at 0.05: 30 ms at least.
    assert elapsed >= 0.03


def test_without_a_cost_model_nothing_is_metered() -> None:
    with running_emulator(EmulatorConfig(users=5, devices=5)) as emu, graph(emu) as client:
        answer = client.get("/users", params={"$select": "id"})
    assert answer.status_code == 200
    assert "x-ms-resource-unit" not in answer.headers


def test_the_sign_in_limit_follows_the_time_scale() -> None:
    costs = CostModel(time_scale=0.01, base_seconds=0.0, per_object_seconds=0.0)
    with (
        running_emulator(EmulatorConfig(users=20, devices=5, costs=costs)) as emu,
        graph(emu) as client,
    ):
        statuses = [
            client.get("/users", params={"$select": "id,signInActivity"}).status_code
            for _ in range(11)
        ]
        assert statuses == [200] * 10 + [429]
        # A Graph minute later (0.6 real seconds) the window has room again.
        time.sleep(0.62)
        assert client.get("/users", params={"$select": "id,signInActivity"}).status_code == 200


def test_writes_draw_on_a_write_quota_of_their_own() -> None:
    """3,000 writes per 150 s per app and tenant on Graph; here 2, a Graph second lasting
    0.01 s: the third write in a row answers 429 with the Retry-After of the quota's refill,
    while reads, which the quota does not meter, go on."""
    costs = CostModel(
        time_scale=0.01,
        write_quota=2,
        write_seconds=150.0,
        base_seconds=0.0,
        per_object_seconds=0.0,
    )
    app = AppRegistration(
        "5f0c8c1e-2b7a-4d55-9a63-0d1e2f3a4b5c", "action-secret", frozenset({"Device.ReadWrite.All"})
    )
    config = EmulatorConfig(users=20, devices=5, costs=costs, apps=(app,))
    with running_emulator(config) as emu:
        devices = [d["id"] for d in emu.tenant.devices() if not d.get("onPremisesSyncEnabled")]
        with client_for(emu, client_id=app.client_id, client_credential=app.client_secret) as g:
            answers = [
                g._http.patch(
                    f"{emu.graph_url}/v1.0/devices/{d}",
                    json={"extensionAttributes": {"extensionAttribute1": "x"}},
                    headers={"Authorization": f"Bearer {g.access_token()}"},
                )
                for d in devices[:3]
            ]
            assert [a.status_code for a in answers] == [204, 204, 429]
            assert int(answers[2].headers["Retry-After"]) == 75  # half the quota's 150 s
            assert g.get_json("/devices", {"$select": "id"})["value"]
    assert (costs.charged, costs.refused) >= (2, 1)
