"""Size-routed Parquet storage with Polars and Dask: the pure logic, no Dagster.

This module is the public entry point; the code lives in four modules, re-exported here:
:mod:`~bi_platform.io_managers.engine_config` (engine flags, threshold, Dask clients),
:mod:`~bi_platform.io_managers.parquet_paths` (files, sizes, footers),
:mod:`~bi_platform.io_managers.reading` (Polars/Dask reads, fallback, integrity check)
and :mod:`~bi_platform.io_managers.writing` (atomic writes and publishing).

The :class:`~bi_platform.io_managers.hybrid_parquet.HybridParquetIOManager` is a thin
Dagster wrapper around this module; the retail assets, the benchmark and the table
inventory call it directly.

Reading
    :func:`load_parquet` reads one Parquet file, a directory of part files, or several of
    either (e.g. one per partition) as a Polars, Dask or narwhals frame. For a narwhals
    frame the engine is chosen per load from the summed on-disk size
    (:func:`choose_engine`): Polars below ``EngineConfig.threshold_mb()``, Dask at or
    above it, Dask whenever ``polars_enabled`` is false or ``force_dask`` is true. If the
    Polars read fails (any ``Exception``, including ``MemoryError``) the load falls back
    to Dask and, with ``validate_integrity``, checks the Dask frame's columns, dtypes and
    row count against the Parquet footers (:func:`validate_integrity`).

Writing
    :func:`write_parquet` writes atomically: Polars frames (and pandas / pyarrow data) go
    to one file via a hidden temporary file renamed over the target; Dask frames go to a
    directory of part files. The directory is written into a fresh, hidden *version*
    directory and published by atomically replacing a symlink at the target path, so
    readers see either the old or the new version, never a mix. A file may replace a
    directory and vice versa. See :func:`write_parquet` for the exact guarantee.

Sizes are in MB of 2**20 bytes.
"""

from __future__ import annotations

from bi_platform.io_managers.engine_config import (
    DEFAULT_THRESHOLD_MB,
    GIB,
    MB,
    Engine,
    EngineConfig,
    auto_threshold_mb,
    choose_engine,
    close_dask_clients,
    dask_client,
    dask_scheduler,
)
from bi_platform.io_managers.parquet_paths import (
    PARQUET_SUFFIXES,
    PathArg,
    Paths,
    parquet_files,
    parquet_row_count,
    parquet_schema,
    size_mb,
)
from bi_platform.io_managers.reading import (
    POLARS_FAILURES,
    DaskReader,
    IntegrityError,
    Loaded,
    PolarsReader,
    check_files,
    load_parquet,
    read_dask,
    read_polars,
    validate_integrity,
)
from bi_platform.io_managers.writing import (
    KEEP_STAGED,
    LOCK_NAME,
    PARTIAL_SUFFIX,
    STAGED_TAG,
    STALE_TEMP_SECONDS,
    Written,
    publish_staged,
    write_parquet,
)

__all__ = [
    "DEFAULT_THRESHOLD_MB",
    "GIB",
    "KEEP_STAGED",
    "LOCK_NAME",
    "MB",
    "PARQUET_SUFFIXES",
    "PARTIAL_SUFFIX",
    "POLARS_FAILURES",
    "STAGED_TAG",
    "STALE_TEMP_SECONDS",
    "DaskReader",
    "Engine",
    "EngineConfig",
    "IntegrityError",
    "Loaded",
    "PathArg",
    "Paths",
    "PolarsReader",
    "Written",
    "auto_threshold_mb",
    "check_files",
    "choose_engine",
    "close_dask_clients",
    "dask_client",
    "dask_scheduler",
    "load_parquet",
    "parquet_files",
    "parquet_row_count",
    "parquet_schema",
    "publish_staged",
    "read_dask",
    "read_polars",
    "size_mb",
    "validate_integrity",
    "write_parquet",
]
