"""A circuit breaker for the serving API's Redis, and the Redis client options it needs.

The query cache and the rate limiter share one :class:`CircuitBreaker` per process. Every
Redis call first asks :meth:`CircuitBreaker.allow`; a call that fails (timeout, refused or
reset connection, any ``RedisError``) reports :meth:`CircuitBreaker.failure`, one that
answers reports :meth:`CircuitBreaker.success`.

States:

- ``closed``: calls go to Redis. ``failure_threshold`` consecutive failures open it.
- ``open``: calls are skipped (the cache and the limiter fall back to this process's
  memory at once, without waiting) until ``cooldown`` seconds have passed.
- ``half_open``: after the cool-down one call (the *probe*) goes to Redis while the
  others are still skipped; its success closes the breaker, its failure opens it for
  another cool-down. A probe that never reports (e.g. its task was cancelled) is
  replaced by another after ``cooldown`` seconds.

Every Redis call is bounded by the client options of :func:`redis_client_options`:
short connect and read timeouts and no retries (redis-py retries timeouts and
connection errors ten times by default, which turns one hung call into seconds).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from redis.backoff import NoBackoff

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_COOLDOWN",
    "DEFAULT_FAILURE_THRESHOLD",
    "DEFAULT_REDIS_TIMEOUT",
    "CircuitBreaker",
    "redis_client_options",
]

#: Seconds one Redis call may take (connect + command) before it counts as failed.
DEFAULT_REDIS_TIMEOUT = 0.1
#: Consecutive failures that open the breaker.
DEFAULT_FAILURE_THRESHOLD = 2
#: Seconds the breaker stays open before a probe call is let through.
DEFAULT_COOLDOWN = 2.0

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    """A thread-safe circuit breaker (see the module docstring).

    Args:
        name: What the breaker guards (logged on state changes).
        failure_threshold: Consecutive failures that open the breaker (>= 1).
        cooldown: Seconds an open breaker waits before letting a probe through (> 0).
        clock: Monotonic seconds (tests pass a fake one).
        on_change: Called with the new state on every state change.
    """

    def __init__(
        self,
        name: str = "redis",
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        cooldown: float = DEFAULT_COOLDOWN,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1 (got {failure_threshold})")
        if cooldown <= 0:
            raise ValueError(f"cooldown must be > 0 (got {cooldown})")
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_started: float | None = None
        self._counts = {"calls": 0, "failures": 0, "skipped": 0, "opened": 0, "closed": 0}

    # -- state ---------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"`` (an open breaker past its cool-down
        reads ``"half_open"``)."""
        with self._lock:
            if self._state == OPEN and self._clock() - self._opened_at >= self.cooldown:
                return HALF_OPEN
            return self._state

    def is_open(self) -> bool:
        """True while calls are being skipped and no probe is due: open within the
        cool-down, or half-open with a probe under way. Takes no probe (for callers that
        only want to know whether to use their fallback without asking Redis)."""
        with self._lock:
            now = self._clock()
            if self._state == CLOSED:
                return False
            if self._state == OPEN:
                return now - self._opened_at < self.cooldown
            return self._probe_started is not None and now - self._probe_started < self.cooldown

    def stats(self) -> dict[str, Any]:
        """Counters since creation: calls let through, failures, calls skipped, times
        opened and closed, and the current state."""
        state = self.state
        with self._lock:
            return {**self._counts, "state": state}

    # -- calls ---------------------------------------------------------------------------
    def allow(self) -> bool:
        """Whether a Redis call may be made now. In half-open state only one caller (the
        probe) gets True until it reports; every False is counted as skipped.

        Returns:
            True: make the call and report its outcome; False: skip Redis.
        """
        changed: str | None = None
        with self._lock:
            now = self._clock()
            allowed = True
            if self._state == OPEN:
                if now - self._opened_at >= self.cooldown:
                    self._state = changed = HALF_OPEN
                    self._probe_started = now
                else:
                    allowed = False
            elif self._state == HALF_OPEN:
                if self._probe_started is None or now - self._probe_started >= self.cooldown:
                    self._probe_started = now  # no probe out (or a lost one): this is it
                else:
                    allowed = False
            self._counts["calls" if allowed else "skipped"] += 1
        if changed:
            self._changed(changed)
        return allowed

    def success(self) -> None:
        """Report a call that answered: closes a half-open (or open) breaker."""
        changed: str | None = None
        with self._lock:
            self._failures = 0
            self._probe_started = None
            if self._state != CLOSED:
                self._state = changed = CLOSED
                self._counts["closed"] += 1
        if changed:
            logger.warning("%s circuit breaker closed: %s answers again", self.name, self.name)
            self._changed(changed)

    def failure(self, exc: BaseException | None = None) -> None:
        """Report a failed call: opens the breaker after ``failure_threshold`` consecutive
        failures, or at once when it was half-open (the probe failed).

        Args:
            exc: The error (its type is logged when the breaker opens).
        """
        changed: str | None = None
        with self._lock:
            self._counts["failures"] += 1
            self._failures += 1
            self._probe_started = None
            probe_failed = self._state == HALF_OPEN
            if probe_failed or (self._state == CLOSED and self._failures >= self.failure_threshold):
                self._state = changed = OPEN
                self._opened_at = self._clock()
                self._counts["opened"] += 1
            elif self._state == OPEN:
                self._opened_at = self._clock()
        if changed:
            logger.warning(
                "%s circuit breaker open for %.1f s after %s (%s): calls skipped, "
                "falling back to this process",
                self.name,
                self.cooldown,
                "a failed probe" if probe_failed else f"{self.failure_threshold} failure(s)",
                type(exc).__name__ if exc is not None else "failure",
            )
            self._changed(changed)

    def abandon(self) -> None:
        """Report a call that ended without an outcome (cancelled): frees the probe slot
        without changing the state."""
        with self._lock:
            self._probe_started = None

    def _changed(self, state: str) -> None:
        if self._on_change is not None:
            try:
                self._on_change(state)
            except Exception:
                logger.exception("circuit breaker state callback failed")


def redis_client_options(
    timeout: float = DEFAULT_REDIS_TIMEOUT, *, asyncio: bool = False
) -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis.from_url`` / ``redis.asyncio.Redis.from_url``
    that bound one call by ``timeout`` seconds: read timeout ``timeout``, connect timeout
    half of it (a connect on a LAN takes well under a millisecond; a partitioned host
    never answers), no retries, no ``CLIENT SETINFO`` round trip on connect.

    Args:
        timeout: Seconds a command may wait for its answer (> 0).
        asyncio: Options for ``redis.asyncio`` (its own ``Retry`` class) instead of the
            blocking client.

    Returns:
        The options (a fresh ``Retry`` object each time: clients must not share one).
    """
    if timeout <= 0:
        raise ValueError(f"redis timeout must be > 0 (got {timeout})")
    if asyncio:
        from redis.asyncio.retry import Retry as AsyncRetry

        retry: Any = AsyncRetry(NoBackoff(), 0)
    else:
        from redis.retry import Retry

        retry = Retry(NoBackoff(), 0)
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout / 2,
        "retry": retry,
        "retry_on_error": [],
        "health_check_interval": 0,
    }
    try:  # redis-py >= 7: driver_info; earlier: lib_name / lib_version
        from redis.driver_info import DriverInfo

        options["driver_info"] = DriverInfo(name=None, lib_version=None)
    except ImportError:
        options.update(lib_name=None, lib_version=None)
    return options
