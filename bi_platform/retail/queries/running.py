"""Scanning ``admmat`` with one engine and running a catalog query on it, behind the
row-level security restriction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import narwhals as nw
import polars as pl

from bi_platform.lib.warning_filters import narwhals_dask_quiet, silence_narwhals_dask_warning
from bi_platform.retail.queries.catalog import get_query
from bi_platform.retail.queries.definition import ENGINES, BusinessQuery, Engine, validate_params
from bi_platform.retail.schema import SEGMENTS

if TYPE_CHECKING:
    import duckdb

silence_narwhals_dask_warning()

logger = logging.getLogger(__name__)


def scan_admmat(
    path: str | Path,
    engine: Engine = "polars",
    columns: Sequence[str] | None = None,
    *,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> nw.LazyFrame:
    """Lazily scan the typed admmat Parquet (a file or a directory of files) with one engine.

    Only ``columns`` are read when given. DuckDB uses ``connection`` or a fresh in-memory
    one (kept alive by the relation).

    Args:
        path: The Parquet file or directory.
        engine: ``"polars"``, ``"dask"`` or ``"duckdb"``.
        columns: Columns to read (``None``: all).
        connection: DuckDB connection to scan with (``engine="duckdb"`` only).

    Returns:
        A narwhals LazyFrame backed by the engine.

    Raises:
        ValueError: Unknown engine.
    """
    source = Path(path)
    cols = list(columns) if columns is not None else None
    if engine == "polars":
        lf = pl.scan_parquet(source)
        return nw.from_native(lf.select(cols) if cols is not None else lf)
    if engine == "dask":
        import dask.dataframe as dd

        with narwhals_dask_quiet():  # pytest resets the module-level filter
            return nw.from_native(dd.read_parquet(str(source), columns=cols))
    if engine == "duckdb":
        import duckdb

        con = connection if connection is not None else duckdb.connect()
        pattern = str(source / "**" / "*.parquet") if source.is_dir() else str(source)
        rel = con.read_parquet(pattern)
        if cols is not None:
            rel = rel.select(*(duckdb.ColumnExpression(c) for c in cols))
        return nw.from_native(rel)
    raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")


def restrict_segments(source: nw.LazyFrame, segments: Collection[str] | None) -> nw.LazyFrame:
    """Row-level security: keep only rows whose NOMESEGMENTO is in ``segments``
    (``None``: no restriction; empty: no rows).

    Args:
        source: Rows with ``NOMESEGMENTO``.
        segments: The segments the user may see.

    Returns:
        The rows of those segments.
    """
    if segments is None:
        return source
    allowed = sorted(set(segments))
    unknown = [s for s in allowed if s not in SEGMENTS]
    if unknown:
        logger.warning("row-level security: segments not in the catalog: %s", unknown)
    return source.filter(nw.col("NOMESEGMENTO").is_in(allowed))


def prepare(
    query: BusinessQuery,
    source: nw.LazyFrame,
    params: Mapping[str, Any] | None = None,
    *,
    segments: Collection[str] | None = None,
) -> nw.LazyFrame:
    """The lazy, sorted result of ``query`` (see :func:`run_query`), not yet collected.

    Args:
        query: The catalog query.
        source: The admmat rows (any engine), with at least ``query.columns``.
        params: Raw parameter values (validated here).
        segments: Row-level security restriction (``None``: none).

    Returns:
        The lazy, sorted result.

    Raises:
        QueryParameterError: A parameter is invalid.
        ValueError: ``source`` lacks a column the query reads.
    """
    values = validate_params(query, params)
    missing = [c for c in query.columns if c not in source.columns]
    if missing:
        raise ValueError(f"query {query.name!r}: source lacks columns {missing}")
    frame = restrict_segments(source.select(list(query.columns)), segments)
    result = query.build(frame, values)
    if query.sort_by:
        result = result.sort(list(query.sort_by), descending=query.sort_descending, nulls_last=True)
    return result


def run_query(
    query: BusinessQuery | str,
    source: nw.LazyFrame,
    params: Mapping[str, Any] | None = None,
    *,
    segments: Collection[str] | None = None,
    backend: str | None = None,
) -> nw.DataFrame[Any]:
    """Validate ``params``, restrict to ``segments`` (row-level security) before the query,
    build, sort by ``query.sort_by`` and collect (into ``backend`` if given, e.g.
    ``"polars"``; else the engine's native eager frame).

    Args:
        query: A catalog query or its name.
        source: The admmat rows (any engine), with at least ``query.columns``.
        params: Raw parameter values (validated here).
        segments: Row-level security restriction (``None``: none).
        backend: Eager backend to collect into (``None``: the engine's own).

    Returns:
        The collected result.

    Raises:
        KeyError: Unknown query name.
        QueryParameterError: A parameter is invalid.
    """
    if isinstance(query, str):
        query = get_query(query)
    start = time.perf_counter()
    lazy = prepare(query, source, params, segments=segments)
    result = lazy.collect(backend=backend) if backend is not None else lazy.collect()
    logger.debug(
        "query %s on %s: %d rows in %.3f s",
        query.name,
        source.implementation,
        len(result),
        time.perf_counter() - start,
    )
    return result
