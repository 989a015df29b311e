"""The app registration's one sign-in slot: a Dagster concurrency pool that two connectors of one
app registration take in turn for their sign-in activity pass (docs/scaling-out.md, "One app
registration's budget").
"""

# No `from __future__ import annotations`, like the assets whose context it takes.
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy.exc
from dagster import AssetExecutionContext

from entra_pipeline.warehouse.files import exclusive_lock

SIGN_IN_POOL_PREFIX = "entra_sign_in/"
SLOT_POLL_SECONDS = 1.0


def sign_in_pool(client_id: str) -> str:
    """The Dagster concurrency pool of an app registration's sign-in pass."""
    return f"{SIGN_IN_POOL_PREFIX}{client_id}"


@contextlib.contextmanager
def sign_in_slot(context: AssetExecutionContext, client_id: str) -> Iterator[None]:
    """Hold the app registration's one sign-in slot (a Dagster concurrency pool, created with one
    slot unless the operator set it) for the pass: Graph's limit for signInActivity, 10
    requests a minute, holds per app across tenants, so two connectors of one app take turns
    instead of throttling each other. An instance whose storage keeps no pools (the in-memory one
    of `execute_in_process` by default) runs the pass without."""
    storage = context.instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        yield
        return
    pool = sign_in_pool(client_id)
    run_id, step = context.run.run_id, "raw_entra:sign_in_activity"
    # Dagster claims a slot by selecting a free one and then writing the step into it, with
    # `SELECT ... FOR UPDATE SKIP LOCKED` between the two: SQLite ignores FOR UPDATE, so two
    # processes claiming at the same moment on the SQLite storage of a DAGSTER_HOME both wrote
    # themselves into the one slot and read sign-in activity at once (seen in CI, about 1 start
    # in 30 in a two-process loop). Every claim of ours on this machine is therefore made under
    # one file lock in the instance's folder; on PostgreSQL storage (several machines) the row
    # lock is what keeps the slot, and this lock only orders this machine's claims.
    guard = Path(context.instance.root_directory) / "entra_sign_in_pools"

    with exclusive_lock(guard):
        if storage.get_concurrency_info(pool).slot_count == 0:
            try:
                storage.set_concurrency_slots(pool, 1)
            except sqlalchemy.exc.IntegrityError:
                # Another machine's run of this app created the pool between the two calls
                # (PostgreSQL storage; on this machine the lock orders them): use its slot.
                if storage.get_concurrency_info(pool).slot_count == 0:
                    raise

    def claim() -> bool:
        with exclusive_lock(guard):
            return storage.claim_concurrency_slot(pool, run_id, step).is_claimed

    waited = 0.0
    while not claim():
        if waited == 0.0:
            context.log.info(
                f"Sign-in activity waits for pool {pool}: another connector of this app "
                "registration is reading sign-in activity (one at a time per app)"
            )
        time.sleep(SLOT_POLL_SECONDS)
        waited += SLOT_POLL_SECONDS
    if waited:
        context.log.info(f"Sign-in activity got pool {pool} after {waited:.0f}s")
    try:
        yield
    finally:
        storage.free_concurrency_slot_for_step(run_id, step)
