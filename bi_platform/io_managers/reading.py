"""Reading Parquet with Polars or Dask: :func:`load_parquet` picks the engine per load
(:func:`~bi_platform.io_managers.engine_config.choose_engine`), falls back from Polars
to Dask on failure and checks a fallback against the footers (:func:`validate_integrity`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeAlias

import dask.dataframe as dd
import narwhals as nw
import narwhals.stable.v1 as nw_v1
import narwhals.stable.v2 as nw_v2
import pandas as pd
import polars as pl
import pyarrow as pa

from bi_platform.io_managers.engine_config import (
    Engine,
    EngineConfig,
    choose_engine,
    dask_scheduler,
)
from bi_platform.io_managers.integrity import (
    VerifiedFiles,
    check_parts_consistent,
    verify_pages,
)
from bi_platform.io_managers.parquet_paths import Paths, files_size_mb, parquet_files, read_footers
from bi_platform.lib.warning_filters import silence_narwhals_dask_warning

logger = logging.getLogger(__name__)

silence_narwhals_dask_warning()


class IntegrityError(ValueError):
    """A Dask fallback read disagrees with the Parquet footers (columns, dtypes, rows)."""


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------
PolarsReader: TypeAlias = Callable[..., "pl.LazyFrame | pl.DataFrame"]
"""``reader(files, *, lazy, columns) -> pl.LazyFrame | pl.DataFrame``."""
DaskReader: TypeAlias = Callable[..., dd.DataFrame]
"""``reader(files, *, columns, config) -> dd.DataFrame``."""


def read_polars(
    files: Sequence[Path], *, lazy: bool, columns: Sequence[str] | None = None
) -> pl.LazyFrame | pl.DataFrame:
    """Polars read of the files. Lazy: a scan whose schema is resolved now, so a missing
    or corrupt footer fails here, not at ``collect()``; no data is read and projection /
    predicate pushdown still apply downstream.

    Args:
        files: Parquet files.
        lazy: Return a scan instead of reading the data now.
        columns: Columns to read (``None``: all).

    Returns:
        The Polars frame.
    """
    sources = [str(f) for f in files]
    if not lazy:
        return pl.read_parquet(
            sources, columns=list(columns) if columns else None, glob=False, hive_partitioning=False
        )
    frame = pl.scan_parquet(sources, glob=False, hive_partitioning=False)
    if columns:
        frame = frame.select(list(columns))
    frame.collect_schema()
    return frame


def read_dask(
    files: Sequence[Path],
    *,
    columns: Sequence[str] | None = None,
    config: EngineConfig | None = None,
) -> dd.DataFrame:
    """Lazy Dask read of the files (one or more partitions per file, no index).

    Args:
        files: Parquet files.
        columns: Columns to read (``None``: all).
        config: Engine flags (for the Dask scheduler).

    Returns:
        The lazy Dask frame.
    """
    with dask_scheduler(config):
        # pyarrow dtypes keep nullable integers and dates as such (NumPy dtypes would
        # turn an integer column with nulls into floats).
        return dd.read_parquet(
            [str(f) for f in files],
            columns=list(columns) if columns else None,
            index=False,
            dtype_backend="pyarrow",
        )


class _Kind(StrEnum):
    POLARS_LAZY = "pl.LazyFrame"
    POLARS_EAGER = "pl.DataFrame"
    DASK = "dd.DataFrame"
    NARWHALS_LAZY = "nw.LazyFrame"
    NARWHALS_EAGER = "nw.DataFrame"


_NARWHALS_APIS = (nw_v2, nw_v1)  # stable APIs first: their classes subclass the main ones


def _kind_of(as_type: Any) -> tuple[_Kind, Callable[..., Any]]:
    """The kind of frame to return and, for narwhals, the matching ``from_native``."""
    if as_type in (None, Any, object):
        return _Kind.NARWHALS_LAZY, nw.from_native
    if isinstance(as_type, type):
        if issubclass(as_type, pl.LazyFrame):
            return _Kind.POLARS_LAZY, nw.from_native
        if issubclass(as_type, pl.DataFrame):
            return _Kind.POLARS_EAGER, nw.from_native
        if issubclass(as_type, dd.DataFrame):
            return _Kind.DASK, nw.from_native
        for api in (*_NARWHALS_APIS, nw):
            if issubclass(as_type, api.LazyFrame):
                return _Kind.NARWHALS_LAZY, api.from_native
            if issubclass(as_type, api.DataFrame):
                return _Kind.NARWHALS_EAGER, api.from_native
    raise TypeError(
        f"cannot load Parquet as {as_type!r}: use pl.LazyFrame, pl.DataFrame, dd.DataFrame, "
        "nw.LazyFrame or nw.DataFrame"
    )


@dataclass
class Loaded:
    """The result of :func:`load_parquet`.

    ``engine``: what read the data; ``fallback``: Polars failed and Dask took over
    (``error`` says why); ``validated``: the fallback passed the integrity check;
    ``reason``: why ``engine`` was chosen first; ``size_mb``: summed over ``files``.
    """

    frame: Any
    engine: Engine
    fallback: bool
    size_mb: float
    reason: str
    files: list[Path] = field(default_factory=list)
    threshold_mb: float | None = None
    error: str | None = None
    validated: bool = False


def load_parquet(
    path_or_paths: Paths,
    as_type: Any = nw.LazyFrame,
    config: EngineConfig | None = None,
    *,
    columns: Sequence[str] | None = None,
    polars_reader: PolarsReader = read_polars,
    dask_reader: DaskReader = read_dask,
) -> Loaded:
    """Read Parquet (a file, a directory of parts, or several, read together) as ``as_type``.

    ``as_type``:

    - ``pl.LazyFrame`` (a scan, schema checked now) / ``pl.DataFrame``: always Polars;
      a Polars failure propagates (the result must be a Polars frame).
    - ``dd.DataFrame``: always Dask (lazy).
    - ``nw.LazyFrame`` (also ``None`` / ``Any``) / ``nw.DataFrame`` (``narwhals.stable``
      v1/v2 too): engine by size via :func:`choose_engine`. If Polars fails, Dask takes
      over (``fallback=True``, warning logged) and, with ``config.validate_integrity``,
      the result is checked against the footers (:class:`IntegrityError` on mismatch).
      Over Dask a ``nw.LazyFrame`` wraps the lazy ``dd.DataFrame``; a ``nw.DataFrame``
      wraps its computed pandas frame (Dask has no eager frame).

    Before either engine reads, :func:`check_files` verifies the files (the same outcome
    whatever the engine): parts with other columns or types, and pages that fail their
    checksum or cannot be decoded, raise a
    :class:`~bi_platform.io_managers.integrity.ParquetIntegrityError` naming the file.

    ``config`` defaults to :meth:`EngineConfig.from_settings`. ``columns`` projects.
    ``polars_reader`` / ``dask_reader`` replace :func:`read_polars` / :func:`read_dask`
    (tests inject failures with them). Raises FileNotFoundError naming a missing path.

    Args:
        path_or_paths: A Parquet file or directory of parts, or several.
        as_type: The frame type wanted (see above).
        config: Engine flags (``None``: from the settings).
        columns: Columns to read (``None``: all).
        polars_reader: Replaces :func:`read_polars`.
        dask_reader: Replaces :func:`read_dask`.

    Returns:
        The frame with the engine used, the reason and the files read.
    """
    config = EngineConfig.from_settings() if config is None else config
    kind, from_native = _kind_of(as_type)
    files = parquet_files(path_or_paths)
    check_files(files, config)
    size = files_size_mb(files)
    threshold: float | None = None
    if kind in (_Kind.POLARS_LAZY, _Kind.POLARS_EAGER):
        engine, reason = Engine.POLARS, f"{kind.value} requested"
    elif kind is _Kind.DASK:
        engine, reason = Engine.DASK, f"{kind.value} requested"
    else:
        threshold = config.threshold_mb()
        engine, reason = choose_engine(size, config)
    lazy = kind in (_Kind.POLARS_LAZY, _Kind.NARWHALS_LAZY)

    if engine is Engine.DASK:
        return _load_dask(
            files, kind, from_native, config, columns, dask_reader, size, reason, threshold
        )
    error: str | None = None
    try:
        frame = polars_reader(files, lazy=lazy, columns=columns)
    except POLARS_FAILURES as exc:  # incl. MemoryError and panics; not KeyboardInterrupt
        if kind in (_Kind.POLARS_LAZY, _Kind.POLARS_EAGER):
            raise
        error = f"{type(exc).__name__}: {exc}"
    if error is None:
        if kind in (_Kind.NARWHALS_LAZY, _Kind.NARWHALS_EAGER):
            frame = from_native(frame)
        return Loaded(frame, engine, False, size, reason, files, threshold)
    # Outside the except block, so the failed attempt's traceback is already released.
    logger.warning("Polars failed to load %s (%s); falling back to Dask", _describe(files), error)
    return _load_dask(
        files,
        kind,
        from_native,
        config,
        columns,
        dask_reader,
        size,
        reason,
        threshold,
        error=error,
    )


#: What a failed Polars read or collect may raise: any error, and a Rust panic
#: (``PanicException`` derives from ``BaseException``, not ``Exception``).
POLARS_FAILURES: tuple[type[BaseException], ...] = (Exception, pl.exceptions.PanicException)


def check_files(files: Sequence[Path], config: EngineConfig) -> None:
    """Parts consistent (footers) and, with ``config.verify_checksums``, every page of
    each file version verified once (see :mod:`bi_platform.io_managers.integrity`).

    Args:
        files: Parquet files.
        config: Engine flags (``verify_checksums``, ``verified_cache_dir``).
    """
    check_parts_consistent(files)
    if not config.verify_checksums:
        return
    if config.verified_cache_dir is None:
        for path in files:
            verify_pages(path)
        return
    verified = VerifiedFiles(config.verified_cache_dir).verify(files)
    if verified:
        logger.debug("verified the pages of %d file(s) under %s", verified, files[0].parent)


def _describe(files: Sequence[Path]) -> str:
    return str(files[0]) if len(files) == 1 else f"{len(files)} files under {files[0].parent}"


def _load_dask(
    files: list[Path],
    kind: _Kind,
    from_native: Callable[..., Any],
    config: EngineConfig,
    columns: Sequence[str] | None,
    dask_reader: DaskReader,
    size: float,
    reason: str,
    threshold: float | None,
    *,
    error: str | None = None,
) -> Loaded:
    fallback = error is not None
    frame: Any = dask_reader(files, columns=columns, config=config)
    if kind is _Kind.NARWHALS_EAGER:
        with dask_scheduler(config):
            frame = frame.compute()
    validated = False
    if fallback and config.validate_integrity:
        validate_integrity(frame, files, columns=columns, config=config)
        validated = True
    if kind in (_Kind.NARWHALS_LAZY, _Kind.NARWHALS_EAGER):
        silence_narwhals_dask_warning()
        frame = from_native(frame)
    return Loaded(frame, Engine.DASK, fallback, size, reason, files, threshold, error, validated)


# --------------------------------------------------------------------------------------
# integrity
# --------------------------------------------------------------------------------------
def _arrow_family(dtype: pa.DataType) -> str:
    t = pa.types
    if t.is_dictionary(dtype):
        return _arrow_family(dtype.value_type)
    checks: tuple[tuple[Callable[[pa.DataType], bool], str], ...] = (
        (t.is_null, "null"),
        (t.is_boolean, "bool"),
        (t.is_integer, "int"),
        (t.is_floating, "float"),
        (t.is_decimal, "decimal"),
        (lambda d: t.is_string(d) or t.is_large_string(d) or t.is_string_view(d), "string"),
        (
            lambda d: (
                t.is_binary(d)
                or t.is_large_binary(d)
                or t.is_binary_view(d)
                or t.is_fixed_size_binary(d)
            ),
            "binary",
        ),
        (t.is_timestamp, "datetime"),
        (t.is_date, "date"),
        (t.is_time, "time"),
        (t.is_duration, "duration"),
        (t.is_nested, "nested"),
    )
    for check, family in checks:
        if check(dtype):
            return family
    return str(dtype)


def _pandas_family(dtype: Any) -> str:
    api = pd.api.types
    if isinstance(dtype, pd.ArrowDtype):
        return _arrow_family(dtype.pyarrow_dtype)
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if api.is_object_dtype(dtype):
        return "object"
    checks: tuple[tuple[Callable[[Any], bool], str], ...] = (
        (api.is_bool_dtype, "bool"),
        (api.is_integer_dtype, "int"),
        (api.is_float_dtype, "float"),
        (api.is_datetime64_any_dtype, "datetime"),
        (api.is_timedelta64_dtype, "duration"),
        (api.is_string_dtype, "string"),
    )
    for check, family in checks:
        if check(dtype):
            return family
    return str(dtype)


# (Parquet family, pandas family) pairs that a faithful read may produce besides equality.
_COMPATIBLE = {
    ("int", "float"),  # integers with nulls
    ("bool", "float"),
    ("date", "datetime"),
    ("time", "duration"),
}


def _dtype_compatible(parquet_type: pa.DataType, dtype: Any) -> bool:
    expected, got = _arrow_family(parquet_type), _pandas_family(dtype)
    if got == expected or got == "object" or expected == "null":
        return True
    if got == "category":
        return pa.types.is_dictionary(parquet_type) or expected == "string"
    return (expected, got) in _COMPATIBLE


def validate_integrity(
    frame: dd.DataFrame | pd.DataFrame,
    path_or_paths: Paths,
    *,
    columns: Sequence[str] | None = None,
    config: EngineConfig | None = None,
) -> None:
    """Check a Dask (or computed pandas) frame against the Parquet footers.

    Columns: the same names in the same order (``columns`` when projected); dtypes:
    compatible with the Parquet types (e.g. int64 may read as float64 when nulls were
    present, strings as object); rows: Dask's computed length equals the footers'
    ``num_rows``. Raises :class:`IntegrityError` describing every mismatch.

    Args:
        frame: The Dask or pandas frame read.
        path_or_paths: The Parquet data it was read from.
        columns: The projection the frame was read with (``None``: all).
        config: Engine flags (for the Dask scheduler).
    """
    files = parquet_files(path_or_paths)
    schema, expected_rows = read_footers(files)
    expected_cols = list(columns) if columns else schema.names
    got_cols = [str(c) for c in frame.columns]
    problems: list[str] = []
    if got_cols != expected_cols:
        missing = [c for c in expected_cols if c not in got_cols]
        extra = [c for c in got_cols if c not in expected_cols]
        problems.append(
            f"columns {got_cols} != expected {expected_cols} (missing {missing}, extra {extra})"
        )
    for name, dtype in frame.dtypes.items():
        index = schema.get_field_index(str(name))
        if index >= 0 and not _dtype_compatible(schema.field(index).type, dtype):
            parquet_type = schema.field(index).type
            problems.append(
                f"column {name!r}: dtype {dtype} incompatible with Parquet {parquet_type}"
            )
    if isinstance(frame, dd.DataFrame):
        with dask_scheduler(config):
            rows = len(frame)
    else:
        rows = len(frame)
    if rows != expected_rows:
        problems.append(f"{rows} rows != {expected_rows} in the Parquet footers")
    if problems:
        raise IntegrityError(
            f"Dask read of {_describe(files)} does not match the Parquet data: "
            + "; ".join(problems)
        )
