"""Delta rounds (`@odata.deltaLink`, `@removed`, `members@delta`) and `$batch` (20 max, out of
order, items throttled on their own)."""

from __future__ import annotations

from typing import Any

import httpx

from entra_pipeline.emulator import Emulator

from .helpers import graph


def _round(client: httpx.Client, url: str) -> tuple[list[dict[str, Any]], str]:
    """Every item of one delta round and the round's deltaLink."""
    items: list[dict[str, Any]] = []
    while True:
        body = client.get(url).json()
        items += body["value"]
        if "@odata.deltaLink" in body:
            assert "@odata.nextLink" not in body
            return items, body["@odata.deltaLink"]
        url = body["@odata.nextLink"]


def test_user_delta_rounds_report_changes_and_removals(emulator: Emulator) -> None:
    client = graph(emulator)
    tenant = emulator.tenant
    first, delta_link = _round(client, "/users/delta?$select=id,displayName,department")
    assert [u["id"] for u in first] == [u["id"] for u in tenant.users()]
    assert delta_link.startswith(f"{emulator.graph_url}/v1.0/users/delta?")
    assert "$deltatoken=" in delta_link

    empty, delta_link = _round(client, delta_link)
    assert empty == []

    changed, soft, hard = tenant.user(3), tenant.user(4), tenant.user(5)
    tenant.update(changed["id"], department="Quantum Research")
    tenant.remove(soft["id"])
    tenant.remove(hard["id"], permanent=True)
    added = tenant.add(
        "user", {"displayName": "New Hire", "userPrincipalName": "new.hire@contoso.com"}
    )

    second, delta_link = _round(client, delta_link)
    assert second == [
        {
            "id": changed["id"],
            "displayName": changed["displayName"],
            "department": "Quantum Research",
        },
        {"id": soft["id"], "@removed": {"reason": "changed"}},
        {"id": hard["id"], "@removed": {"reason": "deleted"}},
        {"id": added["id"], "displayName": "New Hire", "department": None},
    ]
    assert tenant.user_count == 59
    assert _round(client, delta_link)[0] == []
    listed = client.get("/users?$top=999&$select=id").json()["value"]
    assert len(listed) == 59
    assert soft["id"] not in {u["id"] for u in listed}


def test_delta_pages_follow_next_links(emulator: Emulator) -> None:
    client = graph(emulator)
    body = client.get(
        "/devices/delta?$select=id", headers={"Prefer": "odata.maxpagesize=15"}
    ).json()
    assert len(body["value"]) == 15
    assert "@odata.nextLink" in body
    items, _ = _round(client, body["@odata.nextLink"])
    assert len(items) == 25


def test_group_delta_tracks_members(emulator: Emulator) -> None:
    client = graph(emulator)
    tenant = emulator.tenant
    executives = next(g for g in tenant.groups() if g["displayName"] == "Executives")
    first, delta_link = _round(client, "/groups/delta?$select=displayName,members")
    entry = next(g for g in first if g["id"] == executives["id"])
    assert entry["members@delta"] == [
        {"@odata.type": m["@odata.type"], "id": m["id"]}
        for m in tenant.direct_members(executives["id"])
    ]
    newcomer, leaver = tenant.user(40), tenant.direct_members(executives["id"])[0]
    tenant.add_member(executives["id"], newcomer["id"])
    tenant.remove_member(executives["id"], leaver["id"])
    second, _ = _round(client, delta_link)
    assert second == [
        {
            "displayName": "Executives",
            "id": executives["id"],
            "members@delta": [
                {"@odata.type": "#microsoft.graph.user", "id": newcomer["id"]},
                {
                    "@odata.type": "#microsoft.graph.user",
                    "id": leaver["id"],
                    "@removed": {"reason": "deleted"},
                },
            ],
        }
    ]
    assert newcomer["id"] in {m["id"] for m in tenant.transitive_members(executives["id"])}


def test_user_delta_tracks_manager(emulator: Emulator) -> None:
    client = graph(emulator)
    tenant = emulator.tenant
    first, delta_link = _round(client, "/users/delta?$select=id,manager")
    user = next(u for u in first if tenant.manager_of(u["id"]))
    assert user["manager@delta"] == [
        {"@odata.type": "#microsoft.graph.user", "id": tenant.manager_of(user["id"])["id"]}
    ]
    tenant.set_manager(user["id"], tenant.user(1)["id"])
    second, _ = _round(client, delta_link)
    assert second == [
        {
            "id": user["id"],
            "manager@delta": [{"@odata.type": "#microsoft.graph.user", "id": tenant.user(1)["id"]}],
        }
    ]


def test_expired_delta_token_answers_410_and_sign_in_activity_is_not_in_delta(
    emulator: Emulator,
) -> None:
    client = graph(emulator)
    _, delta_link = _round(client, "/users/delta?$select=id")
    emulator.faults.expire_delta_token_next("/users/delta")
    gone = client.get(delta_link)
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "resyncRequired"
    assert client.get(delta_link).status_code == 200
    unsupported = client.get("/users/delta?$select=id,signInActivity")
    assert unsupported.status_code == 400
    assert (
        client.get("/users/delta?$expand=manager").json()["error"]["code"]
        == "Request_UnsupportedQuery"
    )


