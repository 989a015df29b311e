"""dagster-celery's run launcher, with a worker health check that notices a lost worker.

Dagster's run monitoring (the daemon) asks the run launcher whether each started run's worker
is alive, and fails the run when it is not; run retries then launch it again. dagster-celery
answers from the Celery task's state in the result backend, which the worker writes: STARTED
when it takes the run (its task has `track_started`), SUCCESS or FAILURE when it finishes. A
worker whose machine is lost (or that is killed with SIGKILL, its pool with it) writes nothing
more, so its runs stay STARTED, "running", for ever: never failed, never retried, and holding
their connector's run-queue slot (`entra_pipeline/warehouse`, limit 1), so that connector's next
runs queue behind a dead one.

This launcher also asks the worker itself. The STARTED state records the worker's name; Celery's
remote control `ping` reaches its main process, which answers while its pool's child runs the
sync. A worker that does not answer two health checks in a row is reported FAILED, with its name.
(Two: one missed ping, a broker hiccup, must not fail a healthy run, whose retry would then race
it.) Configure it in place of `dagster_celery.launcher.CeleryRunLauncher`, with the same config
(deploy/celery/dagster.yaml). Nothing else changes: launching, resuming and terminating runs are
dagster-celery's.
"""

from __future__ import annotations

from dagster import DagsterRun
from dagster_celery.launcher import CeleryRunLauncher as DagsterCeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

from entra_pipeline.dagster_private import CheckRunHealthResult, WorkerStatus

PING_TIMEOUT_SECONDS = 5.0
MISSED_PINGS = 2  # in a row, before the worker counts as lost


class CeleryRunLauncher(DagsterCeleryRunLauncher):
    """Runs as Celery tasks (dagster-celery); a run whose worker stopped answering is FAILED."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._missed: dict[str, int] = {}  # run id -> pings its worker missed in a row

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        health = super().check_run_worker_health(run)
        if health.status != WorkerStatus.RUNNING:
            self._missed.pop(run.run_id, None)
            return health
        started = self.celery.AsyncResult(run.tags[DAGSTER_CELERY_TASK_ID_TAG]).info
        worker = started.get("hostname") if isinstance(started, dict) else None
        if not isinstance(worker, str):
            return health  # a backend that keeps no worker name: dagster-celery's answer
        replies = self.celery.control.ping(destination=[worker], timeout=PING_TIMEOUT_SECONDS)
        if any(worker in reply for reply in replies):
            self._missed.pop(run.run_id, None)
            return health
        missed = self._missed.get(run.run_id, 0) + 1
        if missed < MISSED_PINGS:
            self._missed[run.run_id] = missed
            return health
        self._missed.pop(run.run_id, None)
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"Celery worker {worker}, which took this run, has not answered {missed} pings "
            f"({PING_TIMEOUT_SECONDS:.0f} s each): its machine is lost or it was killed",
        )


def server_finding(server: str, timeout: float = 2.0) -> tuple[str, str]:
    """(ok | warning, what `check` says) of a connector_server: whether the Dagster instance
    launches runs on Celery, and which of its workers consume the server's queue (Celery's
    remote control `active_queues`). A server no worker consumes is unknown: its runs would wait
    in the queue."""
    import os

    import dagster as dg

    start = f"celery -A dagster_celery.app worker -Q {server} (docs/scaling-out.md)"
    if not os.environ.get("DAGSTER_HOME"):
        return "warning", (
            f"{server}: runs go to Celery queue {server!r}; DAGSTER_HOME is not set, so which "
            f"workers consume it was not asked. On that server: {start}"
        )
    with dg.DagsterInstance.get() as instance:
        launcher = instance.run_launcher
        if not isinstance(launcher, DagsterCeleryRunLauncher):
            return "warning", (
                f"{server}: the instance's run launcher is {type(launcher).__name__}, which "
                "ignores connector_server: use entra-pipeline's Celery run launcher "
                "(deploy/celery/dagster.yaml)"
            )
        answers = launcher.celery.control.inspect(timeout=timeout).active_queues() or {}
    workers = sorted(w for w, queues in answers.items() if any(q["name"] == server for q in queues))
    if not workers:
        return "warning", (
            f"unknown connector server {server!r}: no Celery worker consumes its queue, so its "
            f"runs would wait. On that server: {start}"
        )
    return "ok", f"{server}: runs only on {', '.join(workers)} (Celery queue {server!r})"
