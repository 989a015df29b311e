"""The one run skeleton both sources' extraction assets share: a sync unit per Graph collection,
each read on the run's one Graph client in a thread of its own (a unit that needs another's
result waits for that one alone), then each landed in the run's one transaction.

A unit is get → transform → load: `read` returns how its collection is read this run (graph/:
pages streamed to NDJSON files), `land` turns those files into its table (SQL over the files,
warehouse/loading.py and incremental.py). The connector's units are connector/units.py, the
user source's user_source/units.py.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

import duckdb

from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.collections import Collection
from entra_pipeline.graph.extract import CollectionReport, Read, read_one
from entra_pipeline.graph.listing import Cancelled, run_all

Reports = Mapping[str, CollectionReport]
# What ops.delta_state keeps of a collection after a run: its next link, read in full or not.
State = tuple[str | None, bool]
Run = TypeVar("Run", contravariant=True)


class SyncUnit(Protocol[Run]):
    """One Graph collection a source syncs: read, landed, tracked and described."""

    @property
    def collection(self) -> Collection:
        """Its registry entry: the Graph call, the table it lands in, its columns."""
        ...

    @property
    def soft(self) -> bool:
        """Graph refusing it for want of a licence or permission leaves it unavailable, and the
        run goes on."""
        ...

    def waits_for(self, run: Run) -> tuple[str, ...]:
        """The tables whose reports its read needs this run (it is read once they are in)."""
        ...

    def read(self, run: Run, reports: Reports) -> Read | None:
        """How the collection is read this run; None: not read."""
        ...

    def land(self, con: duckdb.DuckDBPyConnection, run: Run, reports: Reports) -> int:
        """Land what was read (inside the run's transaction); its rows."""
        ...

    def next_state(self, run: Run, report: CollectionReport | None) -> Mapping[str, State]:
        """What ops.delta_state keeps of it after this run, by the row's collection key (none,
        or one row)."""
        ...

    def sync_metadata(self, run: Run, report: CollectionReport | None) -> dict[str, Any]:
        """How it was read, for Dagster (sync_mode, delta figures)."""
        ...


_WAIT_SECONDS = 0.2  # how often a waiting unit looks whether the run was cancelled


def read_units(
    client: GraphClient, run: Run, units: Sequence[SyncUnit[Run]]
) -> dict[str, CollectionReport]:
    """Read `units` on `client`, each in a thread of its own: a unit that waits for others starts
    its read when their reports are in (or they turned out not to be read). A report per table
    read, in the order of `units`; the first failure stops every other read and is raised."""
    tables = [unit.collection.table for unit in units]
    done = {table: threading.Event() for table in tables}
    reports: dict[str, CollectionReport] = {}
    lock = threading.Lock()
    cancel = threading.Event()

    def read_unit(unit: SyncUnit[Run]) -> None:
        for table in unit.waits_for(run):
            while table in done and not done[table].wait(_WAIT_SECONDS):
                if cancel.is_set():
                    raise Cancelled
        with lock:
            ready = dict(reports)
        read = unit.read(run, ready)
        if read is not None:
            report = read_one(client, unit.collection.table, read, cancel, soft=unit.soft)
            with lock:
                reports[unit.collection.table] = report
        done[unit.collection.table].set()

    run_all([functools.partial(read_unit, unit) for unit in units], len(units), cancel)
    return {table: reports[table] for table in tables if table in reports}


def land_units(
    con: duckdb.DuckDBPyConnection, run: Run, units: Sequence[SyncUnit[Run]], reports: Reports
) -> dict[str, int]:
    """Land `units` in order (read or not: an unread one lands as its unit says); rows per
    table."""
    return {unit.collection.table: unit.land(con, run, reports) for unit in units}


def next_states(run: Run, units: Sequence[SyncUnit[Run]], reports: Reports) -> dict[str, State]:
    """What ops.delta_state records after this run, per unit that leaves a state."""
    return {
        key: state
        for unit in units
        for key, state in unit.next_state(run, reports.get(unit.collection.table)).items()
    }
