"""Run the retail query battery against the DuckDB warehouse through the connection pool.

The queries are :data:`bi_platform.retail.queries.CATALOG`. Each runs as its
parameterised DuckDB statement over the warehouse's serving pre-aggregates
(:mod:`bi_platform.serving.sql`, tables ``srv_*``): a few milliseconds, where the
narwhals version scans the 1.1M-row ``admmat``. The narwhals battery
(``nw.from_native(connection.table("admmat"))``) remains the reference: the tests compare
both for every query over a range of parameters and segment restrictions
(:func:`execute_reference`), and it serves a warehouse built before the ``srv_*`` tables.

Parameters are validated and typed by
:func:`~bi_platform.retail.queries.validate_params` (unknown names, wrong types, values
outside the choices or range raise :class:`QueryParameterError`) after every text value
is put in its canonical form (:func:`~bi_platform.serving.text.canonical_text`: Unicode
NFC, trimmed), so the NFC and NFD spellings of a segment are the same value. Values reach
DuckDB as bound parameters (or, on the reference path, constant expressions built by
narwhals), never as SQL text. Clients name a query and pass parameters; they never send
SQL.

Row-level security: ``segments`` (the caller's allowed ``NOMESEGMENTO`` values, taken in
their canonical form; ``None`` means unrestricted) filter the source rows *before* every
query, as in :func:`~bi_platform.retail.queries.run_query` (every pre-aggregate keeps the
segment in its grain, and every statement filters by it before aggregating).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import narwhals as nw
import pyarrow as pa

from bi_platform.retail.queries import (
    CATALOG,
    BusinessQuery,
    QueryParameterError,
    prepare,
    validate_params,
)
from bi_platform.serving.pool import ConnectionPool
from bi_platform.serving.sql import run as run_sql
from bi_platform.serving.text import canonical_text
from bi_platform.serving.warehouse import SERVING_AGGREGATES

logger = logging.getLogger(__name__)

#: The warehouse table the battery reads.
SOURCE_TABLE = "admmat"
#: The pre-aggregates the SQL statements read.
SERVING_TABLES = frozenset(SERVING_AGGREGATES)

__all__ = [
    "QueryParameterError",
    "QueryResult",
    "UnknownQueryError",
    "catalog",
    "execute",
    "resolve",
    "run_query",
]


class UnknownQueryError(LookupError):
    """No query of that name in the catalog."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown query {name!r}; known: {', '.join(sorted(CATALOG))}")


@dataclass(frozen=True)
class QueryResult:
    """One query's result and how it was obtained."""

    query: str
    #: The validated, typed parameters (defaults filled in).
    params: dict[str, Any]
    table: pa.Table
    data_version: str
    #: Seconds waited for a pooled connection.
    wait_seconds: float
    #: Seconds from the lease to the collected result.
    seconds: float


def catalog() -> list[dict[str, Any]]:
    """The query battery as plain data: name, question, cache class and typed parameters."""
    return [
        {
            "name": q.name,
            "question": q.question,
            "description": q.description,
            "cache_class": q.cache_class,
            "params": [
                {
                    "name": p.name,
                    "type": p.type.__name__,
                    "default": p.default,
                    "description": p.description,
                    "choices": list(p.choices) if p.choices is not None else None,
                    "minimum": p.minimum,
                    "maximum": p.maximum,
                }
                for p in q.params
            ],
        }
        for q in CATALOG.values()
    ]


def resolve(name: str, params: Mapping[str, Any] | None = None) -> tuple[BusinessQuery, dict]:
    """The query called ``name`` and its validated parameters (text values in their
    canonical form first); raise :class:`UnknownQueryError` or
    :class:`QueryParameterError`."""
    if not isinstance(name, str) or name not in CATALOG:
        raise UnknownQueryError(str(name))
    query = CATALOG[name]
    canonical = {
        key: canonical_text(value) if isinstance(value, str) else value
        for key, value in (params or {}).items()
    }
    return query, validate_params(query, canonical)


def _check_segments(segments: Collection[str] | None) -> list[str] | None:
    if segments is None:
        return None
    if isinstance(segments, str | bytes) or not all(isinstance(s, str) for s in segments):
        raise TypeError(
            f"segments must be a collection of NOMESEGMENTO strings or None, got {segments!r}"
        )
    return sorted({canonical_text(s) for s in segments})


def execute(
    pool: ConnectionPool,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    segments: Collection[str] | None = None,
    timeout: float | None = None,
    reference: bool = False,
) -> QueryResult:
    """Run catalog query ``name`` on a pooled warehouse connection, restricted to
    ``segments`` (row-level security), and return its sorted result as Arrow.

    The query runs as its prepared SQL statement over the warehouse's serving
    pre-aggregates (:mod:`bi_platform.serving.sql`); with ``reference=True``, or on a
    warehouse without those tables, as the narwhals battery over ``admmat`` (the
    reference the SQL is tested against)."""
    query, values = resolve(name, params)
    allowed = _check_segments(segments)
    with pool.acquire(timeout) as lease:
        started = time.perf_counter()
        if not reference and lease.tables >= SERVING_TABLES:
            table = run_sql(lease.connection, query, values, allowed)
        else:  # the narwhals battery over admmat (a warehouse built before srv_* tables)
            source = nw.from_native(lease.connection.table(SOURCE_TABLE))
            lazy = prepare(query, source, values, segments=allowed)
            table = lazy.collect(backend="pyarrow").to_native()
        seconds = time.perf_counter() - started
    logger.debug(
        "query %s (%s) on warehouse %s: %d rows in %.3f s (waited %.3f s)",
        name,
        values,
        lease.data_version,
        table.num_rows,
        seconds,
        lease.wait_seconds,
    )
    return QueryResult(name, values, table, lease.data_version, lease.wait_seconds, seconds)


def run_query(
    pool: ConnectionPool,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    segments: Collection[str] | None = None,
    timeout: float | None = None,
) -> pa.Table:
    """:func:`execute`'s result table only."""
    return execute(pool, name, params, segments=segments, timeout=timeout).table


def execute_reference(
    pool: ConnectionPool,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    segments: Collection[str] | None = None,
    timeout: float | None = None,
) -> QueryResult:
    """:func:`execute` with the narwhals battery over ``admmat`` (the reference)."""
    return execute(pool, name, params, segments=segments, timeout=timeout, reference=True)
