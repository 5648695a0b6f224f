"""The query-result cache of the serving API: Redis when ``REDIS_URL`` is set, in-process
otherwise, behind one interface (:class:`QueryCache`).

Values are opaque bytes (the API stores pre-serialized responses). Keys come from
:func:`cache_key`: query name + normalised parameters + warehouse ``data_version`` +
the caller's effective segments, so a new materialization is never served stale and a
key restricted to some segments never reads another key's rows. TTLs are per query
class (:data:`TTL_BY_CLASS`, :func:`ttl_for`).

Single flight: concurrent misses of one key compute once. In process, a per-key flight
(an event the followers wait on); with Redis also a ``SET NX PX`` lock so that other
processes wait for the value instead of computing it too. A Redis outage never fails a
request nor holds it for long: commands time out after a fraction of a second, a circuit
breaker (:mod:`bi_platform.serving.breaker`) stops asking a failing Redis, and an
in-process cache stands in while it is open.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

import redis

from bi_platform.retail.queries import CATALOG
from bi_platform.serving.breaker import (
    DEFAULT_REDIS_TIMEOUT,
    CircuitBreaker,
    redis_client_options,
)

logger = logging.getLogger(__name__)

__all__ = [
    "TTL_BY_CLASS",
    "InProcessCache",
    "NullCache",
    "QueryCache",
    "RedisCache",
    "cache_key",
    "make_cache",
    "query_class",
    "ttl_for",
]

#: Seconds a result stays cached, by query class (top products 1 h, dashboard metrics
#: 5 min, forecasts 1 h, suppliers 6 h); "default" for anything unclassified.
TTL_BY_CLASS: dict[str, float] = {
    "top_products": 3600,
    "dashboard": 300,
    "forecast": 3600,
    "suppliers": 21600,
    "default": 900,
}

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


# --------------------------------------------------------------------------------------
# Keys and TTLs
# --------------------------------------------------------------------------------------
def _normalise(value: Any) -> Any:
    """A JSON-stable form of a parameter value (same value, same text)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, Decimal):
        return _normalise(float(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in sorted(value.items(), key=lambda i: str(i[0]))}
    if isinstance(value, set | frozenset):
        return sorted((_normalise(v) for v in value), key=lambda v: json.dumps(v))
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    raise TypeError(f"cannot normalise parameter value of type {type(value).__name__}")


def cache_key(
    query: str,
    params: Mapping[str, Any],
    data_version: str,
    segments: Sequence[str] | None,
) -> str:
    """The cache key of one query result: ``<query>:<sha256>``.

    The digest covers the query name, the parameters (sorted, values JSON-normalised),
    the warehouse ``data_version`` and the effective segments (sorted, deduplicated;
    ``None`` -- unrestricted -- differs from any list). The readable prefix is the query
    name with anything outside ``[A-Za-z0-9_.-]`` replaced.
    """
    if isinstance(segments, str | bytes):
        raise TypeError("segments must be a sequence of strings or None, not a string")
    payload = {
        "q": query,
        "p": _normalise(dict(params)),
        "v": data_version,
        "s": None if segments is None else sorted(set(segments)),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"{_UNSAFE.sub('_', query)[:64]}:{digest}"


def query_class(name: str) -> str:
    """The cache class of catalog query ``name`` ("default" when unknown)."""
    query = CATALOG.get(name)
    if query is None or query.cache_class not in TTL_BY_CLASS:
        return "default"
    return query.cache_class


def ttl_for(name: str, overrides: Mapping[str, float] | None = None) -> float:
    """Seconds to cache query ``name``: ``overrides`` by query name, then by class, then
    :data:`TTL_BY_CLASS`."""
    cls = query_class(name)
    if overrides:
        if name in overrides:
            return float(overrides[name])
        if cls in overrides:
            return float(overrides[cls])
    return float(TTL_BY_CLASS[cls])


# --------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------
@runtime_checkable
class QueryCache(Protocol):
    """A bytes cache with single-flight computation of misses."""

    enabled: bool

    def get_or_compute(
        self, key: str, ttl: float, compute: Callable[[], bytes]
    ) -> tuple[bytes, bool]:
        """``(value, hit)``: the cached value, or ``compute()``'s, stored for ``ttl``
        seconds (``ttl <= 0``: not stored). Concurrent misses of ``key`` call ``compute``
        once; the others get its value (``hit`` True: they did not compute) or its
        exception."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters of this instance: hits, misses (computations), entries when known."""
        ...

    def close(self) -> None: ...


@dataclass
class _Flight:
    """One in-progress computation that followers wait on."""

    done: threading.Event = field(default_factory=threading.Event)
    value: bytes | None = None
    error: BaseException | None = None


class _SingleFlight:
    """Per-key flights within one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}

    def run(self, key: str, compute: Callable[[], bytes]) -> tuple[bytes, bool]:
        """``(value, led)``: ``led`` is True for the one caller that ran ``compute``."""
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
        assert flight is not None
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            assert flight.value is not None
            return flight.value, False
        try:
            flight.value = compute()
            return flight.value, True
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()


def _check_value(value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"cached values must be bytes, compute() returned {type(value).__name__}")
    return bytes(value)


# --------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------
class NullCache:
    """The cache switched off: every call computes, nothing is stored."""

    enabled = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._misses = 0

    def get_or_compute(
        self, key: str, ttl: float, compute: Callable[[], bytes]
    ) -> tuple[bytes, bool]:
        value = _check_value(compute())
        with self._lock:
            self._misses += 1
        return value, False

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"hits": 0, "misses": self._misses, "entries": 0}

    def close(self) -> None:
        return None


class InProcessCache:
    """A thread-safe TTL + LRU cache in this process's memory."""

    enabled = True

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._flights = _SingleFlight()
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    def _get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, value = entry
            if expires <= time.monotonic():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def put(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (``ttl <= 0``: not stored);
        not counted as a hit or a miss.

        Args:
            key: The cache key.
            value: The bytes to keep.
            ttl: Seconds to keep them.
        """
        self._put(key, value, ttl)

    def _put(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            self._entries[key] = (time.monotonic() + ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self._evictions += 1

    def peek(self, key: str) -> bytes | None:
        """The cached value of ``key`` (counted as a hit), or ``None`` (not counted: the
        caller goes on to :meth:`get_or_compute`). Never blocks on I/O or on a flight,
        so the event loop can serve hits without a threadpool hop."""
        value = self._get(key)
        if value is not None:
            with self._lock:
                self._hits += 1
        return value

    def get_or_compute(
        self, key: str, ttl: float, compute: Callable[[], bytes]
    ) -> tuple[bytes, bool]:
        value = self._get(key)
        if value is not None:
            with self._lock:
                self._hits += 1
            return value, True

        result: dict[str, bool] = {}

        def leader() -> bytes:
            cached = self._get(key)  # stored by a flight that ended since our lookup
            if cached is not None:
                return cached
            fresh = _check_value(compute())
            self._put(key, fresh, ttl)
            result["computed"] = True
            return fresh

        value, led = self._flights.run(key, leader)
        computed = led and result.get("computed", False)
        with self._lock:
            if computed:
                self._misses += 1
            else:
                self._hits += 1
        return value, not computed

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "hits": self._hits,
                "misses": self._misses,
                "entries": len(self._entries),
                "evictions": self._evictions,
            }

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def close(self) -> None:
        self.clear()


_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class _SkippedError(Exception):
    """Redis is not to be used for the rest of this call (failed, or the breaker is open)."""


@dataclass
class _Trip:
    """The Redis calls of one :meth:`RedisCache.get_or_compute`: after the first failure
    the others are skipped, so one call waits for at most one Redis timeout."""

    failed: bool = False


class RedisCache:
    """A Redis-backed cache shared by every worker process.

    Values live under ``prefix + key`` with a ``PX`` expiry; the single-flight lock of a
    key is ``prefix + "lock:" + key`` (``SET NX PX lock_timeout``, released only by its
    owner). A process that finds the lock taken polls for the value until the owner
    stores it, the lock disappears (it then tries to take it) or ``lock_timeout``
    passes (it then computes without the lock).

    Redis never holds a caller for long: every command is bounded by ``socket_timeout``
    (connect timeout half of it, no retries: :func:`~bi_platform.serving.breaker.
    redis_client_options`), one :meth:`get_or_compute` makes no further Redis call after
    one failed, and every call goes through ``breaker`` (shared with the rate limiter by
    the app). A failed call is logged (never the URL, which may hold a password) and the
    value computed uncached; while the breaker is open Redis is not asked at all and an
    in-process cache (``fallback_entries`` entries, TTL + LRU) stands in, also for
    :meth:`peek`, so hits are served without I/O until Redis answers a probe again. The
    stand-in keeps a copy of what this process read from or wrote to Redis (values are
    immutable per key: the key holds the warehouse data_version), so it is warm when
    Redis goes away -- no burst of recomputation on top of the outage.
    """

    enabled = True

    def __init__(
        self,
        url: str,
        prefix: str = "bi:cache:",
        *,
        lock_timeout: float = 30.0,
        poll_interval: float = 0.005,
        socket_timeout: float = DEFAULT_REDIS_TIMEOUT,
        breaker: CircuitBreaker | None = None,
        fallback_entries: int = 2000,
    ) -> None:
        self.prefix = prefix
        self.lock_timeout = lock_timeout
        self.poll_interval = poll_interval
        self.breaker = breaker if breaker is not None else CircuitBreaker("redis cache")
        self._client = redis.Redis.from_url(url, **redis_client_options(socket_timeout))
        self._release = self._client.register_script(_RELEASE)
        self._flights = _SingleFlight()
        self._local = InProcessCache(max_entries=fallback_entries)
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._errors = 0
        self._fallback = 0

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def _error(self, action: str, exc: Exception) -> None:
        self._count("_errors")
        logger.warning("redis cache %s failed (%s); computing uncached", action, exc)

    def _redis(self, trip: _Trip, action: str, call: Callable[[], Any]) -> Any:
        """``call()`` (one Redis command) if this trip has not failed yet and the breaker
        allows; its failure is reported to the breaker. Raises :class:`_SkippedError` when
        Redis is not to be used (any more) by this trip."""
        if trip.failed or not self.breaker.allow():
            raise _SkippedError
        try:
            result = call()
        except redis.RedisError as exc:
            trip.failed = True
            self.breaker.failure(exc)
            self._error(action, exc)
            raise _SkippedError from None
        except BaseException:
            self.breaker.abandon()
            raise
        self.breaker.success()
        return result

    def peek(self, key: str) -> bytes | None:
        """While the breaker is open: the in-process stand-in's value of ``key`` (no I/O,
        for the event loop). Otherwise ``None``: the caller takes :meth:`get_or_compute`,
        which asks Redis.

        Args:
            key: A :func:`cache_key`.

        Returns:
            The cached bytes, or ``None``.
        """
        if not self.breaker.is_open():
            return None
        value = self._local.peek(key)
        if value is not None:
            self._count("_hits")
            self._count("_fallback")
        return value

    def _from_fallback(
        self, key: str, ttl: float, compute: Callable[[], bytes]
    ) -> tuple[bytes, bool]:
        value, hit = self._local.get_or_compute(key, ttl, compute)
        self._count("_fallback")
        self._count("_hits" if hit else "_misses")
        return value, hit

    def get_or_compute(
        self, key: str, ttl: float, compute: Callable[[], bytes]
    ) -> tuple[bytes, bool]:
        if self.breaker.is_open():
            return self._from_fallback(key, ttl, compute)
        full = self.prefix + key
        trip = _Trip()
        try:
            value = self._redis(trip, "read", lambda: self._client.get(full))
        except _SkippedError:
            if not trip.failed:  # another caller holds the breaker's probe
                return self._from_fallback(key, ttl, compute)
            fresh = _check_value(compute())
            self._count("_misses")
            return fresh, False
        if value is not None:
            self._count("_hits")
            self._local.put(key, value, ttl)  # the stand-in stays warm
            return value, True
        result: dict[str, bool] = {}

        def leader() -> bytes:
            value, computed = self._fill(full, ttl, compute, trip)
            result["computed"] = computed
            self._local.put(key, value, ttl)
            return value

        value, led = self._flights.run(key, leader)
        computed = led and result.get("computed", False)
        self._count("_misses" if computed else "_hits")
        return value, not computed

    def _fill(
        self, full: str, ttl: float, compute: Callable[[], bytes], trip: _Trip
    ) -> tuple[bytes, bool]:
        """``(value, computed)`` for a local miss: take the cross-process lock or wait
        for whoever holds it; compute uncached as soon as Redis is skipped."""
        lock_key = self.prefix + "lock:" + full[len(self.prefix) :]
        token = secrets.token_hex(16)
        locked = False
        deadline = time.monotonic() + self.lock_timeout
        interval = self.poll_interval
        px = int(self.lock_timeout * 1000)
        try:
            while True:
                if self._redis(
                    trip, "lock", lambda: self._client.set(lock_key, token, nx=True, px=px)
                ):
                    locked = True
                    break
                value = self._redis(trip, "lock", lambda: self._client.get(full))
                if value is not None:
                    return value, False
                if time.monotonic() >= deadline:
                    logger.warning("redis cache lock wait timed out; computing anyway")
                    break
                time.sleep(interval)
                interval = min(interval * 1.5, 0.05)
            if locked:
                value = self._redis(trip, "read", lambda: self._client.get(full))  # stored
                if value is not None:  # just before we took the lock
                    self._unlock(trip, lock_key, token)
                    return value, False
        except _SkippedError:
            if locked:
                self._unlock(trip, lock_key, token)
            return _check_value(compute()), True
        try:
            fresh = _check_value(compute())
            if ttl > 0:
                with contextlib.suppress(_SkippedError):
                    self._redis(
                        trip,
                        "write",
                        lambda: self._client.set(full, fresh, px=max(1, int(ttl * 1000))),
                    )
            return fresh, True
        finally:
            if locked:
                self._unlock(trip, lock_key, token)

    def _unlock(self, trip: _Trip, lock_key: str, token: str) -> None:
        with contextlib.suppress(_SkippedError):
            self._redis(trip, "unlock", lambda: self._release(keys=[lock_key], args=[token]))

    def stats(self) -> dict[str, int]:
        """Hits, misses, Redis errors, and the requests the in-process stand-in served
        while the breaker was open (``fallback``)."""
        with self._lock:
            return {
                "hits": self._hits,
                "misses": self._misses,
                "errors": self._errors,
                "fallback": self._fallback,
            }

    def clear(self) -> None:
        """Delete every key under this cache's prefix (and the in-process stand-in)."""
        self._local.clear()
        batch = list(self._client.scan_iter(match=self.prefix + "*", count=500))
        for start in range(0, len(batch), 500):
            self._client.delete(*batch[start : start + 500])

    def close(self) -> None:
        self._local.close()
        self._client.close()


def make_cache(
    *,
    enabled: bool,
    redis_url: str | None,
    breaker: CircuitBreaker | None = None,
    redis_timeout: float = DEFAULT_REDIS_TIMEOUT,
) -> QueryCache:
    """The cache of the API.

    Args:
        enabled: False: a :class:`NullCache`.
        redis_url: Set: a :class:`RedisCache` on it; unset: an :class:`InProcessCache`.
        breaker: The Redis circuit breaker (shared with the rate limiter); a new one when
            omitted.
        redis_timeout: Seconds one Redis command may take.

    Returns:
        The cache.
    """
    if not enabled:
        return NullCache()
    if redis_url:
        logger.info("query cache: redis")
        return RedisCache(redis_url, breaker=breaker, socket_timeout=redis_timeout)
    logger.info("query cache: in-process")
    return InProcessCache()
