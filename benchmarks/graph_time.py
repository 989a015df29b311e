"""What a full sync would take on real Microsoft Graph: both jobs against the emulator's cost model.

The emulator runs in its own process with `--cost-model TIME_SCALE` (real Graph's page latency
and resource-unit bucket, Graph time running at TIME_SCALE real seconds a second); the jobs run
here with the Graph client's waits scaled the same way. Printed per collection: requests, pages,
RU, 429s; the projected real-Graph time of the run (wall time / TIME_SCALE: an upper bound, as
this machine's CPU also counts); client CPU per 100k objects and peak RSS, and as a ratio to a bare
httpx + json.loads loop over the same first pages; and, as a ratio, what the previous plan (one
page chain per collection) would take under the same model.

The sign-in pass is left out of the timed run (it is paced at 10 requests a minute whatever the
plan: ceil(users / 500) / 10 minutes, printed); `--sign-in` includes it.

Run: .venv/bin/python benchmarks/graph_time.py [USERS] [DEVICES] [--time-scale 0.25] [--bare-sample N]
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import dagster as dg
import duckdb
import httpx
from extract_raw import (  # the sibling benchmark: same emulator subprocess, CPU floor
    bare_loop_cpu,
    start_emulator,
)
from sync_job import RssSampler, write_config

import entra_pipeline.graph.client as graph_client
from entra_pipeline.config_file import load_settings
from entra_pipeline.definitions import build_definitions
from entra_pipeline.emulator.costs import CostModel, request_cost
from entra_pipeline.graph.collections import DEVICES, SIGN_IN_ACTIVITY, USERS
from entra_pipeline.graph.throttle import PACE_MARGIN
from entra_pipeline.names import CONNECTOR_JOB, USER_SOURCE_JOB
from entra_pipeline.resources import ConnectorResource

REPO = Path(__file__).resolve().parents[1]
EXPAND_PAGE = 100  # objects a page with $expand
MEMBER_PAGE = 999  # members a page ($select=id)


class GraphClock:
    """Graph time under the cost model, as the run spent it: each answer adds its modeled latency
    to the thread that waited for it. Chains are sequential on their thread and threads run at
    once, so a collection takes its planning threads' longest total plus its paging threads'
    longest total, whatever this machine's CPU did meanwhile (the emulator and this process
    share 2 cores here; on Graph they would not)."""

    def __init__(self, model: CostModel) -> None:
        self.model = model
        self.seconds: dict[tuple[str, str, str], float] = defaultdict(float)
        self.lock = threading.Lock()

    def __call__(self, label: str, objects: int) -> None:
        thread = threading.current_thread().name
        phase = "plan" if thread.startswith("graph-plan") else "pages"
        cost = self.model.base_seconds + self.model.per_object_seconds * objects
        with self.lock:
            self.seconds[(label, phase, thread)] += cost

    def collection(self, label: str) -> float:
        def longest(phase: str) -> float:
            return max(
                (v for (lab, ph, _), v in self.seconds.items() if lab == label and ph == phase),
                default=0.0,
            )

        return longest("plan") + longest("pages")

    def next_job(self) -> GraphClock:
        """What this job spent, kept apart; the clock starts again from nothing for the next."""
        done = GraphClock(self.model)
        with self.lock:
            done.seconds, self.seconds = self.seconds, defaultdict(float)
        return done


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid` and its children (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0.0
    for each in [pid, *map(int, children)]:
        fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def _step_spans(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """Each step's (start, end) in the run, from its start and success (or failure) events."""
    started: dict[str, float] = {}
    spans: dict[str, tuple[float, float]] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
        elif (
            event.event_type
            in (
                dg.DagsterEventType.STEP_SUCCESS,
                dg.DagsterEventType.STEP_FAILURE,
            )
            and event.step_key in started
        ):
            spans[event.step_key] = (started[event.step_key], entry.timestamp)
    return spans


def _materializations(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict]:
    found = {}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        event = entry.dagster_event
        assert event is not None
        materialization = event.event_specific_data.materialization  # type: ignore[union-attr]
        found["/".join(materialization.asset_key.path)] = {
            k: v.value for k, v in materialization.metadata.items()
        }
    return found


