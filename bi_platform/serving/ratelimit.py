"""Rate limiting of the serving API (slowapi over ``limits``).

One limit (``serving_rate_limit``, "100/minute" by default) per API key -- or per client
address when auth is off -- counted in Redis when ``REDIS_URL`` is set (so every worker
shares the count) and in memory otherwise.

Usage in the app::

    limiter = make_limiter(rate=config.rate_limit, redis_url=config.redis_url)
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, rate_limit_exceeded_handler)

then either decorate routes (``@limiter.limit(config.rate_limit)`` -- the route needs a
``request: Request`` parameter; auth must be a dependency that sets
``request.state.api_key`` so the key is known when slowapi checks) or, for one budget
shared by every route, call :func:`check_rate_limit` from a dependency that runs after
auth. Both raise :class:`slowapi.errors.RateLimitExceeded`, which
:func:`rate_limit_exceeded_handler` turns into a 429 JSON response with ``Retry-After``.

The API itself calls :func:`check_rate_limit_async`: with Redis, the count is one
``redis.asyncio`` round trip (a Lua ``INCRBY`` + ``EXPIRE`` that also returns the
window's TTL, for ``Retry-After``) on the same keys as slowapi's fixed windows, bounded
by a short timeout and guarded by the circuit breaker the cache shares
(:mod:`bi_platform.serving.breaker`). The event loop never waits on a blocking Redis
call: a hung or unreachable Redis costs one request at most ``redis_timeout`` seconds,
after which the breaker opens and requests are counted in this process's memory until
Redis answers a probe again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import redis
import redis.asyncio as aioredis
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from slowapi.util import get_remote_address
from starlette.requests import Request
from starlette.responses import JSONResponse

from bi_platform.serving.breaker import (
    DEFAULT_REDIS_TIMEOUT,
    CircuitBreaker,
    redis_client_options,
)

logger = logging.getLogger(__name__)

__all__ = [
    "RateLimitExceeded",
    "RedisWindowCounter",
    "check_rate_limit",
    "check_rate_limit_async",
    "make_limiter",
    "rate_limit_exceeded_handler",
    "rate_limit_exceeded_handler_async",
    "rate_limit_key",
    "retry_after_seconds",
]

#: The scope of the budget :func:`check_rate_limit` shares across routes.
SHARED_SCOPE = "api"
#: The key prefix of the ``limits`` Redis storage (its fixed-window keys are shared).
LIMITS_PREFIX = "LIMITS"

# limits' incr_expire.lua, plus the window's remaining seconds
_HIT = """
local amount = tonumber(ARGV[2])
local current = redis.call("incrby", KEYS[1], amount)
if tonumber(current) == amount then
    redis.call("expire", KEYS[1], ARGV[1])
