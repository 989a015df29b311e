"""Faults the emulator injects: scripted ones for tests, seeded random ones for runs and benchmarks.

Also the token-lifetime and sign-in-activity-throttle knobs, since they are switched per run too.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from entra_pipeline.emulator.costs import shared_values

# Fault kinds: what the emulator does instead of (or before) answering normally.
THROTTLE = "throttle"  # 429 TooManyRequests + Retry-After
UNAVAILABLE = "unavailable"  # 503 serviceNotAvailable + Retry-After
GATEWAY_TIMEOUT = "gateway_timeout"  # 504
DROP = "drop"  # close the connection without an answer
SLOW = "slow"  # sleep, then answer normally
EXPIRE_PAGE_TOKEN = "expire_page_token"  # 400 Directory_ExpiredPageToken on a $skiptoken follow
EXPIRE_DELTA_TOKEN = "expire_delta_token"  # 410 Gone (resyncRequired) on a $deltatoken follow
# The next $deltatoken follow serves the changes of earlier rounds again, as well as its own:
# "Your application must be prepared for replays, which occur when the same change appears in
# subsequent responses" (learn.microsoft.com/graph/delta-query-overview, "Replays").
REPLAY_DELTA = "replay_delta"
# Not Graph: a hostile or broken server (or a man in the middle), to prove the client refuses
# what Graph never sends. The page is answered, then spoiled as `variant` says.
HOSTILE = "hostile"
HOSTILE_VARIANTS = (
    "no_value",  # the page's `value` removed
    "null_value",  # `value: null`
    "array_body",  # the body is the JSON array of rows, not an object
    "lone_surrogate",  # a displayName of "\ud800", JSON-escaped
    "bad_timestamp",  # every ...DateTime of the first row is "not a timestamp"
    "repeat_next_link",  # the next link points back at this very page
    "foreign_next_link",  # the next link points at another host
)
KINDS = (
    THROTTLE,
    UNAVAILABLE,
    GATEWAY_TIMEOUT,
    DROP,
    SLOW,
    EXPIRE_PAGE_TOKEN,
    EXPIRE_DELTA_TOKEN,
    REPLAY_DELTA,
    HOSTILE,
)


@dataclass
class FaultRule:
    """A scripted fault: the next `count` requests whose path starts with `path` get `kind`.

    `path` is matched against the URL path with and without the `/v1.0` prefix, so "/users"
    and "/v1.0/users" both match `/v1.0/users?$top=5` (and `/v1.0/users/delta`); "" matches
    every Graph request. Token-service paths (e.g. "/{tenant}/oauth2") match as given.
    """

    kind: str
    path: str = ""
    count: int = 1
    retry_after: int = 1
    seconds: float = 0.0
    variant: str = ""  # HOSTILE only: one of HOSTILE_VARIANTS
    method: str = ""  # "" any, else only requests of this method (PATCH: a write alone)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; allowed: {', '.join(KINDS)}")
        if (self.kind == HOSTILE) != (self.variant in HOSTILE_VARIANTS):
            raise ValueError(
                f"a hostile fault needs a variant, one of {', '.join(HOSTILE_VARIANTS)}; other "
                f"faults take none (got {self.kind!r} with {self.variant!r})"
            )

    def matches(self, path: str) -> bool:
        if not self.path:
            return path.startswith("/v1.0/")
        return path.startswith(self.path) or path.startswith("/v1.0" + self.path)


@dataclass(frozen=True)
class Fault:
    """What to do with one request."""

    kind: str
    retry_after: int = 1
    seconds: float = 0.0
    variant: str = ""


class Faults:
    """Per-run fault settings; safe to change while the emulator serves (tests do).

    Random faults (rates in 0..1, drawn from `random.Random(seed)`, Graph paths only):
    `throttle`, `unavailable`, `gateway_timeout`, `drop`, `slow` (sleeps `slow_seconds`).
    `retry_after` is the Retry-After seconds of random 429/503 answers.
    `expire_page_token_after=N`: the Nth `$skiptoken` follow of the run answers
    Directory_ExpiredPageToken (once).
    Tokens: `token_expires_in` is what the token response claims (and, unless `token_ttl` is set,
    the real lifetime); `token_ttl` makes tokens die server-side after that many seconds while the
    response still claims `token_expires_in`, to exercise refresh-on-401.
    `sign_in_per_minute=N`: requests reading signInActivity beyond N per minute get 429.
    Scripted faults: `throttle_next(...)`, `unavailable_next(...)`, `drop_next(...)`, ... or `add`.
    """

    def __init__(
        self,
        *,
        throttle: float = 0.0,
        unavailable: float = 0.0,
        gateway_timeout: float = 0.0,
        drop: float = 0.0,
        slow: float = 0.0,
        slow_seconds: float = 2.0,
        retry_after: int = 1,
        seed: int = 0,
        expire_page_token_after: int | None = None,
        token_expires_in: int = 3599,
        token_ttl: float | None = None,
        sign_in_per_minute: int | None = None,
        rules: list[FaultRule] | tuple[FaultRule, ...] = (),
    ) -> None:
        self.throttle = throttle
        self.unavailable = unavailable
        self.gateway_timeout = gateway_timeout
        self.drop = drop
        self.slow = slow
        self.slow_seconds = slow_seconds
        self.retry_after = retry_after
        self.expire_page_token_after = expire_page_token_after
        self.token_expires_in = token_expires_in
        self.token_ttl = token_ttl
        self.sign_in_per_minute = sign_in_per_minute
        # Real seconds per Graph second: a cost model's time scale makes a minute pass faster.
        self.time_scale = 1.0
        self.injected: Counter[str] = Counter()  # kind -> how many times it was applied
        self._rules: list[FaultRule] = list(rules)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._page_follows = 0
        # The Graph times of the last `sign_in_per_minute` reads let through, a ring whose last
        # slot is the index of the oldest; `share()` moves it to memory forked workers share.
        self._sign_ins: Any = None
        self._sign_in_lock: Any = self._lock

    def share(self) -> None:
        """Count signInActivity reads in shared memory, so that worker processes forked after
        this call enforce one per-minute limit together, as Graph does per app and tenant."""
        self._sign_ins, self._sign_in_lock = shared_values(list(self._sign_in_ring()))

    def _sign_in_ring(self) -> Any:
        limit = self.sign_in_per_minute or 0
        if self._sign_ins is None or len(self._sign_ins) != limit + 1:
            self._sign_ins = [-math.inf] * limit + [0.0]
        return self._sign_ins

    # ---- scripting (tests) ------------------------------------------------------------------

    def add(self, rule: FaultRule) -> Faults:
        with self._lock:
            self._rules.append(rule)
        return self

    def throttle_next(self, path: str = "", count: int = 1, retry_after: int = 1) -> Faults:
        return self.add(FaultRule(THROTTLE, path, count, retry_after=retry_after))

    def unavailable_next(self, path: str = "", count: int = 1, retry_after: int = 1) -> Faults:
        return self.add(FaultRule(UNAVAILABLE, path, count, retry_after=retry_after))

    def gateway_timeout_next(self, path: str = "", count: int = 1) -> Faults:
        return self.add(FaultRule(GATEWAY_TIMEOUT, path, count))

    def drop_next(self, path: str = "", count: int = 1) -> Faults:
        return self.add(FaultRule(DROP, path, count))

    def slow_next(
        self, path: str = "", count: int = 1, seconds: float = 1.0, method: str = ""
    ) -> Faults:
        return self.add(FaultRule(SLOW, path, count, seconds=seconds, method=method))

    def expire_page_token_next(self, path: str = "", count: int = 1) -> Faults:
        return self.add(FaultRule(EXPIRE_PAGE_TOKEN, path, count))

    def expire_delta_token_next(self, path: str = "", count: int = 1) -> Faults:
        return self.add(FaultRule(EXPIRE_DELTA_TOKEN, path, count))

    def replay_delta_next(self, path: str = "", count: int = 1) -> Faults:
        """The next `count` `$deltatoken` follows of `path` replay every change logged so far."""
        return self.add(FaultRule(REPLAY_DELTA, path, count))

    def hostile_next(self, variant: str, path: str = "", count: int = 1) -> Faults:
        """The next `count` pages of `path` answered, then spoiled as `variant` says."""
        return self.add(FaultRule(HOSTILE, path, count, variant=variant))

    def clear(self) -> None:
        """Drop every scripted fault and zero every rate."""
        with self._lock:
            self._rules.clear()
            self.throttle = self.unavailable = self.gateway_timeout = self.drop = self.slow = 0.0

    @property
    def pending(self) -> list[FaultRule]:
        with self._lock:
            return [rule for rule in self._rules if rule.count > 0]

    # ---- deciding (the server) --------------------------------------------------------------

    def token_lifetime(self) -> float:
        """Seconds an access token really lives, server side."""
        return self.token_ttl if self.token_ttl is not None else float(self.token_expires_in)

    def decide(
        self,
        path: str,
        *,
        page_follow: bool = False,
        delta_follow: bool = False,
        in_batch: bool = False,
        method: str = "GET",
    ) -> Fault | None:
        """The fault for this request, if any (each call consumes scripted counts)."""
        with self._lock:
            if page_follow:
                self._page_follows += 1
            for rule in self._rules:
                if rule.count <= 0 or not rule.matches(path):
                    continue
                if rule.method and rule.method != method:
                    continue
                if rule.kind == EXPIRE_PAGE_TOKEN and not page_follow:
                    continue
                if rule.kind in (EXPIRE_DELTA_TOKEN, REPLAY_DELTA) and not delta_follow:
                    continue
                if rule.kind == DROP and in_batch:
                    continue
                rule.count -= 1
                return self._apply(Fault(rule.kind, rule.retry_after, rule.seconds, rule.variant))
            self._rules = [rule for rule in self._rules if rule.count > 0]
            if page_follow and self._page_follows == self.expire_page_token_after:
                return self._apply(Fault(EXPIRE_PAGE_TOKEN))
            if not path.startswith("/v1.0/"):
                return None
            roll = self._random.random()
            for kind, rate in (
                (THROTTLE, self.throttle),
                (UNAVAILABLE, self.unavailable),
                (GATEWAY_TIMEOUT, self.gateway_timeout),
                (DROP, 0.0 if in_batch else self.drop),
            ):
                if roll < rate:
                    return self._apply(Fault(kind, self.retry_after))
                roll -= rate
            if self.slow and self._random.random() < self.slow:
                return self._apply(Fault(SLOW, seconds=self.slow_seconds))
            return None

    def _apply(self, fault: Fault) -> Fault:
        self.injected[fault.kind] += 1
        return fault

    def sign_in_throttle(self) -> int | None:
        """Seconds to wait when a signInActivity read exceeds the per-minute budget, else None."""
        if not self.sign_in_per_minute:
            return None
        now = time.monotonic() / self.time_scale  # Graph seconds
        limit = self.sign_in_per_minute
        with self._sign_in_lock:
            ring = self._sign_in_ring()
            slot = int(ring[limit])
            oldest = ring[slot]
            if oldest <= now - 60:
                ring[slot], ring[limit] = now, (slot + 1) % limit
                return None
        # `limit` reads let through within the last minute already
        with self._lock:
            self.injected[THROTTLE] += 1
        return max(1, math.ceil(oldest + 60 - now))
