"""The BI query API: the retail query battery over the DuckDB warehouse, over HTTP.

``GET /api/v1/queries`` lists the catalog (typed parameters); ``GET /api/v1/queries/{name}``
runs one query with validated parameters and answers JSON (default), an Arrow IPC stream
(``Accept: application/vnd.apache.arrow.stream`` or ``?format=arrow``) or CSV (``text/csv``
or ``?format=csv``; text cells neutralised against spreadsheet formulas). The Accept
header is negotiated with its q-values (``q=0``: not acceptable; nothing acceptable: 406;
``format=`` overrides it). ``/healthz``, ``/readyz`` and ``/metrics`` (GET and HEAD) need
no key, nor do ``/openapi.json`` (OpenAPI 3.1 generated from the catalog,
:mod:`~bi_platform.serving.openapi`), ``/docs`` and the dashboard page ``/`` (also
``/dashboard``), self-contained pages that call the API with a key the user types
(:mod:`~bi_platform.serving.pages`). Clients never send SQL: a query is a catalog name
plus parameters that :func:`~bi_platform.serving.queries.resolve` validates and types.
Every 4xx is ``{"detail", "param"}`` naming the parameter or header at fault.

Per request: authenticate (``X-API-Key`` or ``Authorization: Bearer``; 401), count it
against the key's rate limit (429 + ``Retry-After``), put every query-string value and the
key's segments in their canonical form (:func:`~bi_platform.serving.text.canonical_text`:
Unicode NFC, trimmed -- the NFC and NFD spellings of a segment are one segment, one
result and one cache entry), intersect the key's segments with the requested
``segments`` (403 outside them), then look the result up in the cache under
``cache_key(name, params + format, data_version, effective segments)``. A miss runs the
query on a pooled read-only connection in the threadpool and stores the *serialized* body;
a hit returns those bytes as they are (the JSON envelope's ``cached`` flag is spliced in,
nothing is re-serialized). The key includes the warehouse ``data_version``, so a rebuilt
warehouse is never served from the old entries. A key restricted to some segments that
calls a single-segment query without ``segmento`` gets its own first segment (in catalog
order) when the query's default segment is not one of its own.

Redis (cache and rate limits) never blocks the event loop: the limiter counts with
``redis.asyncio`` and the cache runs in the threadpool, every command bounded by
``redis_timeout`` and both behind one circuit breaker (:mod:`~bi_platform.serving.breaker`)
that skips a hung or dead Redis -- the cache then serves from this process's memory and
the limiter counts there. ``/healthz`` and ``/metrics`` never touch Redis nor the
warehouse. On SIGTERM (:mod:`~bi_platform.serving.drain`) ``/readyz`` answers 503 and
every response says ``Connection: close``.
"""

import dataclasses
import datetime as dt
import json
import logging
import math
import re
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bi_platform.lib.safe_csv import csv_bytes
from bi_platform.retail.queries import ALL_SEGMENTS, CATALOG, BusinessQuery, QueryParameterError
from bi_platform.retail.schema import SEGMENTS
from bi_platform.serving.auth import ApiKey, ApiKeyStore
from bi_platform.serving.breaker import DEFAULT_COOLDOWN, DEFAULT_REDIS_TIMEOUT, CircuitBreaker
from bi_platform.serving.cache import QueryCache, cache_key, make_cache, ttl_for
from bi_platform.serving.drain import DrainState, with_connection_close
from bi_platform.serving.metrics import ServingMetrics
from bi_platform.serving.openapi import build_openapi
from bi_platform.serving.pages import page_response
from bi_platform.serving.pool import ConnectionPool, PoolClosedError, PoolTimeoutError
from bi_platform.serving.queries import UnknownQueryError, catalog, execute, resolve
from bi_platform.serving.ratelimit import (
    RateLimitExceeded,
    check_rate_limit_async,
    make_limiter,
    rate_limit_exceeded_handler_async,
)
from bi_platform.serving.text import canonical_text

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
FORMATS: dict[str, str] = {
    "json": "application/json",
    "arrow": ARROW_STREAM,
    "csv": "text/csv; charset=utf-8",
}
#: Query-string parameters of every query (not the query's own parameters).
RESERVED_PARAMS = ("format", "segments")
#: Input limits: longer/more is rejected before any validation or lookup.
MAX_QUERY_STRING = 4096
MAX_PARAMS = 32
MAX_VALUE_LENGTH = 256
MAX_SECRET_LENGTH = 512
_INT64 = 2**63
#: Seconds a SIGTERMed server waits for its connections to finish (``serving_drain_seconds``).
DEFAULT_DRAIN_SECONDS = 10.0