end
return {current, redis.call("ttl", KEYS[1])}
"""


class RedisWindowCounter:
    """Fixed-window counts in Redis over ``redis.asyncio``, behind a circuit breaker.

    The keys are those of ``limits``' Redis storage (``LIMITS:<item key>``), so the
    budget is the one slowapi's decorated routes count.

    Args:
        url: The Redis URL.
        breaker: The circuit breaker of this Redis (shared with the cache).
        timeout: Seconds one count may take, connection included.
    """

    def __init__(
        self, url: str, breaker: CircuitBreaker, timeout: float = DEFAULT_REDIS_TIMEOUT
    ) -> None:
        self.breaker = breaker
        self.timeout = timeout
        self._client = aioredis.Redis.from_url(
            url, max_connections=256, **redis_client_options(timeout, asyncio=True)
        )
        self._script = self._client.register_script(_HIT)

    async def hit(self, item: RateLimitItem, args: list[str]) -> tuple[bool, int] | None:
        """Count one request against ``item`` for ``args``.

        Args:
            item: The limit.
            args: The identifiers of the budget (prefix, key, scope).

        Returns:
            ``(allowed, seconds until the window resets)``, or ``None`` when Redis was
            not asked (breaker open) or did not answer within the timeout.
        """
        if not self.breaker.allow():
            return None
        key = f"{LIMITS_PREFIX}:{item.key_for(*args)}"
        try:
            async with asyncio.timeout(self.timeout):
                count, ttl = await self._script(keys=[key], args=[item.get_expiry(), 1])
        except (TimeoutError, redis.RedisError, OSError) as exc:
            self.breaker.failure(exc)
            logger.warning(
                "rate-limit storage failed (%s: %s); counting in memory", type(exc).__name__, exc
            )
            return None
        except BaseException:
            self.breaker.abandon()
            raise
        self.breaker.success()
        return int(count) <= item.amount, max(1, int(ttl))

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()


def rate_limit_key(request: Request) -> str:
    """``key:<key_id>`` for an authenticated request (``request.state.api_key``, an
    :class:`~bi_platform.serving.auth.ApiKey`), else ``addr:<client address>``."""
    api_key = getattr(request.state, "api_key", None)
    key_id = getattr(api_key, "key_id", None)
    if key_id:
        return f"key:{key_id}"
    return f"addr:{get_remote_address(request) or 'unknown'}"


def make_limiter(
    *,
    rate: str,
    redis_url: str | None,
    breaker: CircuitBreaker | None = None,
    redis_timeout: float = DEFAULT_REDIS_TIMEOUT,
) -> Limiter:
    """A slowapi limiter with ``rate`` as its default limit, keyed by
    :func:`rate_limit_key`, stored in Redis (``redis_url``) or in memory.

    Fixed windows (one counter per key and window: cheap in Redis). Response headers are
    off (they need every limited route to return a Response); the 429 handler sets
    ``Retry-After`` itself. ``limiter.bi_rate`` holds the parsed limit. With Redis, an
    unreachable server degrades to per-process in-memory counting (logged), never to
    errors: slowapi's ``in_memory_fallback`` for decorated routes, ``limiter.bi_fallback``
    for :func:`check_rate_limit` and :func:`check_rate_limit_async`; Redis commands time
    out after ``redis_timeout`` seconds without retries. ``limiter.bi_redis`` is the
    :class:`RedisWindowCounter` :func:`check_rate_limit_async` counts with (``None``
    without Redis).

    Args:
        rate: The limit, e.g. ``"100/minute"`` (a malformed one raises ``ValueError``).
        redis_url: Count in this Redis; ``None``: in memory.
        breaker: The Redis circuit breaker (shared with the cache); a new one when
            omitted.
        redis_timeout: Seconds one Redis command may take.

    Returns:
        The limiter.
    """
    item = parse(rate)  # fail at startup on a malformed rate
    storage = redis_url or "memory://"
    limiter = Limiter(
        key_func=rate_limit_key,
        default_limits=[rate],
        storage_uri=storage,
        storage_options=redis_client_options(redis_timeout) if redis_url else {},
        strategy="fixed-window",
        headers_enabled=False,
        key_prefix="bi:ratelimit",
        in_memory_fallback=[rate] if redis_url else [],
    )
    limiter.bi_rate = item  # type: ignore[attr-defined]
    limiter.bi_fallback = FixedWindowRateLimiter(MemoryStorage())  # type: ignore[attr-defined]
    limiter.bi_redis = (  # type: ignore[attr-defined]
        RedisWindowCounter(redis_url, breaker or CircuitBreaker("redis rate limit"), redis_timeout)
        if redis_url
        else None
    )
    logger.info("rate limit %s per key, storage %s", rate, "redis" if redis_url else "memory")
    return limiter


def check_rate_limit(limiter: Limiter, request: Request, scope: str = SHARED_SCOPE) -> None:
    """Count this request against its key's budget in ``scope``; raise
    :class:`RateLimitExceeded` when the budget is spent. Sets
    ``request.state.view_rate_limit`` as slowapi does (the 429 handler reads it)."""
    if not limiter.enabled:
        return
    item: RateLimitItem = limiter.bi_rate  # type: ignore[attr-defined]
    args = ["bi:ratelimit", rate_limit_key(request), scope]
    request.state.view_rate_limit = (item, args)
    try:
        allowed = limiter.limiter.hit(item, *args)
    except Exception as exc:  # the storage (Redis) is unreachable: count in this process
        logger.warning("rate-limit storage failed (%s); counting in memory", type(exc).__name__)
        allowed = limiter.bi_fallback.hit(item, *args)  # type: ignore[attr-defined]
    if not allowed:
        raise RateLimitExceeded(next(iter(limiter._default_limits[0])))


async def check_rate_limit_async(
    limiter: Limiter, request: Request, scope: str = SHARED_SCOPE
) -> None:
    """:func:`check_rate_limit` for the event loop: never a blocking Redis call.

    With Redis (``limiter.bi_redis``) the count is one async round trip bounded by the
    Redis timeout and skipped while the circuit breaker is open; then, and on any Redis
    failure, the request is counted in this process's memory (``limiter.bi_fallback``).
    Without Redis the in-memory count is made directly. Sets
    ``request.state.view_rate_limit`` (and, from Redis, ``request.state.bi_retry_after``:
    seconds until the window resets) for the 429 handler.

    Args:
        limiter: A limiter of :func:`make_limiter`.
        request: The request to count.
        scope: The budget shared by the routes that count in it.

    Raises:
        RateLimitExceeded: The budget is spent.
    """
    if not limiter.enabled:
        return
    item: RateLimitItem = limiter.bi_rate  # type: ignore[attr-defined]
    args = ["bi:ratelimit", rate_limit_key(request), scope]
    request.state.view_rate_limit = (item, args)
    counter: RedisWindowCounter | None = getattr(limiter, "bi_redis", None)
    if counter is None:
        allowed = limiter.limiter.hit(item, *args)  # memory: no I/O
    else:
        answer = await counter.hit(item, args)
        if answer is None:
            allowed = limiter.bi_fallback.hit(item, *args)  # type: ignore[attr-defined]
        else:
            allowed, request.state.bi_retry_after = answer
    if not allowed:
        raise RateLimitExceeded(next(iter(limiter._default_limits[0])))


def _memory_retry_after(limiter: Any, item: RateLimitItem, args: list[str]) -> int | None:
    """Seconds until the in-memory fallback window of ``args`` resets (``None``:
    unknown)."""
    fallback = getattr(limiter, "bi_fallback", None)
    if fallback is None:
        return None
    try:
        reset = fallback.get_window_stats(item, *args).reset_time
    except Exception:
        return None
    remaining = reset - time.time()
    return max(1, math.ceil(remaining)) if remaining > 0 else None


async def rate_limit_exceeded_handler_async(request: Request, exc: Exception) -> JSONResponse:
    """:func:`rate_limit_exceeded_handler` for the API: ``Retry-After`` from the count's
    answer (Redis), else from the in-memory window, else the window's length -- no Redis
    call.

    Args:
        request: The refused request.
        exc: The :class:`RateLimitExceeded`.

    Returns:
        The 429 response.
    """
    seconds = getattr(request.state, "bi_retry_after", None)
    view = getattr(request.state, "view_rate_limit", None)
    limiter = getattr(request.app.state, "limiter", None)
    if seconds is None and view:
        item, args = view
        if limiter is not None and getattr(limiter, "bi_redis", None) is None:
            seconds = retry_after_seconds(limiter, view)  # memory storage: no I/O
        else:
            seconds = _memory_retry_after(limiter, item, args) or max(1, int(item.get_expiry()))
    limit = getattr(exc, "detail", None) or "rate limit"
    logger.info("rate limit exceeded for %s", rate_limit_key(request))
    return JSONResponse(
        {"detail": f"rate limit exceeded: {limit}"},
        status_code=429,
        headers={"Retry-After": str(seconds or 1)},
    )


def retry_after_seconds(limiter: Limiter | None, view_rate_limit: Any) -> int:
    """Whole seconds until the window of ``view_rate_limit`` (``(item, args)``) resets;
    at least 1."""
    if not view_rate_limit:
        return 1
    item, args = view_rate_limit
    if limiter is not None:
        try:
            reset = limiter.limiter.get_window_stats(item, *args).reset_time
            return max(1, math.ceil(reset - time.time()))
        except Exception:
            logger.warning("could not read the rate-limit window; using its length")
    return max(1, int(item.get_expiry()))


def rate_limit_exceeded_handler(request: Request, exc: Exception) -> JSONResponse:
    """429 ``{"detail": "rate limit exceeded: <limit>"}`` with ``Retry-After`` seconds."""
    limiter = getattr(request.app.state, "limiter", None)
    view = getattr(request.state, "view_rate_limit", None)
    seconds = retry_after_seconds(limiter, view)
    limit = getattr(exc, "detail", None) or "rate limit"
    logger.info("rate limit exceeded for %s", rate_limit_key(request))
    return JSONResponse(
        {"detail": f"rate limit exceeded: {limit}"},
        status_code=429,
        headers={"Retry-After": str(seconds)},
    )
