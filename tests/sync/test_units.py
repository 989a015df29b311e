"""The run skeleton both sources share: units read each in a thread of its own, a unit that
needs another's report waiting for that one alone, and a failure stopping every read."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from entra_pipeline.emulator import Emulator
from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.collections import GROUPS, USERS, Collection
from entra_pipeline.graph.errors import GraphRequestError
from entra_pipeline.graph.listing import Cancelled, Extracted
from entra_pipeline.sync.units import Reports, read_units
from tests.graph.graph_fixtures import client_for


@dataclass
class Timeline:
    events: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def say(self, event: str) -> None:
        with self.lock:
            self.events.append(event)


@dataclass(frozen=True)
class Scripted:
    """A unit whose read takes `seconds` (or fails), saying when it starts and ends."""

    collection: Collection
    timeline: Timeline
    after: tuple[str, ...] = ()
    seconds: float = 0.0
    fails: bool = False
    soft: bool = False
    until: threading.Event | None = None  # the read lasts until this is set (10 s at most)
    then: threading.Event | None = None  # set when the read ends

    def waits_for(self, run: object) -> tuple[str, ...]:
        return self.after

    def read(self, run: object, reports: Reports) -> Callable[[threading.Event], Extracted]:
        table = self.collection.table

        def read(cancel: threading.Event) -> Extracted:
            self.timeline.say(f"{table} starts with {sorted(reports)}")
            deadline = time.monotonic() + self.seconds
            while time.monotonic() < deadline:
                if cancel.is_set():
                    self.timeline.say(f"{table} stopped")
                    raise Cancelled
                time.sleep(0.01)
            if self.until is not None and not self.until.wait(10):
                self.timeline.say(f"{table} waited in vain")
            if self.fails:
                raise GraphRequestError(f"Graph refused {table}")
            self.timeline.say(f"{table} ends")
            if self.then is not None:
                self.then.set()
            return Extracted(table, (), 0)

        return read

    def land(self, con: Any, run: object, reports: Reports) -> int:
        return 0

    def next_state(self, run: object, report: object) -> dict[str, Any]:
        return {}

    def sync_metadata(self, run: object, report: object) -> dict[str, Any]:
        return {}


MEMBERS = Collection(
    table="members",
    path="/groups",
    columns={"id": "VARCHAR"},
    description="test",
    docs={"id": "test"},
)


@pytest.fixture
def client(emulator: Emulator) -> Iterator[GraphClient]:
    with client_for(emulator) as graph:
        yield graph


def test_a_unit_waits_for_the_one_it_needs_and_no_other(client: GraphClient) -> None:
    timeline, members_ended = Timeline(), threading.Event()
    units = [
        # Users last until members ended: had members waited for users, users would wait in vain.
        Scripted(USERS, timeline, until=members_ended),
        Scripted(GROUPS, timeline, seconds=0.1),
        Scripted(MEMBERS, timeline, after=("groups",), then=members_ended),
    ]
    reports = read_units(client, None, units)
    assert list(reports) == ["users", "groups", "members"]
    assert "users waited in vain" not in timeline.events
    assert timeline.events.index("members starts with ['groups']") > timeline.events.index(
        "groups ends"
    )
    assert timeline.events[-1] == "users ends"


def test_a_failed_read_stops_the_others_and_the_unit_waiting_for_it(
    client: GraphClient, tmp_path: Path
) -> None:
    timeline = Timeline()
    units = [
        Scripted(USERS, timeline, seconds=30),
        Scripted(GROUPS, timeline, seconds=0.1, fails=True),
        Scripted(MEMBERS, timeline, after=("groups",)),
    ]
    with pytest.raises(GraphRequestError, match="Graph refused groups"):
        read_units(client, None, units)
    # The 30 s read stopped at its next look at the run's cancellation; members never read.
    assert sorted(timeline.events) == [
        "groups starts with []",
        "users starts with []",
        "users stopped",
    ]