def optional_setting(settings: Any, name: str, default: float) -> float:
    """``settings.<name>`` as a float, or ``default`` when the settings have no such field
    (or it is ``None``): serving options that ``bi_platform.settings`` may not declare.

    Args:
        settings: The platform settings (any object).
        name: The field, e.g. ``"serving_drain_seconds"``.
        default: The value when the field is missing or ``None``.

    Returns:
        The value; ``default`` too when it is not a positive finite number (logged).
    """
    value = getattr(settings, name, None)
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        logger.warning("setting %s=%r is not a positive number; using %s", name, value, default)
        return default
    return number


def serving_drain_seconds(settings: Any) -> float:
    """Seconds a SIGTERMed server drains (``SERVING_DRAIN_SECONDS``, default
    :data:`DEFAULT_DRAIN_SECONDS`).

    Args:
        settings: The platform settings.

    Returns:
        The drain timeout in seconds.
    """
    return optional_setting(settings, "serving_drain_seconds", DEFAULT_DRAIN_SECONDS)


@dataclass(frozen=True)
class ServingConfig:
    """What one API process serves and how (see the ``serving_*`` settings)."""

    warehouse_path: Path
    pool_size: int = 8
    pool_timeout: float = 5.0
    duckdb_threads: int | None = None
    auth: bool = True
    api_keys_file: Path | None = None
    rate_limit: str = "100/minute"
    cache: bool = True
    redis_url: str | None = None
    #: Seconds one Redis command may take (cache and rate limiter).
    redis_timeout: float = DEFAULT_REDIS_TIMEOUT
    #: Seconds the Redis circuit breaker stays open before a probe.
    redis_breaker_cooldown: float = DEFAULT_COOLDOWN
    #: Seconds a SIGTERMed server waits for its connections (then exits 0).
    drain_seconds: float = DEFAULT_DRAIN_SECONDS

    @classmethod
    def from_settings(cls, settings: Any) -> "ServingConfig":
        """The config of the ``serving_*`` settings (and ``redis_url``); the optional
        ``serving_drain_seconds``, ``serving_redis_timeout`` and
        ``serving_redis_breaker_cooldown`` fall back to their defaults when the settings
        do not declare them.

        Args:
            settings: The platform settings.

        Returns:
            The config.
        """
        return cls(
            warehouse_path=Path(settings.warehouse_path),
            pool_size=settings.serving_pool_size,
            pool_timeout=settings.serving_pool_timeout,
            duckdb_threads=settings.serving_duckdb_threads,
            auth=settings.serving_auth,
            api_keys_file=Path(settings.api_keys_file),
            rate_limit=settings.serving_rate_limit,
            cache=settings.serving_cache,
            redis_url=settings.redis_url,
            redis_timeout=optional_setting(
                settings, "serving_redis_timeout", DEFAULT_REDIS_TIMEOUT
            ),
            redis_breaker_cooldown=optional_setting(
                settings, "serving_redis_breaker_cooldown", DEFAULT_COOLDOWN
            ),
            drain_seconds=serving_drain_seconds(settings),
        )

    def to_json(self) -> str:
        """The config as JSON (for worker processes; holds no secret)."""
        data = dataclasses.asdict(self)
        for name in ("warehouse_path", "api_keys_file"):
            data[name] = None if data[name] is None else str(data[name])
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> "ServingConfig":
        data = json.loads(text)
        for name in ("warehouse_path", "api_keys_file"):
            if data.get(name) is not None:
                data[name] = Path(data[name])
        return cls(**data)