def _group_sizes(db: Path) -> list[int]:
    """Each group's transitive member count, as the user source published them."""
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT count(*) FROM mdm.group_members GROUP BY group_id ORDER BY 1 DESC"
        ).fetchall()
    return [n for (n,) in rows]


def _print_directory(clock: GraphClock, group_sizes: list[int], model: CostModel) -> None:
    """The user source's listing: users while groups then their members, projected; and the
    previous plan's member listing, one chain per group of more than a page."""
    users, groups, members = (
        clock.collection(label) for label in ("directory_users", "groups", "group_members")
    )
    print(
        f"user source listing, projected from the answers' modeled latency: "
        f"{max(users, groups + members) / 60:.1f} min (users {users / 60:.1f}, groups "
        f"{groups / 60:.1f} then members {members / 60:.1f})"
    )
    chains = [
        math.ceil(n / MEMBER_PAGE) * model.latency(MEMBER_PAGE) / model.time_scale
        for n in group_sizes
        if n > MEMBER_PAGE
    ]
    if chains:
        print(
            f"members as one chain per group under the same model: the longest group "
            f"{max(chains) / 60:.1f} min, the {len(chains)} groups of more than a page one after "
            f"another {sum(chains) / 60:.1f} min (as one $batch worker listed them); "
            f"partitioned / longest chain = {members / max(chains):.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("users", type=int, nargs="?", default=200_000)
    parser.add_argument("devices", type=int, nargs="?", default=400_000)
    parser.add_argument("--time-scale", type=float, default=0.25)
    parser.add_argument("--sign-in", action="store_true", help="include the paced sign-in pass")
    parser.add_argument("--no-mdm", action="store_true", help="only the connector job")
    parser.add_argument(
        "--emulator-workers",
        type=int,
        default=2,
        help="emulator processes (its --workers; default 2, this machine's cores)",
    )
    parser.add_argument(
        "--bare-sample",
        type=int,
        default=100_000,
        help="users and devices each that the bare httpx loop pages, for the CPU floor",
    )
    args = parser.parse_args()
    scale = args.time_scale
    model = CostModel(time_scale=scale)
    clock = GraphClock(model)
    original_init = graph_client.GraphClient.__init__

    def observed_init(self, *a, **kw):  # type: ignore[no-untyped-def]
        # The emulator shares this machine's cores: a page may wait for CPU far longer than
        # Graph's latency, which is not a timeout Graph would cause.
        kw["timeout"] = httpx.Timeout(connect=600.0, read=1800.0, write=600.0, pool=1800.0)
        original_init(self, *a, **kw)
        self.observer = clock

    graph_client.GraphClient.__init__ = observed_init  # type: ignore[method-assign]
    emulator, env = start_emulator(
        args.users,
        args.devices,
        "--cost-model",
        str(scale),
        "--seed",
        "42",
        "--workers",
        str(args.emulator_workers),
    )
    try:
        with tempfile.TemporaryDirectory() as folder:
            db = Path(folder) / "bench.duckdb"
            config = Path(folder) / "connector.yaml"
            write_config(
                config,
                env,
                db,
                users={"import_sign_in_activity": args.sign_in},
                user_source={"enabled": not args.no_mdm, "name": "Bench"},
            )
            connector = ConnectorResource(config_path=str(config), graph_time_scale=scale)
            definitions = build_definitions(load_settings(config), str(config), connector)
            sampler = RssSampler()
            sampler.start()
            instance = dg.DagsterInstance.ephemeral()
            cpu_before = resource.getrusage(resource.RUSAGE_SELF)
            jobs = [CONNECTOR_JOB] if args.no_mdm else [CONNECTOR_JOB, USER_SOURCE_JOB]
            timings: dict[str, float] = {}
            results = {}
            clocks: dict[str, GraphClock] = {}
            job_spans: dict[str, tuple[float, float]] = {}
            for job in jobs:
                started = time.monotonic()
                begun = time.time()
                results[job] = definitions.resolve_job_def(job).execute_in_process(
                    instance=instance,
                    raise_on_error=False,
                    run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                )
                timings[job] = time.monotonic() - started
                job_spans[job] = (begun, time.time())
                clocks[job] = clock.next_job()
            cpu_after = resource.getrusage(resource.RUSAGE_SELF)
            sampler.stopped.set()
            cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (
                cpu_after.ru_stime - cpu_before.ru_stime
            )
            raw = _materializations(instance, results[CONNECTOR_JOB].run_id)
            steps = {job: _step_spans(instance, result.run_id) for job, result in results.items()}
            group_sizes = _group_sizes(db) if USER_SOURCE_JOB in results else []
            emulator_cpu = tree_cpu_seconds(emulator.pid)
            bare_cpu, bare_objects = bare_loop_cpu(env, args.bare_sample)
    finally:
        emulator.terminate()
        emulator.wait(timeout=60)

    objects = args.users + args.devices
    print(f"tenant: {args.users:,} users, {args.devices:,} devices; time scale {scale}")
    print(f"{'collection':<18}{'requests':>10}{'pages':>8}{'RU':>10}{'429s':>6}{'Graph time':>12}")
    for table in ("users", "devices", "groups", "subscribed_skus", "sign_in_activity"):
        meta = raw.get(f"raw/{table}", {})
        if "graph_requests" not in meta:
            continue
        collection = {"users": USERS, "devices": DEVICES}.get(table)
        page_cost = (
            request_cost(f"/v1.0{collection.path}", collection.first_page) if collection else 1
        )
        ru = meta["graph_pages"] * page_cost + (meta["graph_requests"] - meta["graph_pages"])
        print(
            f"{table:<18}{meta['graph_requests']:>10,}{meta['graph_pages']:>8,}{ru:>10,}"
            f"{meta['graph_throttled']:>6}{clocks[CONNECTOR_JOB].collection(table) / 60:>8.1f} min"
        )
    for job, seconds in timings.items():
        slowest = sorted(steps[job].items(), key=lambda item: item[1][0] - item[1][1])[:6]
        print(
            f"{job} slowest steps (wall, peak RSS): "
            + ", ".join(
                f"{k} {end - start:.0f} s {sampler.peak_between(start, end)} MiB"
                for k, (start, end) in slowest
            )
        )
        outcome = "success" if results[job].success else "FAILED"
        print(
            f"{job}: {outcome}, peak RSS {sampler.peak_between(*job_spans[job])} MiB, "
            f"{seconds:.1f} s here -> projected real-Graph time "
            f"{seconds / scale / 60:.1f} min (wall / scale: this machine's CPU included)"
        )
    # The previous plan: one chain per collection, the longest decides (collections run at once).
    chains = {
        "users": math.ceil(args.users / EXPAND_PAGE) * model.latency(EXPAND_PAGE) / scale,
        "devices": math.ceil(args.devices / EXPAND_PAGE) * model.latency(EXPAND_PAGE) / scale,
    }
    one_chain = max(chains.values())
    connector_projected = max(
        clocks[CONNECTOR_JOB].collection(t)
        for t in ("users", "devices", "groups", "subscribed_skus")
    )
    print(
        f"connector extraction, projected from the answers' modeled latency: "
        f"{connector_projected / 60:.1f} min"
    )
    print(
        f"one chain per collection under the same model: {one_chain / 60:.1f} min "
        f"(users {chains['users'] / 60:.1f}, devices {chains['devices'] / 60:.1f}); "
        f"partitioned / one chain = {connector_projected / one_chain:.2f}"
    )
    if USER_SOURCE_JOB in clocks:
        _print_directory(clocks[USER_SOURCE_JOB], group_sizes, model)
    sign_in_pages = math.ceil(args.users / SIGN_IN_ACTIVITY.page_size)
    print(
        f"sign-in pass (paced, 10 requests a minute): {sign_in_pages:,} requests, "
        f"{(sign_in_pages - 1) / 10 * PACE_MARGIN:.0f} min"
        + ("" if args.sign_in else " (not in the timed run)")
    )
    print(
        f"client CPU: {cpu:.1f} s, {cpu / (objects / 100_000):.2f} s per 100k objects; "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    print(f"emulator CPU: {emulator_cpu:.1f} s in {args.emulator_workers} worker process(es)")
    bare = bare_cpu / (bare_objects / 100_000)
    print(
        f"bare httpx + json.loads loop of the same first pages ({bare_objects:,} objects): "
        f"{bare:.2f} s per 100k objects; the jobs / bare loop = "
        f"{cpu / (objects / 100_000) / bare:.2f}"
    )
    return 0 if all(r.success for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
