"""What a request costs on real Microsoft Graph: latency and resource units (opt-in).

Without a cost model the emulator answers in milliseconds and never meters anything, which keeps
the test suite fast but hides what decides a real run. With one (`EmulatorConfig(costs=...)`,
`entra-pipeline emulator --cost-model`):

- every Graph answer takes `base_seconds + per_object_seconds * objects` of *Graph time*. The
  defaults give about 1 s for a page of 999 objects and 0.4 s for a page of 100, the product's
  measured "about 0.5-1.5 s a page" (docs/performance.md, "Real Graph: latency, throttling and
  partitioned listings"); no public Microsoft figure exists to cite instead.
- directory reads draw on a token bucket of resource units per app and tenant, as Microsoft's
  "identity and access service limits" (learn.microsoft.com/graph/throttling-limits, "Identity and
  access service limits") document it: 3,500 RU / 10 s for a tenant under 50 users, 5,000 for
  50-500, 8,000 above; costs `GET /users` 2, `/groups/{id}/members` 3, `/transitiveMembers` 5,
  `/subscribedSkus` 3, other reads 1; `$select` -1, `$expand` +1, at least 1. Every answer carries
  `x-ms-resource-unit` (its cost); a request the bucket cannot pay is answered 429 with
  `Retry-After` (seconds until it could).
- writes (POST, PATCH, DELETE) cost 1 RU and draw on a write quota of their own, 3,000 requests
  per 2 minutes 30 seconds per app and tenant (the same page: "Write quota"); either empty
  answers 429.
- `time_scale` makes Graph time pass faster: 0.01 runs a Graph hour in 36 s. Latency sleeps and
  the bucket's refill follow it, and so does the sign-in limit of 10 requests a minute; a
  `Retry-After` stays in Graph seconds (a client benchmarking at a scale waits it scaled).
"""

from __future__ import annotations

import math
import multiprocessing
import threading
import time
from dataclasses import dataclass, field
from typing import Any

_LEVEL, _UPDATED, _CHARGED, _REFUSED, _WRITES, _WRITES_UPDATED = range(6)  # CostModel._state


def shared_values(values: list[float]) -> tuple[Any, Any]:
    """`values` as an array of doubles in shared memory, and a lock for it: what processes
    forked afterwards read and update together (the emulator's `--workers`)."""
    context = multiprocessing.get_context("fork")
    shared = context.RawArray("d", len(values))
    shared[:] = values
    return shared, context.Lock()


# RU per request by path shape (the limits page's table); anything else costs 1.
_BASE_COSTS = (
    ("/transitiveMembers", 5),
    ("/members", 3),
    ("/subscribedSkus", 3),
)


def request_cost(path: str, query: dict[str, str]) -> int:
    """The resource units a directory GET costs (Microsoft's identity and access limits)."""
    trimmed = path.rstrip("/")
    cost = 1
    if trimmed in ("/v1.0/users", "/v1.0/users/delta"):
        cost = 2
    for suffix, value in _BASE_COSTS:
        if trimmed.endswith(suffix) or f"{suffix}/" in trimmed:
            cost = value
            break
    names = {name.lower() for name in query}
    if "$select" in names:
        cost -= 1
    if "$expand" in names:
        cost += 1
    return max(1, cost)


def bucket_size(users: int) -> int:
    """RU per 10 s for a tenant of `users` users (the limits page's three tiers)."""
    if users < 50:
        return 3_500
    if users <= 500:
        return 5_000
    return 8_000


@dataclass
class CostModel:
    """Latency and resource units of real Graph, in Graph seconds scaled by `time_scale`."""

    time_scale: float = 1.0  # real seconds per Graph second
    base_seconds: float = 0.35
    per_object_seconds: float = 0.0007
    bucket_ru: int | None = None  # None: by tenant size (bucket_size)
    bucket_seconds: float = 10.0
    write_quota: int = 3_000
    write_seconds: float = 150.0
    # The bucket's level and clock, and what was spent (RU charged, requests answered 429), in
    # one array: `share()` moves it to memory that forked emulator workers update together.
    _state: Any = field(default_factory=lambda: [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0], repr=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False)

    @property
    def charged(self) -> int:
        return int(self._state[_CHARGED])

    @property
    def refused(self) -> int:
        return int(self._state[_REFUSED])

    def share(self) -> None:
        """Keep the bucket in shared memory, so that worker processes forked after this call
        draw on one bucket, as all of an app's requests do on Graph."""
        self._state, self._lock = shared_values(list(self._state))

    def now(self) -> float:
        """Graph time, in seconds."""
        return time.monotonic() / self.time_scale

    def configure(self, users: int) -> None:
        if self.bucket_ru is None:
            self.bucket_ru = bucket_size(users)

    def take(self, cost: int) -> int | None:
        """Charge `cost` RU; None when paid, else the Retry-After (Graph seconds) to tell."""
        capacity = float(self.bucket_ru or 8_000)
        with self._lock:
            wait = self._draw(_LEVEL, _UPDATED, capacity, capacity / self.bucket_seconds, cost)
            self._state[_CHARGED if wait is None else _REFUSED] += cost if wait is None else 1
            return wait

    def take_write(self) -> int | None:
        """Charge one write (1 RU and one of the write quota); None when paid, else the
        Retry-After (Graph seconds)."""
        capacity = float(self.write_quota)
        with self._lock:
            wait = self._draw(_WRITES, _WRITES_UPDATED, capacity, capacity / self.write_seconds, 1)
        return wait if wait is not None else self.take(1)

    def _draw(
        self, level: int, updated: int, capacity: float, rate: float, cost: int
    ) -> int | None:
        """Refill bucket `level` (at `rate` a Graph second, up to `capacity`) and take `cost`."""
        state, now = self._state, self.now()
        if state[level] < 0:
            state[level], state[updated] = capacity, now
        state[level] = min(capacity, state[level] + (now - state[updated]) * rate)
        state[updated] = now
        if state[level] >= cost:
            state[level] -= cost
            return None
        if level == _WRITES:
            self._state[_REFUSED] += 1
        return max(1, math.ceil((cost - state[level]) / rate))

    def latency(self, objects: int) -> float:
        """Real seconds an answer of `objects` objects takes."""
        return (self.base_seconds + self.per_object_seconds * objects) * self.time_scale