class ClientError(Exception):
    """A 4xx answer for bad client input (never logged with secrets)."""

    def __init__(self, status: int, detail: str, param: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.param = param


class ApiError(HTTPException):
    """An HTTP error raised from a dependency, answered ``{"detail", "param"}``."""

    def __init__(
        self,
        status: int,
        detail: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, detail, headers=headers)
        self.param = param


class _VersionChangedError(Exception):
    """The warehouse was swapped between the cache lookup and the query."""


@dataclass(frozen=True)
class _Request:
    name: str
    params: dict[str, Any]
    segments: tuple[str, ...] | None
    fmt: str


# --------------------------------------------------------------------------------------
# Serialization (done once per cache miss)
# --------------------------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _finite(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Float columns with NaN/inf as null (JSON has no NaN)."""
    if pa.types.is_floating(column.type):
        return pc.if_else(pc.is_finite(column), column, pa.scalar(None, column.type))
    return column


def json_payload(table: pa.Table, data_version: str) -> bytes:
    """The cached part of the JSON body: ``"data_version":..,"columns":..,"rows":..}``
    (the envelope's head, with ``query`` and ``cached``, is prepended per response)."""
    columns = [_finite(table.column(i)).to_pylist() for i in range(table.num_columns)]
    body = {
        "data_version": data_version,
        "columns": table.schema.names,
        "types": [str(f.type) for f in table.schema],
        "row_count": table.num_rows,
        "rows": [list(row) for row in zip(*columns, strict=True)],
    }
    text = json.dumps(
        body, default=_json_default, ensure_ascii=False, allow_nan=False, separators=(",", ":")
    )
    return text[1:].encode()


def _json_head(name: str, hit: bool) -> bytes:
    return (
        b'{"query":'
        + json.dumps(name).encode()
        + (b',"cached":true,' if hit else b',"cached":false,')
    )


def arrow_payload(table: pa.Table, name: str, data_version: str) -> bytes:
    """The result as an Arrow IPC stream; schema metadata names the query and version."""
    table = table.replace_schema_metadata(
        {
            **(table.schema.metadata or {}),
            b"query": name.encode(),
            b"data_version": data_version.encode(),
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def csv_payload(table: pa.Table) -> bytes:
    """The result as CSV, text cells and header names neutralised (see lib.safe_csv)."""
    return csv_bytes(table)


# --------------------------------------------------------------------------------------
# Request parsing
# --------------------------------------------------------------------------------------
def _split_segments(values: list[str]) -> tuple[str, ...]:
    """The known segments named in comma-separated ``values`` (canonical, case-insensitive),
    in their :data:`SEGMENTS` spelling."""
    wanted: set[str] = set()
    for value in values:
        for part in value.split(","):
            segment = canonical_text(part)
            if not segment:
                raise ClientError(422, "segments: empty segment name", "segments")
            match = next((s for s in SEGMENTS if s.casefold() == segment.casefold()), None)
            if match is None:
                raise ClientError(422, "segments: unknown segment", "segments")
            wanted.add(match)
    return tuple(sorted(wanted))


_TOKEN = r"[!#$%&'*+.^_`|~0-9a-z-]+"
_MEDIA_RANGE = re.compile(rf"({_TOKEN})/({_TOKEN})")
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
#: Negotiated formats of recent Accept headers (few distinct values in practice).
_ACCEPT_CACHE: dict[str, str | None] = {}
_ACCEPT_CACHE_SIZE = 512


def parse_accept(header: str) -> list[tuple[str, str, float, int]]:
    """The media ranges of an Accept header as ``(type, subtype, q, position)``, lower
    case. Malformed ranges and ranges with a malformed q-value are left out (so a header
    of garbage accepts anything, as no header does).

    Args:
        header: The Accept header's value.

    Returns:
        The valid ranges in header order.
    """
    ranges: list[tuple[str, str, float, int]] = []
    for position, part in enumerate(header.lower().split(",")):
        fields = [field.strip() for field in part.split(";")]
        match = _MEDIA_RANGE.fullmatch(fields[0])
        if match is None or (match.group(1) == "*" and match.group(2) != "*"):
            continue
        q: float | None = 1.0
        for field in fields[1:]:
            name, _, value = field.partition("=")
            if name.strip() == "q":
                value = value.strip()
                q = float(value) if _QVALUE.fullmatch(value) else None
                break  # what follows q are accept-extensions
        if q is not None:
            ranges.append((match.group(1), match.group(2), q, position))
    return ranges


def negotiate_accept(accept: str) -> str | None:
    """The format to answer an Accept header with, or ``None`` when none is acceptable.

    Each format's quality is that of the most specific range matching its media type
    (``type/subtype`` over ``type/*`` over ``*/*``; ``q=0``: not acceptable). The highest
    quality wins; ties go to an explicitly named type over a wildcard, then to the range
    the client listed first, then to JSON, Arrow, CSV in that order. No header (or no
    valid range): JSON.

    Args:
        accept: The Accept header's value (may be empty).

    Returns:
        ``"json"``, ``"arrow"``, ``"csv"`` or ``None``.
    """
    cached = _ACCEPT_CACHE.get(accept, "")
    if cached != "":
        return cached
    ranges = parse_accept(accept)
    chosen: str | None = "json"
    if ranges:
        candidates: list[tuple[float, int, int, int, str]] = []
        for order, (fmt, media) in enumerate(FORMATS.items()):
            kind, sub = media.split(";")[0].strip().split("/")
            best: tuple[int, float, int] | None = None  # specificity, q, position
            for rtype, rsub, q, position in ranges:
                if (rtype, rsub) == (kind, sub):
                    specificity = 2
                elif rtype == kind and rsub == "*":
                    specificity = 1
                elif (rtype, rsub) == ("*", "*"):
                    specificity = 0
                else:
                    continue
                if best is None or specificity > best[0]:
                    best = (specificity, q, position)
            if best is not None and best[1] > 0:
                candidates.append((best[1], best[0], -best[2], -order, fmt))
        chosen = max(candidates)[-1] if candidates else None
    if len(accept) <= 256:  # long headers are parsed each time, never kept
        if len(_ACCEPT_CACHE) >= _ACCEPT_CACHE_SIZE:
            _ACCEPT_CACHE.clear()
        _ACCEPT_CACHE[accept] = chosen
    return chosen


def _negotiate(explicit: str | None, accept: str) -> str:
    if explicit is not None:
        fmt = explicit.strip().lower()
        if fmt not in FORMATS:
            raise ClientError(422, f"format: must be one of {', '.join(FORMATS)}", "format")
        return fmt
    fmt = negotiate_accept(accept)
    if fmt is None:
        media = ", ".join(m.split(";")[0] for m in FORMATS.values())
        raise ClientError(
            406,
            f"Accept: none of {media} is acceptable; accept one of them or use format=",
            "Accept",
        )
    return fmt


_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


def _check_numbers(query: BusinessQuery, raw: dict[str, str]) -> None:
    """Refuse numeric parameters not written as the API reads them, saying exactly why.

    Integers are plain ASCII digits with an optional sign: ``1e3`` and ``5.0`` are
    refused even though they are whole numbers (one spelling per value; the message
    gives the digits to write), as are fractional, non-finite and non-numeric values.
    Numbers are ASCII decimals with an optional exponent (``0.25``, ``2.5e-1``)."""
    for param in query.params:
        text = raw.get(param.name)
        if text is None or param.type not in (int, float):
            continue
        name = param.name
        if param.type is int:
            if _INT_TEXT.fullmatch(text):
                continue
            if _FLOAT_TEXT.fullmatch(text):
                value = float(text)
                if not math.isfinite(value):
                    reason = "expected an integer, got a number too large to represent"
                elif not value.is_integer():
                    reason = "expected an integer, got a number with a fractional part"
                else:
                    reason = (
                        "expected an integer in plain digits; exponent and decimal "
                        "notation (such as 1e3 or 5.0) are not accepted"
                    )
                    if abs(value) < 2**53:
                        reason += f": write {int(value)}"
            elif _NON_FINITE.fullmatch(text):
                reason = "expected an integer, got a non-finite value"
            else:
                reason = f"expected an integer in plain digits (e.g. {param.default})"
            raise ClientError(422, f"{name}: {reason}", name)
        if _FLOAT_TEXT.fullmatch(text):
            continue
        if _NON_FINITE.fullmatch(text):
            raise ClientError(422, f"{name}: must be a finite number", name)
        raise ClientError(
            422,
            f"{name}: expected a decimal number with an optional exponent (e.g. {param.default})",
            name,
        )


def _default_segment(
    query: BusinessQuery, raw: dict[str, str], params: dict[str, Any], allowed: tuple[str, ...]
) -> None:
    """A restricted caller who did not choose ``segmento`` gets, instead of a default
    segment outside its segments (an empty result), its first segment in catalog order."""
    if "segmento" in raw:
        return
    param = next((p for p in query.params if p.name == "segmento"), None)
    current = params.get("segmento")
    if param is None or current == ALL_SEGMENTS or current in allowed:
        return
    own = [choice for choice in param.choices or () if choice in allowed]
    if own:
        params["segmento"] = own[0]


def parse_request(name: str, request: Request, key_segments: tuple[str, ...] | None) -> _Request:
    """Validate everything the client sent; raise :class:`ClientError` (4xx) otherwise.

    Every value and ``key_segments`` are taken in their canonical form (NFC, trimmed)
    before validation and the row-level-security intersection, so the returned
    parameters and segments -- and the cache key made of them -- do not depend on the
    spelling."""
    if key_segments is not None:
        key_segments = tuple(sorted({canonical_text(s) for s in key_segments}))
    if len(name) > 128 or name not in CATALOG:
        raise ClientError(404, "unknown query (see GET /api/v1/queries)", "name")
    if len(request.scope.get("query_string", b"")) > MAX_QUERY_STRING:
        raise ClientError(400, f"query string longer than {MAX_QUERY_STRING} bytes", "query_string")
    items = request.query_params.multi_items()
    if len(items) > MAX_PARAMS:
        raise ClientError(400, f"more than {MAX_PARAMS} query parameters", "query_string")
    raw: dict[str, str] = {}
    segment_values: list[str] = []
    fmt_value: str | None = None
    for key, value in items:
        shown = key if len(key) <= 64 and key.isprintable() else "<invalid name>"
        if len(key) > 64 or len(value) > MAX_VALUE_LENGTH:
            raise ClientError(422, f"{shown}: longer than {MAX_VALUE_LENGTH} characters", shown)
        if "\x00" in value:
            raise ClientError(422, f"{shown}: control characters are not allowed", shown)
        value = canonical_text(value)
        if key == "segments":
            segment_values.append(value)
            continue
        if key in raw or (key == "format" and fmt_value is not None):
            raise ClientError(422, f"{shown}: given more than once", shown)
        if key == "format":
            fmt_value = value
        else:
            raw[key] = value
    fmt = _negotiate(fmt_value, request.headers.get("accept", ""))
    query = CATALOG[name]
    _check_numbers(query, raw)
    try:
        _, params = resolve(name, raw)
    except UnknownQueryError:
        raise ClientError(404, "unknown query (see GET /api/v1/queries)", "name") from None
    except QueryParameterError as exc:
        param = exc.param if exc.param in raw else "<invalid name>"
        reason = exc.reason if len(exc.reason) <= 300 else exc.reason[:300] + "..."
        raise ClientError(422, f"{param}: {reason}", param) from None
    for key, value in params.items():
        if isinstance(value, int) and not -_INT64 <= value < _INT64:
            raise ClientError(422, f"{key}: out of the 64-bit integer range", key)
    requested = _split_segments(segment_values) if segment_values else None
    # row-level security: the key's segments AND the requested ones
    if key_segments is None:
        effective = requested
    elif requested is None:
        effective = key_segments
    else:
        if not set(requested) <= set(key_segments):
            raise ClientError(
                403, "segments: outside the segments this API key may read", "segments"
            )
        effective = requested
    if effective is not None:
        _default_segment(query, raw, params, effective)
    chosen = raw.get("segmento")
    segmento = params.get("segmento")
    if (
        chosen is not None
        and effective is not None
        and segmento != ALL_SEGMENTS
        and segmento not in effective
    ):
        raise ClientError(403, "segmento: outside the segments this API key may read", "segmento")
    return _Request(name, params, effective, fmt)


def _error(status: int, detail: str, param: str | None = None, **headers: str) -> JSONResponse:
    content: dict[str, Any] = {"detail": detail}
    if param is not None:
        content["param"] = param
    return JSONResponse(content, status_code=status, headers=headers or None)


# --------------------------------------------------------------------------------------
# Metrics middleware (pure ASGI: no per-request task, no body buffering)
# --------------------------------------------------------------------------------------
def route_label(path: str) -> str:
    """The ``query`` label of a request path (bounded: catalog names or fixed words)."""
    prefix = API_PREFIX + "/queries"
    if path.startswith(prefix + "/"):
        name = path[len(prefix) + 1 :]
        return name if name in CATALOG else "unknown"
    return {
        prefix: "catalog",
        "/healthz": "healthz",
        "/readyz": "readyz",
        "/metrics": "metrics",
        "/openapi.json": "openapi",
        "/docs": "docs",
        "/": "dashboard",
        "/dashboard": "dashboard",
    }.get(path, "other")


class MetricsMiddleware:
    """Counts every HTTP request by route label and status (and status class) and
    observes its latency; tracks the requests in flight. Once ``drain`` is draining,
    adds ``Connection: close`` to every response (one middleware for both: one layer
    less on the hot path)."""

    def __init__(
        self, app: ASGIApp, metrics: ServingMetrics, drain: DrainState | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.drain = drain if drain is not None else DrainState()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        label = route_label(scope["path"])
        status = 500
        drain = self.drain

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if drain.draining:
                    message = with_connection_close(message)
            await send(message)

        metrics = self.metrics
        metrics.in_flight.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics.in_flight.dec()
            metrics.record_response(label, status, time.perf_counter() - started)


# --------------------------------------------------------------------------------------
# The application
# --------------------------------------------------------------------------------------
def create_app(config: ServingConfig | None = None, *, drain: DrainState | None = None) -> FastAPI:
    """The API over ``config``: one pool, cache, key store, rate limiter, Redis circuit
    breaker and metrics registry per app (i.e. per worker process).

    Args:
        config: What to serve; default: from the settings.
        drain: The drain state the app follows (``/readyz`` 503 and ``Connection: close``
            once draining); default: a state of its own that never drains (the server of
            :mod:`bi_platform.serving.server` passes the process's).

    Returns:
        The FastAPI app.
    """
    if config is None:
        from bi_platform.settings import get_settings

        config = ServingConfig.from_settings(get_settings())
    if config.auth and config.api_keys_file is None:
        raise ValueError("serving: auth is on but no api_keys_file is configured")
    drain = drain if drain is not None else DrainState()
    pool = ConnectionPool(
        config.warehouse_path,
        size=config.pool_size,
        threads=config.duckdb_threads,
        timeout=config.pool_timeout,
    )
    metrics = ServingMetrics()
    breaker = CircuitBreaker(
        "redis", cooldown=config.redis_breaker_cooldown, on_change=metrics.set_redis_breaker
    )
    cache: QueryCache = make_cache(
        enabled=config.cache,
        redis_url=config.redis_url,
        breaker=breaker,
        redis_timeout=config.redis_timeout,
    )
    store = ApiKeyStore(config.api_keys_file) if config.auth else None
    limiter = make_limiter(
        rate=config.rate_limit,
        redis_url=config.redis_url,
        breaker=breaker,
        redis_timeout=config.redis_timeout,
    )
    catalog_body = json.dumps(
        {
            "queries": catalog(),
            "segments": list(SEGMENTS),
            "formats": list(FORMATS),
            "reserved_params": {
                "format": "json (default), arrow or csv; or use the Accept header",
                "segments": "comma-separated NOMESEGMENTO values (within the key's segments)",
            },
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()
    json_heads = {(name, hit): _json_head(name, hit) for name in CATALOG for hit in (False, True)}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        logger.info(
            "serving API: warehouse %s, pool %d, auth %s, rate %s, cache %s",
            config.warehouse_path,
            config.pool_size,
            "on" if config.auth else "off",
            config.rate_limit,
            type(cache).__name__,
        )
        try:
            yield
        finally:
            pool.close()
            cache.close()
            counter = getattr(limiter, "bi_redis", None)
            if counter is not None:
                await counter.aclose()

    app = FastAPI(
        title="bi_platform query API",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.config = config
    app.state.pool = pool
    app.state.cache = cache
    app.state.metrics = metrics
    app.state.limiter = limiter
    app.state.api_keys = store
    app.state.redis_breaker = breaker
    app.state.drain = drain
    app.add_exception_handler(RateLimitExceeded, rate_limit_exceeded_handler_async)

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error(exc.status_code, str(exc.detail), exc.param, **(exc.headers or {}))

    app.add_exception_handler(ApiError, api_error)
    app.add_middleware(MetricsMiddleware, metrics=metrics, drain=drain)

    async def authenticate(request: Request) -> ApiKey | None:
        """The caller's key (401 naming the header otherwise), then one hit on its rate
        limit (429); the count never blocks the loop (see :func:`check_rate_limit_async`)."""
        key: ApiKey | None = None
        if store is not None:
            header = "X-API-Key"
            secret = request.headers.get("x-api-key")
            if secret is None:
                scheme, _, token = request.headers.get("authorization", "").partition(" ")
                if scheme.lower() == "bearer":
                    header, secret = "Authorization", token.strip()
            challenge = {"WWW-Authenticate": "Bearer"}
            if not secret:
                raise ApiError(
                    401,
                    "missing API key (X-API-Key or Authorization: Bearer)",
                    header,
                    challenge,
                )
            key = store.verify(secret) if len(secret) <= MAX_SECRET_LENGTH else None
            if key is None:
                raise ApiError(401, "invalid or revoked API key", header, challenge)
            request.state.api_key = key
        try:
            await check_rate_limit_async(limiter, request)
        except RateLimitExceeded:
            raise
        except Exception as exc:  # any other limiter failure: fail open, loudly
            logger.warning("rate limit check failed, request not counted: %s", exc)
        return key

    def lookup(req: _Request) -> tuple[bytes, bool, str]:
        """``(body, hit, data_version)``; runs in the threadpool (blocking I/O)."""
        ttl = ttl_for(req.name)
        for _attempt in range(3):
            version = pool.data_version()
            metrics.set_data_version(version)
            key = cache_key(req.name, {**req.params, "_format": req.fmt}, version, req.segments)

            def compute(version: str = version) -> bytes:
                result = execute(
                    pool, req.name, req.params, segments=req.segments, timeout=config.pool_timeout
                )
                metrics.observe_pool_wait(result.wait_seconds)
                if result.data_version != version:
                    raise _VersionChangedError(result.data_version)
                if req.fmt == "arrow":
                    return arrow_payload(result.table, req.name, version)
                if req.fmt == "csv":
                    return csv_payload(result.table)
                return json_payload(result.table, version)

            try:
                body, hit = cache.get_or_compute(key, ttl, compute)
            except _VersionChangedError:
                continue
            return body, hit, version
        raise PoolTimeoutError("the warehouse keeps changing; retry")

    ops = ["GET", "HEAD"]

    @app.api_route("/healthz", methods=ops)
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.api_route("/readyz", methods=ops)
    async def readyz() -> Response:
        if drain.draining:
            return _error(503, "draining", **{"Retry-After": "5"})
        try:
            version = await run_in_threadpool(pool.data_version)
        except (OSError, duckdb.Error, PoolClosedError, RuntimeError) as exc:
            logger.warning("readyz: warehouse not readable: %s", exc)
            return _error(503, "warehouse not available")
        metrics.set_data_version(version)
        return JSONResponse({"status": "ready", "data_version": version})

    @app.api_route("/metrics", methods=ops)
    async def metrics_endpoint() -> Response:
        payload, content_type = metrics.render()
        return Response(payload, media_type=content_type)

    openapi_lock = threading.Lock()
    openapi_bodies: dict[str | None, bytes] = {}

    def openapi_document() -> bytes:
        """The OpenAPI JSON, with the result schemas of the warehouse being served
        (each query run once with no segment: no row); without those it could not read
        (warehouse missing, pool busy for a second). Built once per data_version when
        complete (threadpool)."""
        try:
            version: str | None = pool.data_version()
        except (OSError, duckdb.Error, PoolClosedError, RuntimeError) as exc:
            logger.warning("openapi: warehouse not readable, no result schemas: %s", exc)
            version = None
        with openapi_lock:
            body = openapi_bodies.get(version)
            if body is not None:
                return body
            schemas: dict[str, pa.Schema] = {}
            complete = version is not None
            if version is not None:
                for name in CATALOG:
                    try:  # a busy pool is not waited for long: the next call retries
                        result = execute(
                            pool, name, {}, segments=[], timeout=min(1.0, config.pool_timeout)
                        )
                    except (OSError, duckdb.Error, PoolClosedError, PoolTimeoutError) as exc:
                        logger.warning("openapi: no result schema for %s: %s", name, exc)
                        complete = False
                        continue
                    schemas[name] = result.table.schema
            document = build_openapi(
                formats=FORMATS,
                segments=SEGMENTS,
                auth=config.auth,
                max_value_length=MAX_VALUE_LENGTH,
                result_schemas=schemas,
                data_version=version,
            )
            body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
            if complete:
                openapi_bodies.clear()
                openapi_bodies[version] = body
            return body

    @app.get("/openapi.json")
    async def openapi_endpoint() -> Response:
        body = await run_in_threadpool(openapi_document)
        return Response(body, media_type="application/json")

    @app.api_route("/docs", methods=ops)
    async def docs_page() -> Response:
        return page_response("docs.html")

    @app.api_route("/", methods=ops)
    async def dashboard_root() -> Response:
        return page_response("dashboard.html")

    @app.api_route("/dashboard", methods=ops)
    async def dashboard_page() -> Response:
        return page_response("dashboard.html")

    @app.get(API_PREFIX + "/queries")
    async def list_queries(_key: Annotated[ApiKey | None, Depends(authenticate)]) -> Response:
        return Response(catalog_body, media_type="application/json")

    @app.get(API_PREFIX + "/queries/{name}")
    async def run_endpoint(
        name: str, request: Request, key: Annotated[ApiKey | None, Depends(authenticate)]
    ) -> Response:
        try:
            req = parse_request(name, request, key.segments if key is not None else None)
        except ClientError as exc:
            return _error(exc.status, exc.detail, exc.param)
        fast = fast_hit(req)
        if fast is not None:
            body, version = fast
            return respond(req, body, True, version)
        try:
            body, hit, version = await run_in_threadpool(lookup, req)
        except PoolTimeoutError:
            logger.warning("query %s: no free warehouse connection", req.name)
            return _error(503, "warehouse busy, retry", **{"Retry-After": "1"})
        except (FileNotFoundError, PoolClosedError, duckdb.IOException) as exc:
            logger.warning("query %s: warehouse not available: %s", req.name, exc)
            return _error(503, "warehouse not available", **{"Retry-After": "5"})
        return respond(req, body, hit, version)

    def respond(req: _Request, body: bytes, hit: bool, version: str) -> Response:
        metrics.record_cache(req.name, hit)
        headers = {
            "X-Cache": "HIT" if hit else "MISS",
            "X-Data-Version": version,
            "Vary": "Accept",
        }
        if req.fmt == "json":
            body = json_heads[(req.name, hit)] + body
        elif req.fmt == "csv":
            headers["Content-Disposition"] = f'attachment; filename="{req.name}.csv"'
        return Response(body, media_type=FORMATS[req.fmt], headers=headers)

    peek = getattr(cache, "peek", None)  # hits without I/O (in process; Redis stand-in)

    def fast_hit(req: _Request) -> tuple[bytes, str] | None:
        """``(body, data_version)`` of a cache hit served on the event loop (no threadpool
        hop): the warehouse version read lock-free, the in-process cache peeked (with
        Redis: its in-process stand-in, only while the breaker is open). ``None`` (a
        miss, Redis, a warehouse not open yet or just swapped): take :func:`lookup`."""
        if peek is None:
            return None
        version = pool.current_data_version()
        if version is None:
            return None
        body = peek(cache_key(req.name, {**req.params, "_format": req.fmt}, version, req.segments))
        if body is None:
            return None
        metrics.set_data_version(version)
        return body, version

    return app


__all__ = [
    "DEFAULT_DRAIN_SECONDS",
    "FORMATS",
    "ApiError",
    "ClientError",
    "ServingConfig",
    "create_app",
    "json_payload",
    "negotiate_accept",
    "optional_setting",
    "parse_accept",
    "parse_request",
    "serving_drain_seconds",
]
