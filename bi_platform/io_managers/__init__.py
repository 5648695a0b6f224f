"""IO managers shared by the domains (the size-routed Polars/Dask Parquet IO manager).

:class:`HybridParquetIOManager` is imported lazily, so ``bi_platform.io_managers`` and its
pure :mod:`~bi_platform.io_managers.engines` can be used without importing Dagster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bi_platform.io_managers.engines import (
    Engine,
    EngineConfig,
    IntegrityError,
    Loaded,
    Written,
    auto_threshold_mb,
    choose_engine,
    close_dask_clients,
    dask_client,
    load_parquet,
    parquet_files,
    parquet_row_count,
    parquet_schema,
    size_mb,
    validate_integrity,
    write_parquet,
)

if TYPE_CHECKING:
    from bi_platform.io_managers.hybrid_parquet import HybridParquetIOManager

__all__ = [
    "Engine",
    "EngineConfig",
    "HybridParquetIOManager",
    "IntegrityError",
    "Loaded",
    "Written",
    "auto_threshold_mb",
    "choose_engine",
    "close_dask_clients",
    "dask_client",
    "load_parquet",
    "parquet_files",
    "parquet_row_count",
    "parquet_schema",
    "size_mb",
    "validate_integrity",
    "write_parquet",
]


def __getattr__(name: str) -> Any:
    if name == "HybridParquetIOManager":
        from bi_platform.io_managers.hybrid_parquet import HybridParquetIOManager

        return HybridParquetIOManager
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