def test_batch_answers_every_item_out_of_order(emulator: Emulator) -> None:
    client = graph(emulator)
    user = emulator.tenant.user(2)
    requests = [
        {"id": "1", "method": "GET", "url": "/users?$top=2&$select=id"},
        {"id": "2", "method": "GET", "url": f"/users/{user['id']}?$select=id,displayName"},
        {"id": "3", "method": "GET", "url": "/subscribedSkus"},
        {"id": "4", "method": "GET", "url": "/users/00000000-0000-4000-8000-000000000000"},
    ]
    body = client.post("/$batch", json={"requests": requests}).json()
    responses = {r["id"]: r for r in body["responses"]}
    assert [r["id"] for r in body["responses"]] != ["1", "2", "3", "4"]
    assert sorted(responses) == ["1", "2", "3", "4"]
    assert len(responses["1"]["body"]["value"]) == 2
    assert responses["2"]["body"]["displayName"] == user["displayName"]
    assert len(responses["3"]["body"]["value"]) == 6
    assert responses["4"]["status"] == 404
    assert [r.in_batch for r in emulator.requests[-5:]] == [True, True, True, True, False]


def test_batch_items_are_throttled_individually(emulator: Emulator) -> None:
    client = graph(emulator)
    emulator.faults.throttle_next("/devices", retry_after=4)
    requests = [
        {"id": "a", "method": "GET", "url": "/devices?$top=1"},
        {"id": "b", "method": "GET", "url": "/groups?$top=1"},
    ]
    responses = {
        r["id"]: r for r in client.post("/$batch", json={"requests": requests}).json()["responses"]
    }
    assert responses["a"]["status"] == 429
    assert responses["a"]["headers"]["Retry-After"] == "4"
    assert responses["a"]["body"]["error"]["code"] == "TooManyRequests"
    assert responses["b"]["status"] == 200


def test_batch_limits(emulator: Emulator) -> None:
    client = graph(emulator)
    too_many = [{"id": str(n), "method": "GET", "url": "/users?$top=1"} for n in range(21)]
    response = client.post("/$batch", json={"requests": too_many})
    assert response.status_code == 400
    assert client.post("/$batch", json={"requests": too_many[:20]}).status_code == 200
    dupes = [{"id": "x", "method": "GET", "url": "/users"}] * 2
    assert client.post("/$batch", json={"requests": dupes}).status_code == 400
    anonymous = httpx.post(
        f"{emulator.graph_url}/v1.0/$batch",
        json={"requests": too_many[:1]},
        verify=emulator.ssl_context(),
    )
    assert anonymous.status_code == 401


def test_delta_follows_graphs_query_rules(emulator: Emulator) -> None:
    client = graph(emulator)
    tenant = emulator.tenant
    # Users and groups: no $top, $expand or $orderby; a $filter only by object id.
    for query in ("/users/delta?$top=5", "/groups/delta?$orderby=displayName"):
        answer = client.get(query)
        assert answer.status_code == 400, query
        assert answer.json()["error"]["code"] == "Request_UnsupportedQuery"
    refused = client.get("/devices/delta?$filter=displayName eq 'x'")
    assert refused.json()["error"]["code"] == "Request_UnsupportedQuery"
    one, two = tenant.user(1)["id"], tenant.user(2)["id"]
    scoped, _ = _round(client, f"/users/delta?$select=id&$filter=id eq '{one}' or id eq '{two}'")
    assert [u["id"] for u in scoped] == [one, two]
    too_many = " or ".join(f"id eq '{u['id']}'" for u in list(tenant.users())[:51])
    assert client.get(f"/users/delta?$filter={too_many}").status_code == 400


def test_latest_delta_token_starts_tracking_now(emulator: Emulator) -> None:
    client = graph(emulator)
    tenant = emulator.tenant
    body = client.get("/users/delta?$select=id,department&$deltatoken=latest").json()
    assert body["value"] == []
    assert "@odata.nextLink" not in body
    tenant.update(tenant.user(7)["id"], department="Finance")
    changed, _ = _round(client, body["@odata.deltaLink"])
    assert changed == [{"id": tenant.user(7)["id"], "department": "Finance"}]


def test_a_manager_taken_away_comes_as_removed_and_replays_repeat_changes(
    emulator: Emulator,
) -> None:
    client = graph(emulator)
    tenant = emulator.tenant
    first, link = _round(client, "/users/delta?$select=id,manager")
    user = next(u for u in first if tenant.manager_of(u["id"]))
    manager = tenant.manager_of(user["id"])["id"]
    tenant.set_manager(user["id"], None)
    second, link = _round(client, link)
    assert second == [
        {
            "id": user["id"],
            "manager@delta": [
                {
                    "@odata.type": "#microsoft.graph.user",
                    "id": manager,
                    "@removed": {"reason": "deleted"},
                }
            ],
        }
    ]
    tenant.update(tenant.user(9)["id"], department="Legal")
    emulator.faults.replay_delta_next("/v1.0/users/delta")
    replayed, link = _round(client, link)
    # The earlier round's change comes again with the new one.
    assert {u["id"] for u in replayed} == {user["id"], tenant.user(9)["id"]}
    assert _round(client, link)[0] == []
