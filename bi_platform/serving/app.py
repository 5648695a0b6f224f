"""The BI query API: the retail query battery over the DuckDB warehouse, over HTTP.

``GET /api/v1/queries`` lists the catalog (typed parameters); ``GET /api/v1/queries/{name}``
runs one query with validated parameters and answers JSON (default), an Arrow IPC stream
(``Accept: application/vnd.apache.arrow.stream`` or ``?format=arrow``) or CSV (``text/csv``
or ``?format=csv``; text cells neutralised against spreadsheet formulas). ``/healthz``,
``/readyz`` and ``/metrics`` need no key. Clients never send SQL: a query is a catalog name
plus parameters that :func:`~bi_platform.serving.queries.resolve` validates and types.

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
warehouse is never served from the old entries.
"""

import dataclasses
import datetime as dt
import json
import logging
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

from bi_platform.etl.security import csv_bytes
from bi_platform.retail.queries import ALL_SEGMENTS, CATALOG, QueryParameterError
from bi_platform.retail.schema import SEGMENTS
from bi_platform.serving.auth import ApiKey, ApiKeyStore
from bi_platform.serving.cache import QueryCache, cache_key, make_cache, ttl_for
from bi_platform.serving.metrics import ServingMetrics
from bi_platform.serving.pool import ConnectionPool, PoolClosedError, PoolTimeoutError
from bi_platform.serving.queries import UnknownQueryError, catalog, execute, resolve
from bi_platform.serving.ratelimit import (
    RateLimitExceeded,
    check_rate_limit,
    make_limiter,
    rate_limit_exceeded_handler,
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

    @classmethod
    def from_settings(cls, settings: Any) -> "ServingConfig":
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
    """The result as CSV, text cells and header names neutralised (see etl.security)."""
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


def _negotiate(explicit: str | None, accept: str) -> str:
    if explicit is not None:
        fmt = explicit.strip().lower()
        if fmt not in FORMATS:
            raise ClientError(422, f"format: must be one of {', '.join(FORMATS)}", "format")
        return fmt
    accept = accept.lower()
    if ARROW_STREAM in accept:
        return "arrow"
    if "text/csv" in accept:
        return "csv"
    return "json"


def parse_request(name: str, request: Request, key_segments: tuple[str, ...] | None) -> _Request:
    """Validate everything the client sent; raise :class:`ClientError` (4xx) otherwise.

    Every value and ``key_segments`` are taken in their canonical form (NFC, trimmed)
    before validation and the row-level-security intersection, so the returned
    parameters and segments -- and the cache key made of them -- do not depend on the
    spelling."""
    if key_segments is not None:
        key_segments = tuple(sorted({canonical_text(s) for s in key_segments}))
    if len(name) > 128 or name not in CATALOG:
        raise ClientError(404, "unknown query (see GET /api/v1/queries)")
    if len(request.scope.get("query_string", b"")) > MAX_QUERY_STRING:
        raise ClientError(400, f"query string longer than {MAX_QUERY_STRING} bytes")
    items = request.query_params.multi_items()
    if len(items) > MAX_PARAMS:
        raise ClientError(400, f"more than {MAX_PARAMS} query parameters")
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
    try:
        _, params = resolve(name, raw)
    except UnknownQueryError:
        raise ClientError(404, "unknown query (see GET /api/v1/queries)") from None
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
            raise ClientError(403, "segments: outside the segments this API key may read")
        effective = requested
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
    }.get(path, "other")


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        label = route_label(scope["path"])
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics = self.metrics
        metrics.in_flight.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics.in_flight.dec()
            metrics.latency.labels(query=label).observe(time.perf_counter() - started)
            metrics.requests.labels(query=label, status=str(status)).inc()


# --------------------------------------------------------------------------------------
# The application
# --------------------------------------------------------------------------------------
def create_app(config: ServingConfig | None = None) -> FastAPI:
    """The API over ``config`` (default: from the settings); one pool, cache, key store,
    rate limiter and metrics registry per app (i.e. per worker process)."""
    if config is None:
        from bi_platform.settings import get_settings

        config = ServingConfig.from_settings(get_settings())
    if config.auth and config.api_keys_file is None:
        raise ValueError("serving: auth is on but no api_keys_file is configured")
    pool = ConnectionPool(
        config.warehouse_path,
        size=config.pool_size,
        threads=config.duckdb_threads,
        timeout=config.pool_timeout,
    )
    cache: QueryCache = make_cache(enabled=config.cache, redis_url=config.redis_url)
    store = ApiKeyStore(config.api_keys_file) if config.auth else None
    limiter = make_limiter(rate=config.rate_limit, redis_url=config.redis_url)
    metrics = ServingMetrics()
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
    app.add_exception_handler(RateLimitExceeded, rate_limit_exceeded_handler)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    async def authenticate(request: Request) -> ApiKey | None:
        """The caller's key (401 otherwise), then one hit on its rate limit (429)."""
        key: ApiKey | None = None
        if store is not None:
            secret = request.headers.get("x-api-key")
            if secret is None:
                header = request.headers.get("authorization", "")
                scheme, _, token = header.partition(" ")
                if scheme.lower() == "bearer":
                    secret = token.strip()
            if not secret:
                raise HTTPException(
                    401,
                    "missing API key (X-API-Key or Authorization: Bearer)",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            key = store.verify(secret) if len(secret) <= MAX_SECRET_LENGTH else None
            if key is None:
                raise HTTPException(
                    401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"}
                )
            request.state.api_key = key
        try:
            check_rate_limit(limiter, request)
        except RateLimitExceeded:
            raise
        except Exception as exc:  # storage outage: fail open, loudly
            logger.warning("rate limit storage unavailable, request not counted: %s", exc)
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

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/readyz")
    async def readyz() -> Response:
        try:
            version = await run_in_threadpool(pool.data_version)
        except (OSError, duckdb.Error, PoolClosedError, RuntimeError) as exc:
            logger.warning("readyz: warehouse not readable: %s", exc)
            return _error(503, "warehouse not available")
        metrics.set_data_version(version)
        return JSONResponse({"status": "ready", "data_version": version})

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        payload, content_type = metrics.render()
        return Response(payload, media_type=content_type)

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
        headers = {"X-Cache": "HIT" if hit else "MISS", "X-Data-Version": version}
        if req.fmt == "json":
            body = json_heads[(req.name, hit)] + body
        elif req.fmt == "csv":
            headers["Content-Disposition"] = f'attachment; filename="{req.name}.csv"'
        return Response(body, media_type=FORMATS[req.fmt], headers=headers)

    peek = getattr(cache, "peek", None)  # the in-process cache: hits without I/O

    def fast_hit(req: _Request) -> tuple[bytes, str] | None:
        """``(body, data_version)`` of a cache hit served on the event loop (no threadpool
        hop): the warehouse version read lock-free, the in-process cache peeked. ``None``
        (a miss, Redis, a warehouse not open yet or just swapped): take :func:`lookup`."""
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
    "FORMATS",
    "ClientError",
    "ServingConfig",
    "create_app",
    "json_payload",
    "parse_request",
]
