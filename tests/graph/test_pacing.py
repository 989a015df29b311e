"""The client against the emulator's cost model: the sign-in pass paced at Graph's limit with no
429, and a 429 pausing every thread of the client for its Retry-After."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from entra_pipeline.emulator import EmulatorConfig, running_emulator
from entra_pipeline.emulator.costs import CostModel
from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.sign_in import extract_sign_in_activity
from entra_pipeline.graph.throttle import ThrottleGate
from tests.graph.graph_fixtures import FAST_RETRY, provider_for

SCALE = 0.01  # a Graph second lasts 10 ms


def test_the_sign_in_pass_is_paced_at_its_limit_and_never_throttled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="entra_pipeline.graph")
    costs = CostModel(time_scale=SCALE, base_seconds=0.0, per_object_seconds=0.0)
    with running_emulator(EmulatorConfig(users=6_000, devices=1, costs=costs)) as emu:
        tokens = provider_for(emu)
        gate = ThrottleGate(time_scale=SCALE)
        with GraphClient(
            emu.graph_url, tokens, ca_bundle=emu.ca_bundle, retry=FAST_RETRY, gate=gate
        ) as client:
            extracted = extract_sign_in_activity(client, tmp_path, per_minute=10)
        tokens.close()
        sign_ins = [
            r
            for r in emu.requests
            if "signInActivity" in r.query.get("$select", "") or "$skiptoken" in r.query
        ]
    assert extracted.rows == 6_000
    # ceil(6,000 / 500) = 12 requests, more than the 10 a minute Graph allows: paced 6 Graph
    # seconds apart, none is throttled (unpaced, the 11th would be).
    assert [r.status for r in sign_ins] == [200] * 12
    span = (sign_ins[-1].at - sign_ins[0].at) / SCALE
    assert span >= 11 * 6 * 0.9, span
    assert (
        "sign_in_activity: 6,000 users, 12 pages of 500, paced at 10 requests a minute: "
        "about 1.1 min" in caplog.text
    )


def test_a_429_pauses_every_thread_for_its_retry_after() -> None:
    clock = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    gate = ThrottleGate(ru_per_window=100, window_seconds=10, clock=lambda: clock[0], sleep=sleep)
    gate.before("users")
    assert sleeps == []
    gate.throttled(7.0)  # another thread's 429
    gate.before("devices")
    assert sleeps == [7.0]
    # The bucket refilled while paused: the next requests go at once, until it is empty again.
    for _ in range(69):
        gate.before("devices")
    assert sleeps == [7.0]
    gate.before("devices")
    assert len(sleeps) == 2
    assert sleeps[1] == pytest.approx(0.1)  # 1 RU at 10 RU a second


def test_group_members_come_through_batch_and_only_large_groups_alone(tmp_path: Path) -> None:
    from entra_pipeline.graph.group_members import extract_group_members

    with running_emulator(EmulatorConfig(users=3_000, devices=500)) as emu:
        tokens = provider_for(emu)
        with GraphClient(
            emu.graph_url, tokens, ca_bundle=emu.ca_bundle, retry=FAST_RETRY
        ) as client:
            groups = [g["id"] for g in client.get_json("/groups", {"$select": "id"})["value"]]
            emu.app.clear_requests()
            extracted = extract_group_members(client, groups, tmp_path, max_workers=1)
            calls = emu.requests
            expected = {
                (group, member["id"])
                for group in groups
                for page in client.iter_pages(
                    f"/groups/{group}/transitiveMembers", {"$select": "id", "$top": 999}
                )
                for member in page
            }
        tokens.close()
    landed = {
        (row["group_id"], row["member_id"])
        for file in extracted.files
        for row in map(json.loads, file.read_text().splitlines())
    }
    assert landed == expected
    batches = [r for r in calls if r.path == "/v1.0/$batch"]
    alone = {r.path for r in calls if not r.in_batch and r.path.endswith("/transitiveMembers")}
    large = {group for group in groups if sum(1 for g, _ in expected if g == group) > 999}
    assert len(batches) == -(-len(groups) // 20)
    assert alone == {f"/v1.0/groups/{group}/transitiveMembers" for group in large}
    assert 0 < len(large) < len(groups)
