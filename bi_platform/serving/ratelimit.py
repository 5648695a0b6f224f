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
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from slowapi.util import get_remote_address
from starlette.requests import Request
from starlette.responses import JSONResponse

logger = logging.getLogger(__name__)

__all__ = [
    "RateLimitExceeded",
    "check_rate_limit",
    "make_limiter",
    "rate_limit_exceeded_handler",
    "rate_limit_key",
    "retry_after_seconds",
]

#: The scope of the budget :func:`check_rate_limit` shares across routes.
SHARED_SCOPE = "api"


def rate_limit_key(request: Request) -> str:
    """``key:<key_id>`` for an authenticated request (``request.state.api_key``, an
    :class:`~bi_platform.serving.auth.ApiKey`), else ``addr:<client address>``."""
    api_key = getattr(request.state, "api_key", None)
    key_id = getattr(api_key, "key_id", None)
    if key_id:
        return f"key:{key_id}"
    return f"addr:{get_remote_address(request) or 'unknown'}"


def make_limiter(*, rate: str, redis_url: str | None) -> Limiter:
    """A slowapi limiter with ``rate`` as its default limit, keyed by
    :func:`rate_limit_key`, stored in Redis (``redis_url``) or in memory.

    Fixed windows (one counter per key and window: cheap in Redis). Response headers are
    off (they need every limited route to return a Response); the 429 handler sets
    ``Retry-After`` itself. ``limiter.bi_rate`` holds the parsed limit. With Redis, an
    unreachable server degrades to per-process in-memory counting (logged), never to
    errors: slowapi's ``in_memory_fallback`` for decorated routes, ``limiter.bi_fallback``
    for :func:`check_rate_limit`.
    """
    item = parse(rate)  # fail at startup on a malformed rate
    storage = redis_url or "memory://"
    limiter = Limiter(
        key_func=rate_limit_key,
        default_limits=[rate],
        storage_uri=storage,
        strategy="fixed-window",
        headers_enabled=False,
        key_prefix="bi:ratelimit",
        in_memory_fallback=[rate] if redis_url else [],
    )
    limiter.bi_rate = item  # type: ignore[attr-defined]
    limiter.bi_fallback = FixedWindowRateLimiter(MemoryStorage())  # type: ignore[attr-defined]
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
