"""Graph's budget for one app and tenant, shared by every thread of one client: 429 pauses, a
resource-unit bucket like Graph's, and pacing per label (the sign-in activity limit).
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

PACE_MARGIN = 1.02  # paced requests go this much slower than their limit (ThrottleGate.pace)


class ThrottleGate:
    """What every thread of one client shares about Graph's budget for the app and tenant
    (Microsoft's identity and access service limits; docs/performance.md):

    - a 429 pauses every thread for its Retry-After (without one: the exponential backoff), not
      only the one that was throttled;
    - a resource-unit bucket like Graph's (`ru_per_window` RU per `window_seconds`; 8,000 / 10 s,
      the tier of tenants above 500 users): each request first takes the RU its label's last
      answer said it costs (`x-ms-resource-unit`), so concurrent chains stay just under the bucket
      instead of finding it with 429s; a 429 empties it;
    - pacing per label: `pace(label, per_minute)` spaces that label's requests evenly (the sign-in
      activity limit of 10 requests a minute).

    `time_scale` multiplies every wait: 1 on real Graph; a benchmark against the emulator's scaled
    cost model sets the same scale."""

    def __init__(
        self,
        *,
        ru_per_window: float = 8_000,
        window_seconds: float = 10.0,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.capacity, self.window = ru_per_window, window_seconds
        self.time_scale = time_scale
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._level = ru_per_window
        self._updated = clock()
        self._paused_until = 0.0
        self._costs: dict[str, int] = {}
        self._intervals: dict[str, float] = {}
        self._next_slot: dict[str, float] = {}
        self.waited = 0.0  # real seconds threads spent waiting here, summed

    def pace(self, label: str, per_minute: float) -> None:
        # 2 % under the limit: requests sent exactly 60 / per_minute apart reach Graph with
        # jitter, and one that arrives early finds `per_minute` reads in its last minute (2 of
        # 42 were answered 429 so in `benchmarks/graph_time.py 20000 40000 --sign-in` on a busy
        # machine). 2,000 requests at 1M users take 4 minutes longer.
        self._intervals[label] = 60.0 / per_minute * PACE_MARGIN

    def before(self, label: str, woke: float = 0.0) -> None:
        """Wait until `label` may send a request: no pause, its pace slot, its RU. `woke`: when
        the caller's own wait ended (a `sleep` that does not pass real time, in tests)."""
        while True:
            with self._lock:
                now = max(self._clock(), woke)
                rate = self.capacity / (self.window * self.time_scale)  # RU per real second
                elapsed = max(0.0, now - self._updated)
                self._level = min(self.capacity, self._level + elapsed * rate)
                self._updated = max(self._updated, now)
                cost = self._costs.get(label, 1)
                wait = self._paused_until - now
                interval = self._intervals.get(label)
                slot = self._next_slot.get(label, now) if interval else now
                wait = max(wait, slot - now)
                if wait <= 0 and self._level + 1e-6 < cost:
                    wait = (cost - self._level) / rate
                if wait <= 0:
                    self._level -= cost
                    if interval:
                        self._next_slot[label] = max(slot, now) + interval * self.time_scale
                    return
            self.waited += wait
            self._sleep(wait)
            woke = now + wait

    def answered(self, label: str, response: httpx.Response) -> None:
        cost = response.headers.get("x-ms-resource-unit", "")
        if cost.isdigit():
            self._costs[label] = max(1, int(cost))

    def throttled(self, retry_after: float) -> float:
        """A 429: every thread waits `retry_after` (Graph seconds); the real wait."""
        wait = retry_after * self.time_scale
        with self._lock:
            # Graph's bucket is empty now and refills from now on.
            self._level, self._updated = 0.0, min(self._updated, self._clock())
            self._paused_until = max(self._paused_until, self._clock() + wait)
        return wait


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Retry-After in seconds: Graph sends an integer; an HTTP date is accepted too."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
