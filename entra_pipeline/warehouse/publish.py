"""The one place that publishes tables into the DuckDB file analysts read.

A run builds its tables in a private work copy of the published file (a clone sharing its
blocks where the filesystem has reflinks: XFS, btrfs, ZFS; a byte copy elsewhere). When the run ends
with no failed step, the tables it built are copied into a fresh copy of the *current* published
file, and that copy is renamed over it in one atomic step: a reader holding a read-only connection
keeps the old file and is never refused, a new reader sees the new file, and nobody sees half a
sync. A run that fails publishes nothing but its `ops.sync_runs` row and its notifications.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import duckdb
from pydantic import PrivateAttr

from entra_pipeline.names import MAX_RETRIES_TAG, source_of
from entra_pipeline.secrets import redact
from entra_pipeline.settings import DEFAULT_DUCKDB_PATH, ConnectorSettings
from entra_pipeline.warehouse.docs import copy_documentation, document_table
from entra_pipeline.warehouse.errors import WarehouseError
from entra_pipeline.warehouse.files import (
    OwnerLock,
    copy_file,
    exclusive_lock,
    make_private,
    owner_is_gone,
    private_directories,
    remove_spill_directory,
    scratch_folder,
    spill_directory,
)
from entra_pipeline.warehouse.lake import (
    LakeTarget,
    append_ops_rows,
    publish_to_lake,
    seed_from_lake,
)
from entra_pipeline.warehouse.metadata import (
    PREVIEW_MODES,
    PreviewMode,
    table_key,
    table_metadata,
)
from entra_pipeline.warehouse.models import Parameters, create_table
from entra_pipeline.warehouse.ops_tables import create_ops_tables
from entra_pipeline.warehouse.sql import literal, split_table

Severity = Literal["info", "warning", "error"]

DEFAULT_MEMORY_LIMIT = "512MB"

# Work copies left by runs that were killed; older than this they are certainly not in use.
_ABANDONED_AFTER_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Notification:
    notified_at: datetime
    severity: Severity
    code: str
    message: str
    details: dict[str, Any]


@dataclass(frozen=True)
class Publication:
    """What a run published: rows per table, where, and the DuckLake snapshot (None: a file)."""

    rows_per_table: dict[str, int]
    target: str
    lake_snapshot: int | None


@dataclass
class RunOutcome:
    """What a run did, as recorded in `ops.sync_runs`."""

    run_id: str
    job: str
    source: str
    started_at: datetime
    rows_per_table: dict[str, int] = field(default_factory=dict)
    connector: str = ""  # the config's connector_name
    views: list[str] = field(default_factory=list)  # views over those tables, published with them
    graph_requests: int = 0
    graph_retries: int = 0
    notifications: list[Notification] = field(default_factory=list)


class Warehouse(dg.ConfigurableResource):
    """The DuckDB warehouse: a run's work copy, and the atomic publication of what it built."""

    path: str = DEFAULT_DUCKDB_PATH
    tenant_id: str = ""
    # DuckDB would take most of the machine's memory for its buffers; a sync needs far less.
    memory_limit: str = DEFAULT_MEMORY_LIMIT
    # Dagster previews of the tables built (settings `dagster_previews`): masked by default.
    previews: str = "masked"
    # warehouse.backend ducklake (lake.py): the lake each successful run also publishes into.
    lake_catalog: str = ""
    lake_data_path: str = ""
    # The config's connector_name, in ops.* rows (a folder has one connector per tenant).
    connector_name: str = ""

    _work_path: Path | None = PrivateAttr(default=None)
    _owner: OwnerLock | None = PrivateAttr(default=None)
    _base: FileIdentity | None = PrivateAttr(default=None)
    _outcome: RunOutcome | None = PrivateAttr(default=None)
    _log: Any = PrivateAttr(default=None)

    # -- run lifecycle (Dagster calls these once per run with the in-process executor) --------

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if context.run is not None and context.run.is_finished:
            # `dagster job execute` and `dg launch` initialise resources once more after the run
            # has ended, to load outputs: that is not a run, and must not record one.
            return
        run_id = context.run.run_id if context.run else uuid.uuid4().hex
        job = context.run.job_name if context.run else "adhoc"
        self._log = context.log
        self._begin(run_id, job, context.instance)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Publish (or record the failure of) a run whose publication step did not run: one
        that failed, or a selection of assets without that step."""
        if self._outcome is None:
            return  # the publication step published
        error = _first_step_failure(context)
        run_id, built = self._outcome.run_id, list(self._outcome.rows_per_table)
        self._finish(error)
        if error is not None and context.instance is not None:
            report_published_state(context.instance, Path(self.path), built, run_id)

    def _begin(self, run_id: str, job: str, instance: dg.DagsterInstance | None = None) -> None:
        published = Path(self.path)
        private_directories(published.parent)
        _remove_abandoned_work_copies(published)
        self._work_path = published.with_name(f"{published.name}.run-{run_id}")
        with exclusive_lock(published):  # two jobs may finish together
            # Under the publication lock, so no run is between creating its owner file and
            # locking it while another looks for dead ones.
            self._owner = OwnerLock(_owner_path(published, run_id))
            dead = _remove_dead_runs_leftovers(published)
        for dead_run in dead:
            self._record_dead_run(dead_run, run_id, instance)
        with exclusive_lock(published):
            lake = self.lake
            if lake is not None and not published.exists():
                seeded = seed_from_lake(
                    lake, published, self.tenant_id, memory_limit=self.memory_limit
                )
                if seeded:
                    make_private(published)
                    self._say(
                        "info",
                        f"{published} did not exist: rebuilt from the tenant's rows in "
                        f"{lake.describe()} ({len(seeded)} tables)",
                    )
            self._base = _identity(published)
            if self._base is not None:
                started = time.monotonic()
                cloned = copy_file(published, self._work_path)
                self._say(
                    "info",
                    f"work copy of {published.name} ({self._base.size / 2**20:,.0f} MiB) "
                    + (
                        "cloned (the filesystem shares its blocks)"
                        if cloned
                        else f"copied in {time.monotonic() - started:.1f} s"
                    ),
                )
        with contextlib.closing(self._connect()) as con:
            create_ops_tables(con)
        make_private(self._work_path)
        self._outcome = RunOutcome(
            run_id=run_id,
            job=job,
            source=source_of(job),
            started_at=self.run_started_at(),
            connector=self.connector_name,
        )

    def _record_dead_run(
        self, run_id: str, found_by: str, instance: dg.DagsterInstance | None
    ) -> None:
        """A run whose process died (kill -9, out of memory, a lost machine): FAILURE in Dagster,
        a failure row in ops.sync_runs (once: the run-failure sensor may record it too)."""
        message = (
            "the run's process ended without finishing (killed, or its machine lost); nothing "
            f"of it was published, and run {found_by} removed its work copy and scratch files"
        )
        run = instance.get_run_by_id(run_id) if instance is not None else None
        record = instance.get_run_record_by_id(run_id) if instance is not None else None
        job = run.job_name if run is not None else "unknown"
        if instance is not None and run is not None and not run.is_finished:
            # This run redoes its work: Dagster's run retries must not launch it again too.
            instance.add_run_tags(run_id, {MAX_RETRIES_TAG: "0"})
            instance.report_run_failed(run, message=f"The run's process died: {message}")
        if instance is not None and instance.event_log_storage.supports_global_concurrency_limits:
            # A pool slot it held (its app's sign-in pass) is free for the others again.
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
        now = datetime.now(UTC)
        started = (
            datetime.fromtimestamp(record.start_time, UTC) if record and record.start_time else now
        )
        outcome = RunOutcome(
            run_id=run_id,
            job=job,
            source=source_of(job),
            started_at=started,
            connector=self.connector_name,
        )
        outcome.notifications.append(
            Notification(
                now, "error", "run_died", f"Run {run_id} died: {message}", {"run_id": run_id}
            )
        )
        record_unpublished_run(self.path, self.tenant_id, outcome, now, "failure", message)
        if self._log is not None:
            self._log.warning(f"Run {run_id} died before it finished: {message}")

    @classmethod
    def of(cls, settings: ConnectorSettings) -> Warehouse:
        """The warehouse a connector config describes: its file, tenant, previews and lake."""
        return cls(
            path=settings.duckdb_path,
            tenant_id=settings.tenant_id,
            previews=settings.dagster_previews,
            lake_catalog=settings.warehouse.catalog or "",
            lake_data_path=settings.warehouse.data_path or "",
            connector_name=settings.connector_name,
        )

    @property
    def lake(self) -> LakeTarget | None:
        """The DuckLake catalog published into (warehouse.backend ducklake), or None."""
        if not self.lake_catalog:
            return None
        return LakeTarget(self.lake_catalog, self.lake_data_path)

    def run_started_at(self) -> datetime:
        """The run's start: the `now` every option is evaluated against
        (docs/options-and-mapping.md). A subclass may fix it (the transform tests pin their
        threshold boundaries this way)."""
        return datetime.now(UTC)

    def publish(self) -> Publication:
        """Publish what the run built now (the job's last step, so that Dagster's run status is
        the publication's); raises WarehouseError, with the run's failure recorded, when it
        could not. After it the run has nothing left for teardown."""
        outcome = self._require_run()
        tables = dict(outcome.rows_per_table)
        error, snapshot = self._finish(None)
        if error is not None:
            raise WarehouseError(error)
        return Publication(tables, self.lake.describe() if self.lake else self.path, snapshot)

    def _finish(self, error: str | None) -> tuple[str | None, int | None]:
        """Publish the run (error None) or record its failure; returns (the error that stopped
        it, when any; the lake snapshot it committed, when one)."""
        outcome, work = self._require_run(), self._work_path
        assert work is not None
        status = "failure" if error else "success"
        rows = _ops_rows(self.tenant_id, outcome, datetime.now(UTC), status, error)
        lake, snapshot = self.lake, None
        if error is None and lake is not None:
            try:
                snapshot = publish_to_lake(
                    lake,
                    work,
                    self.tenant_id,
                    list(outcome.rows_per_table),
                    outcome.views,
                    rows,
                    memory_limit=self.memory_limit,
                )
            except (WarehouseError, duckdb.Error) as refused:
                error = f"publishing to {lake.describe()} failed: {redact(str(refused))}"
                rows = _ops_rows(self.tenant_id, outcome, datetime.now(UTC), "failure", error)
                lake = None  # it refused: the failure is recorded in the file only
            else:
                self._say(
                    "info",
                    f"Published {len(outcome.rows_per_table)} tables of tenant {self.tenant_id} "
                    f"to {lake.describe()} in one transaction (snapshot {snapshot})",
                )
        if error is None:
            _publish(
                Path(self.path),
                work,
                list(outcome.rows_per_table),
                rows,
                base=self._base,
                views=outcome.views,
            )
            self._say(
                "info",
                f"Published {len(outcome.rows_per_table)} tables to {self.path}: "
                + ", ".join(f"{t}={n}" for t, n in sorted(outcome.rows_per_table.items())),
            )
        else:
            _publish(Path(self.path), None, [], rows)
            if lake is not None:
                try:
                    append_ops_rows(lake, rows, memory_limit=self.memory_limit)
                except (WarehouseError, duckdb.Error) as refused:
                    self._say(
                        "warning",
                        f"The failure could not be recorded in {lake.describe()}: "
                        f"{redact(str(refused))}",
                    )
            self._say(
                "warning",
                f"Nothing published to {self.path}"
                + (f" or {self.lake.describe()}" if self.lake is not None else "")
                + f"; the previous tables are kept (ops.sync_runs records the failure): "
                f"{redact(error)}",
            )
        work.unlink(missing_ok=True)
        remove_spill_directory(work)
        if self._owner is not None:
            self._owner.release()
        self._work_path, self._outcome, self._owner = None, None, None
        return error, snapshot

    # -- what assets use -------------------------------------------------------------------

    @property
    def run_log(self) -> Any:
        """The run's Dagster log (None outside a run)."""
        return self._log

    @property
    def run(self) -> RunOutcome:
        """The current run's outcome record (run id, start time, rows so far)."""
        return self._require_run()

    @contextlib.contextmanager
    def transaction(self, memory_limit: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to this run's work copy, inside one transaction (a layer's writes);
        DuckDB works within `memory_limit` (default: the warehouse's) and spills beyond it."""
        self._require_run()
        con = self._connect(memory_limit)
        try:
            con.execute("BEGIN TRANSACTION")
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    @contextlib.contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to this run's work copy for reading (tables built so far, or published)."""
        self._require_run()
        con = self._connect()
        try:
            yield con
        finally:
            con.close()

    def replace_table(
        self,
        con: duckdb.DuckDBPyConnection,
        table: str,
        select_sql: str,
        params: Parameters = (),
    ) -> int:
        """Create or replace `schema.table` from a query in the work copy; returns its row count.

        The table will be published when the run succeeds.
        """
        split_table(table)
        count = create_table(con, table, select_sql, params)
        self.mark_built(table, count)
        return count

    def replace_view(
        self,
        con: duckdb.DuckDBPyConnection,
        view: str,
        select_sql: str,
        description: str,
        columns: Mapping[str, str],
    ) -> None:
        """Create or replace the view `schema.view` in the work copy and document it (`columns`
        describes each of its columns); it is published with the run's tables."""
        schema, _ = split_table(view)
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        con.execute(f"CREATE OR REPLACE VIEW {view} AS {select_sql}")
        undocumented = document_table(con, view, description, columns)
        if undocumented:
            raise WarehouseError(f"{view}: columns {', '.join(undocumented)} are undocumented")
        outcome = self._require_run()
        if view not in outcome.views:
            outcome.views.append(view)

    def table_metadata(
        self, con: duckdb.DuckDBPyConnection, table: str, rows: int
    ) -> dict[str, Any]:
        """Dagster metadata of a table this run built, previews as configured."""
        mode: PreviewMode = next((m for m in PREVIEW_MODES if m == self.previews), "masked")
        return table_metadata(con, table, rows, mode)

    def mark_built(self, table: str, rows: int) -> None:
        """Record that this run built `table` (created by other means) with `rows` rows."""
        split_table(table)
        self._require_run().rows_per_table[table] = rows

    @contextlib.contextmanager
    def scratch_folder(self, prefix: str) -> Iterator[Path]:
        """A private folder beside the published file (same disk) for this run's extracted
        pages, removed when the block ends (or by the next run, should this one be killed)."""
        run_id = self._require_run().run_id
        with scratch_folder(Path(self.path), f"{prefix}{run_id}-") as folder:
            yield folder

    def add_graph_stats(self, requests: int, retries: int) -> None:
        outcome = self._require_run()
        outcome.graph_requests += requests
        outcome.graph_retries += retries

    def notify(
        self, code: str, severity: Severity, message: str, details: dict[str, Any] | None = None
    ) -> None:
        """Queue a notification for `ops.notifications` (written whether the run succeeds or not)."""
        message = redact(message)
        clean_details = json.loads(redact(json.dumps(details or {}, default=str)))
        self._require_run().notifications.append(
            Notification(datetime.now(UTC), severity, code, message, clean_details)
        )
        if self._log is not None:
            log = {"info": self._log.info, "warning": self._log.warning, "error": self._log.error}
            log[severity](f"[{code}] {message}")

    # -- internals --------------------------------------------------------------------------

    def _say(self, severity: Literal["info", "warning"], message: str) -> None:
        if self._log is not None:
            (self._log.info if severity == "info" else self._log.warning)(message)

    def _connect(self, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
        return connect(self._work_path, memory_limit=memory_limit or self.memory_limit)

    def _require_run(self) -> RunOutcome:
        if self._outcome is None or self._work_path is None:
            raise WarehouseError(
                "The warehouse is used outside a Dagster run: materialize through a job or "
                "dg.materialize so that it can open a work copy and publish at the end."
            )
        return self._outcome


def _ops_rows(
    tenant_id: str, outcome: RunOutcome, finished_at: datetime, status: str, error: str | None
) -> dict[str, list[tuple]]:
    """The `ops.sync_runs` row of a finished run and its `ops.notifications` rows."""
    run_row = (
        tenant_id,
        outcome.run_id,
        outcome.job,
        outcome.source,
        outcome.started_at,
        finished_at,
        status,
        json.dumps(outcome.rows_per_table, sort_keys=True),
        outcome.graph_requests,
        outcome.graph_retries,
        redact(error) if error else None,
        outcome.connector or None,
    )
    notes = [
        (
            tenant_id,
            n.notified_at,
            outcome.run_id,
            outcome.source,
            n.severity,
            n.code,
            n.message,
            json.dumps(n.details, sort_keys=True, default=str),
            outcome.connector or None,
        )
        for n in outcome.notifications
    ]
    return {"ops.sync_runs": [run_row], "ops.notifications": notes}


def connect(
    path: Path | None, *, read_only: bool = False, memory_limit: str = DEFAULT_MEMORY_LIMIT
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the pipeline's memory limit. Beyond it a writable one spills to
    an owner-only folder beside the file (`spill_directory`; removed with the work copy, or after
    publishing); a read-only one keeps DuckDB's default (its queries here are counts)."""
    config: dict[str, Any] = {"memory_limit": memory_limit}
    if path is not None and not read_only:
        config["temp_directory"] = str(spill_directory(path))
    return duckdb.connect(str(path), read_only=read_only, config=config)


def _first_step_failure(context: dg.InitResourceContext) -> str | None:
    """The error of the run's first failed step, if any (a failed blocking check counts)."""
    if context.instance is None or context.run is None:
        return None
    failures = context.instance.all_logs(
        context.run.run_id, of_type={dg.DagsterEventType.STEP_FAILURE}
    )
    for entry in failures:
        event = entry.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event else None
        while error is not None and error.cause is not None:
            error = error.cause  # the user's exception, not Dagster's wrapper
        step = event.step_key if event else "?"
        message = error.message.strip() if error else "step failed"
        return f"step {step} failed: {message}"
    return None


def record_unpublished_run(
    path: str | Path,
    tenant_id: str,
    outcome: RunOutcome,
    finished_at: datetime,
    status: str,
    error: str,
) -> bool:
    """Record a run whose warehouse teardown never wrote it (killed, or failed before its
    resources were up): one `ops.sync_runs` row and its notifications, published atomically.

    Idempotent by run id: returns False, and writes nothing, when the run is already recorded.
    """
    published = Path(path)
    private_directories(published.parent)
    return _publish(
        published,
        None,
        [],
        _ops_rows(tenant_id, outcome, finished_at, status, error),
        unless_recorded=outcome.run_id,
    )


def report_published_state(
    instance: dg.DagsterInstance, published: Path, tables: list[str], failed_run: str
) -> None:
    """After a failed run, tell Dagster what analysts really read: for each table the run built
    but did not publish, a materialization carrying the published table's row count (0 when it
    was never published), so the asset page does not call the unpublished data current."""
    counts: dict[str, int] = {}
    if published.exists():
        with contextlib.closing(connect(published, read_only=True)) as con:
            existing = {
                f"{schema}.{name}"
                for schema, name in con.execute(
                    "SELECT table_schema, table_name FROM information_schema.tables"
                ).fetchall()
            }
            for table in tables:
                if table in existing:
                    ((counts[table],),) = con.execute(f"SELECT count(*) FROM {table}").fetchall()
    for table in tables:
        rows = counts.get(table)
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=table_key(table),
                description=(
                    f"Run {failed_run} failed, so what it built was not published: this is the "
                    f"published {table}"
                    + ("" if rows is not None else ", which has never been published")
                ),
                metadata={
                    "dagster/row_count": rows or 0,
                    "published": rows is not None,
                    "unpublished_run": failed_run,
                },
            )
        )


def _publish(
    published: Path,
    work: Path | None,
    tables: list[str],
    ops_rows: dict[str, list[tuple]],
    *,
    base: FileIdentity | None = None,
    unless_recorded: str | None = None,
    views: Sequence[str] = (),
) -> bool:
    """Put `tables` and `views` of the work copy and `ops_rows` into the published file, in one
    rename, with their documentation.

    When the published file is still the one the work copy was taken from (`base`), the work
    copy itself becomes the published file: nothing is copied again. Otherwise another run
    published meanwhile, and its tables are kept: `tables` are copied into a copy of the current
    file. The file being built is private until the rename, so its statements need no common
    transaction (one would hold every table in memory until the end).
    With `unless_recorded`, nothing happens (False) when `ops.sync_runs` already has that run.
    """
    with exclusive_lock(published):  # two jobs may finish together
        if unless_recorded is not None and _run_recorded(published, unless_recorded):
            return False
        # Under this lock nobody else is publishing: a staged file is a killed publisher's.
        for leftover in published.parent.glob(f"{published.name}.publishing-*"):
            leftover.unlink(missing_ok=True)
        if work is not None and _identity(published) == base:
            staged, copy_tables = work, []
        else:
            staged = published.with_name(f"{published.name}.publishing-{os.getpid()}")
            staged.unlink(missing_ok=True)
            if published.exists():
                copy_file(published, staged)
            copy_tables = tables
        with contextlib.closing(connect(staged)) as con:
            create_ops_tables(con)
            if copy_tables:
                con.execute(f"ATTACH {literal(str(work))} AS work (READ_ONLY)")
                for table in copy_tables:
                    schema, _ = split_table(table)
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                    con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM work.{table}")
                    copy_documentation(con, table, "work")
                for view in views:
                    _copy_view(con, view, "work")
                con.execute("DETACH work")
            for table, rows in ops_rows.items():
                if rows:
                    marks = ",".join("?" * len(rows[0]))
                    con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
            con.execute("CHECKPOINT")
        remove_spill_directory(staged)
        make_private(staged)  # the rename gives the published file these permissions
        with open(staged, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(staged, published)
    return True


def _copy_view(con: duckdb.DuckDBPyConnection, view: str, source_catalog: str) -> None:
    """Create `view` as it is defined in `source_catalog`, documented as it is there (its SQL
    names tables without a catalog, so it reads the tables of the connection's database)."""
    schema, name = split_table(view)
    [(sql,)] = con.execute(
        "SELECT sql FROM duckdb_views() WHERE database_name = ? AND schema_name = ? "
        "AND view_name = ?",
        [source_catalog, schema, name],
    ).fetchall()
    con.execute(re.sub(r"^CREATE VIEW", "CREATE OR REPLACE VIEW", sql.strip().rstrip(";")))
    copy_documentation(con, view, source_catalog)


@dataclass(frozen=True)
class FileIdentity:
    """Which version of the published file a run started from (a rename gives a new inode)."""

    inode: int
    size: int
    modified_ns: int


def _identity(path: Path) -> FileIdentity | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return FileIdentity(stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _run_recorded(published: Path, run_id: str) -> bool:
    found = query_sync_runs(
        published, "SELECT count(*) FROM ops.sync_runs WHERE run_id = ?", [run_id]
    )
    return bool(found and found[0][0])


def query_sync_runs(
    published: Path, sql: str, params: list[Any] | None = None
) -> list[tuple[Any, ...]] | None:
    """Run `sql` on the published file's `ops.sync_runs`; None when no run was ever published."""
    if not published.exists():
        return None
    with contextlib.closing(connect(published, read_only=True)) as con:
        recorded = con.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = 'ops' AND table_name = 'sync_runs'"
        ).fetchall()
        if not recorded[0][0]:
            return None
        return con.execute(sql, params or []).fetchall()


def _owner_path(published: Path, run_id: str) -> Path:
    return published.with_name(f"{published.name}.owner-{run_id}")


def _remove_dead_runs_leftovers(published: Path) -> list[str]:
    """The runs whose owner lock is free (their process died): their work copy, its WAL, their
    scratch folders and the owner file removed; their run ids."""
    dead = []
    for owner in sorted(published.parent.glob(f"{published.name}.owner-*")):
        if not owner_is_gone(owner):
            continue
        run_id = owner.name.rsplit(".owner-", 1)[1]
        work = published.with_name(f"{published.name}.run-{run_id}")
        for leftover in (work, work.with_name(work.name + ".wal")):
            leftover.unlink(missing_ok=True)
        remove_spill_directory(work)
        for folder in published.parent.glob(f"*-{run_id}-*"):
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
        owner.unlink(missing_ok=True)
        dead.append(run_id)
    return dead


def _remove_abandoned_work_copies(published: Path) -> None:
    cutoff = time.time() - _ABANDONED_AFTER_SECONDS
    for stale in published.parent.glob(f"{published.name}.run-*"):
        with contextlib.suppress(FileNotFoundError):
            if stale.stat().st_mtime < cutoff:
                if stale.is_dir():  # a work copy's spill folder
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink()
