"""The warehouse resource: a run's private work copy of the published DuckDB file, what the
run's assets build in it, and (at the run's end) its publication or the record of its failure.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import duckdb
from pydantic import PrivateAttr

from entra_pipeline.secrets import redact
from entra_pipeline.settings import DEFAULT_DUCKDB_PATH, ConnectorSettings
from entra_pipeline.warehouse.docs import document_table
from entra_pipeline.warehouse.errors import WarehouseError
from entra_pipeline.warehouse.failures import first_step_failure, report_published_state
from entra_pipeline.warehouse.files import (
    OwnerLock,
    copy_file,
    exclusive_lock,
    folder_problem,
    make_private,
    private_directories,
    remove_spill_directory,
    scratch_folder,
)
from entra_pipeline.warehouse.lake import (
    LakeTarget,
    append_ops_rows,
    publish_to_lake,
    seed_from_lake,
)
from entra_pipeline.warehouse.metadata import PREVIEW_MODES, PreviewMode, table_metadata
from entra_pipeline.warehouse.models import Parameters, create_table
from entra_pipeline.warehouse.ops_tables import create_ops_tables
from entra_pipeline.warehouse.outcome import Notification, RunOutcome, Severity, ops_rows
from entra_pipeline.warehouse.publish import (
    DEFAULT_MEMORY_LIMIT,
    FileIdentity,
    Publication,
    connect,
    identity,
    publish_file,
)
from entra_pipeline.warehouse.recovery import (
    owner_path,
    record_dead_run,
    remove_abandoned_work_copies,
    remove_dead_runs_leftovers,
)
from entra_pipeline.warehouse.sql import split_table


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
    # The config's connector_server, in ops.sync_runs.
    connector_server: str = ""

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
        error = (
            first_step_failure(context.instance, context.run.run_id)
            if context.instance is not None and context.run is not None
            else None
        )
        run_id, built = self._outcome.run_id, list(self._outcome.rows_per_table)
        self._finish(error)
        if error is not None and context.instance is not None:
            report_published_state(context.instance, Path(self.path), built, run_id)

    def _begin(self, run_id: str, job: str, instance: dg.DagsterInstance | None = None) -> None:
        published = Path(self.path)
        problem = folder_problem(published)
        if problem is not None:
            raise WarehouseError(f"duckdb_path {published}: {problem}")
        private_directories(published.parent)
        remove_abandoned_work_copies(published)
        self._work_path = published.with_name(f"{published.name}.run-{run_id}")
        with exclusive_lock(published):  # two jobs may finish together
            # Under the publication lock, so no run is between creating its owner file and
            # locking it while another looks for dead ones.
            self._owner = OwnerLock(owner_path(published, run_id))
            dead = remove_dead_runs_leftovers(published)
        for dead_run in dead:
            record_dead_run(
                instance,
                dead_run,
                run_id,
                published,
                self.tenant_id,
                self.connector_name,
                self._log,
            )
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
            self._base = identity(published)
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
        self._open_work_copy(published)
        make_private(self._work_path)
        self._outcome = RunOutcome.of_run(
            run_id, job, self.run_started_at(), self.connector_name, server=self.connector_server
        )

    def _open_work_copy(self, published: Path) -> None:
        """Give the work copy its ops tables; a copy DuckDB cannot read is a damaged file."""
        assert self._work_path is not None
        work = self._work_path.name
        try:
            with contextlib.closing(self._connect()) as con:
                create_ops_tables(con)
        except duckdb.Error as error:
            self._clean_up()
            reason = redact(str(error)).replace(work, published.name)
            raise WarehouseError(
                f"duckdb_path {published} is damaged: DuckDB cannot read it ({reason}). Restore "
                "it from a backup, or move it aside: the next sync then reads everything again"
            ) from None

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
            connector_server=settings.connector_server,
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
        snapshot, lake_refused = None, False
        try:
            if error is None and self.lake is not None:
                snapshot, error = self._publish_to_lake(outcome, work)
                lake_refused = error is not None
            if error is None:
                rows = ops_rows(self.tenant_id, outcome, datetime.now(UTC), "success", None)
                publish_file(
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
                # A lake that refused the publication is not asked to record the failure.
                self._record_failure(outcome, error, to_lake=not lake_refused)
        finally:
            self._clean_up()
        return error, snapshot

    def _clean_up(self) -> None:
        """Nothing of the run stays beside the file: its work copy, spill folder, owner file."""
        if self._work_path is not None:
            self._work_path.unlink(missing_ok=True)
            remove_spill_directory(self._work_path)
        if self._owner is not None:
            self._owner.release()
        self._work_path, self._outcome, self._owner = None, None, None

    def _publish_to_lake(self, outcome: RunOutcome, work: Path) -> tuple[int | None, str | None]:
        """Publish the run's tables into the lake in one transaction: (its snapshot, None), or
        (None, why it refused)."""
        lake = self.lake
        assert lake is not None
        rows = ops_rows(self.tenant_id, outcome, datetime.now(UTC), "success", None)
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
            return None, f"publishing to {lake.describe()} failed: {redact(str(refused))}"
        self._say(
            "info",
            f"Published {len(outcome.rows_per_table)} tables of tenant {self.tenant_id} "
            f"to {lake.describe()} in one transaction (snapshot {snapshot})",
        )
        return snapshot, None

    def _record_failure(self, outcome: RunOutcome, error: str, *, to_lake: bool) -> None:
        """Nothing published: the run's failure row and notifications in the file (and the
        lake, `to_lake`); the previous tables stay."""
        rows = ops_rows(self.tenant_id, outcome, datetime.now(UTC), "failure", error)
        try:
            publish_file(Path(self.path), None, [], rows)
        except (WarehouseError, duckdb.Error, OSError) as refused:
            self._say(
                "warning",
                f"The failure could not be recorded in {self.path}: {redact(str(refused))}",
            )
        lake = self.lake
        if lake is not None and to_lake:
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
            + (f" or {lake.describe()}" if lake is not None else "")
            + f"; the previous tables are kept (ops.sync_runs records the failure): "
            f"{redact(error)}",
        )

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
