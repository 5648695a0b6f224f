"""Size-routed Parquet storage with Polars and Dask: the pure logic, no Dagster.

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

import contextlib
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import dask
import dask.dataframe as dd
import narwhals as nw
import narwhals.stable.v1 as nw_v1
import narwhals.stable.v2 as nw_v2
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from bi_platform.io_managers.integrity import (
    PAGE_CHECKSUM_OPTIONS,
    VerifiedFiles,
    check_parts_consistent,
    verify_pages,
)
from bi_platform.lib.files import fsync_path
from bi_platform.lib.warning_filters import silence_narwhals_dask_warning

if TYPE_CHECKING:
    from distributed import Client

    from bi_platform.settings import Settings

logger = logging.getLogger(__name__)

silence_narwhals_dask_warning()

MB = 1024 * 1024
GIB = 1024**3
DEFAULT_THRESHOLD_MB = 500.0
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
STALE_TEMP_SECONDS = 3600.0
"""Hidden temporaries older than this, left by a killed writer, are removed."""
PARTIAL_SUFFIX = ".partial"

PathArg: TypeAlias = str | os.PathLike[str]
Paths: TypeAlias = PathArg | Sequence[PathArg]


class Engine(StrEnum):
    """The dataframe engine that read or wrote a table."""

    POLARS = "polars"
    DASK = "dask"


class IntegrityError(ValueError):
    """A Dask fallback read disagrees with the Parquet footers (columns, dtypes, rows)."""


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
def auto_threshold_mb(available_bytes: int | None = None) -> float:
    """The ``auto`` threshold: 1000 MB with > 16 GiB RAM available, 200 with < 8 GiB,
    else 500. ``available_bytes`` defaults to ``psutil.virtual_memory().available``."""
    if available_bytes is None:
        import psutil

        available_bytes = psutil.virtual_memory().available
    if available_bytes > 16 * GIB:
        return 1000.0
    if available_bytes < 8 * GIB:
        return 200.0
    return DEFAULT_THRESHOLD_MB


def _parse_threshold(value: str | float) -> float | None:
    """A threshold in MB, or None for ``auto``; raises ValueError when invalid."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return None
        try:
            number = float(text)
        except ValueError:
            raise ValueError(
                f"polars_threshold_mb must be a number of MB or 'auto', got {value!r}"
            ) from None
    else:
        number = float(value)
    if not number >= 0:  # also rejects NaN
        raise ValueError(f"polars_threshold_mb must be >= 0, got {value!r}")
    return number


@dataclass(frozen=True)
class EngineConfig:
    """How loads pick their engine (same fields as the env vars of the same name).

    ``polars_threshold_mb``: MB from which narwhals loads use Dask, or ``"auto"``.
    ``polars_enabled=False`` / ``force_dask=True``: narwhals loads always use Dask.
    ``validate_integrity``: check a Dask fallback's result against the Parquet footers.
    ``dask_scheduler_address``: run Dask on that ``distributed`` scheduler.
    ``verify_checksums``: before any read, decode every page of each file version not
    verified yet, checksums checked (:mod:`bi_platform.io_managers.integrity`);
    ``verified_cache_dir`` remembers the verified versions (None: verify every read).
    """

    polars_threshold_mb: str | float = "500"
    polars_enabled: bool = True
    force_dask: bool = False
    validate_integrity: bool = True
    dask_scheduler_address: str | None = None
    verify_checksums: bool = True
    verified_cache_dir: Path | None = None

    def __post_init__(self) -> None:
        _parse_threshold(self.polars_threshold_mb)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> EngineConfig:
        """From :class:`bi_platform.settings.Settings` (default: the environment now)."""
        if settings is None:
            from bi_platform.settings import get_settings

            settings = get_settings()
        return cls(
            polars_threshold_mb=settings.polars_threshold_mb,
            polars_enabled=settings.polars_enabled,
            force_dask=settings.force_dask,
            validate_integrity=settings.validate_integrity,
            dask_scheduler_address=settings.dask_scheduler_address,
            verify_checksums=settings.verify_checksums,
            verified_cache_dir=settings.home_dir / "cache" / "parquet-verified",
        )

    def with_overrides(self, **overrides: Any) -> EngineConfig:
        """A copy with the given fields replaced; ``None`` values are ignored (unset)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def is_auto(self) -> bool:
        """The threshold is ``auto`` (resolved from available RAM at each load)."""
        return _parse_threshold(self.polars_threshold_mb) is None

    def threshold_mb(self, available_bytes: int | None = None) -> float:
        """The threshold in MB, resolving ``auto`` from available RAM."""
        number = _parse_threshold(self.polars_threshold_mb)
        return auto_threshold_mb(available_bytes) if number is None else number


def choose_engine(size_mb: float, config: EngineConfig) -> tuple[Engine, str]:
    """The engine for an engine-agnostic load of ``size_mb`` and a human reason."""
    if config.force_dask:
        return Engine.DASK, "force_dask is true"
    if not config.polars_enabled:
        return Engine.DASK, "polars_enabled is false"
    threshold = config.threshold_mb()
    label = f"threshold {threshold:g} MB" + (" (auto)" if config.is_auto else "")
    if size_mb < threshold:
        return Engine.POLARS, f"{size_mb:.6g} MB < {label}"
    return Engine.DASK, f"{size_mb:.6g} MB >= {label}"


# --------------------------------------------------------------------------------------
# files, sizes, footers
# --------------------------------------------------------------------------------------
def _as_paths(path_or_paths: Paths) -> list[Path]:
    if isinstance(path_or_paths, str | os.PathLike):
        return [Path(path_or_paths)]
    paths = [Path(p) for p in path_or_paths]
    if not paths:
        raise ValueError("no Parquet paths given")
    return paths


def _natural_key(path: Path) -> list[Any]:
    """``part.2`` before ``part.10`` (the order Dask wrote them in)."""
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", path.as_posix())]


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith((".", "_")) for part in relative.parts)


def parquet_files(path_or_paths: Paths) -> list[Path]:
    """The Parquet files behind one or several paths, each a file or a directory of parts.

    Symlinks are resolved, so a reader stays on the version it listed even if a writer
    publishes a new one meanwhile. Directories contribute their ``*.parquet`` (``.parq``,
    ``.pq``) files, recursively, in natural order, skipping hidden (``.``) and
    ``_``-prefixed entries such as ``_metadata`` and in-progress writes.

    Raises FileNotFoundError naming the path when one is missing or holds no part file.
    """
    files: list[Path] = []
    for path in _as_paths(path_or_paths):
        if not path.exists():  # also a dangling symlink
            raise FileNotFoundError(f"no Parquet file or directory at {path}")
        real = path.resolve()
        if real.is_dir():
            parts = [
                f
                for f in real.rglob("*")
                if f.suffix in PARQUET_SUFFIXES
                and not _is_hidden(f.relative_to(real))
                and f.is_file()
            ]
            if not parts:
                raise FileNotFoundError(f"no Parquet part files in directory {path}")
            files.extend(sorted(parts, key=lambda f: _natural_key(f.relative_to(real))))
        else:
            files.append(real)
    return files


def size_mb(path_or_paths: Paths) -> float:
    """On-disk size in MB of all Parquet files behind the path(s)."""
    return _files_size_mb(parquet_files(path_or_paths))


def _files_size_mb(files: Sequence[Path]) -> float:
    return sum(f.stat().st_size for f in files) / MB


def _footers(files: Sequence[Path]) -> tuple[pa.Schema, int]:
    """The unified Arrow schema and total row count, from the footers only."""
    schemas: list[pa.Schema] = []
    rows = 0
    for f in files:
        meta = pq.read_metadata(f)
        rows += meta.num_rows
        schemas.append(meta.schema.to_arrow_schema().remove_metadata())
    try:
        schema = pa.unify_schemas(schemas) if len(schemas) > 1 else schemas[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"Parquet files have incompatible schemas: {exc}") from exc
    return schema, rows


def parquet_schema(path_or_paths: Paths) -> dict[str, str]:
    """``{column: Arrow type}`` of the Parquet data, read from the footers only."""
    schema, _ = _footers(parquet_files(path_or_paths))
    return {f.name: str(f.type) for f in schema}


def parquet_row_count(path_or_paths: Paths) -> int:
    """Total rows of the Parquet data, summed from the footers (no data read)."""
    return sum(pq.read_metadata(f).num_rows for f in parquet_files(path_or_paths))


# --------------------------------------------------------------------------------------
# Dask cluster
# --------------------------------------------------------------------------------------
_clients: dict[str, Client] = {}
_clients_lock = threading.Lock()


def dask_client(address: str) -> Client:
    """A ``distributed.Client`` for ``address``, created once per process and reused.

    It becomes the process's default client, so lazy Dask frames returned by
    :func:`load_parquet` also compute on the cluster.
    """
    from distributed import Client

    with _clients_lock:
        client = _clients.get(address)
        if client is None or client.status not in ("running", "connecting", "newly-created"):
            client = Client(address, set_as_default=True)
            _clients[address] = client
        return client


def close_dask_clients() -> None:
    """Close the clients made by :func:`dask_client` (newest first)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in reversed(clients):
        with contextlib.suppress(Exception):
            client.close()


@contextlib.contextmanager
def dask_scheduler(config: EngineConfig | None) -> Iterator[Client | None]:
    """Within the block Dask computes on ``config.dask_scheduler_address`` if set."""
    if config is None or not config.dask_scheduler_address:
        yield None
        return
    client = dask_client(config.dask_scheduler_address)
    with dask.config.set(scheduler=client):
        yield client


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
    predicate pushdown still apply downstream."""
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
    """Lazy Dask read of the files (one or more partitions per file, no index)."""
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
    """
    config = EngineConfig.from_settings() if config is None else config
    kind, from_native = _kind_of(as_type)
    files = parquet_files(path_or_paths)
    check_files(files, config)
    size = _files_size_mb(files)
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
    each file version verified once (see :mod:`bi_platform.io_managers.integrity`)."""
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
    """
    files = parquet_files(path_or_paths)
    schema, expected_rows = _footers(files)
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


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------
@dataclass
class Written:
    """The result of :func:`write_parquet` (rows and schema read back from the footers)."""

    path: Path
    rows: int
    schema: dict[str, str]
    size_mb: float
    engine: Engine
    seconds: float
    files: int = 1
    staged: Path | None = None  # written but not published yet (``publish=False``)


def _temp_sibling(final: Path, tag: str = "tmp") -> Path:
    """A hidden, unique sibling of ``final`` (invisible to :func:`parquet_files`)."""
    return final.parent / f".{final.name}.{tag}-{uuid.uuid4().hex}"


def _versions_dir(final: Path) -> Path:
    return final.parent / f".{final.name}.versions"


def _remove(path: Path) -> None:
    """Remove a file, symlink or directory tree if it exists."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)


def _remove_stale_temps(final: Path) -> None:
    """Drop temporaries of ``final`` left by writers killed over an hour ago."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    for entry in final.parent.glob(f".{_glob_escape(final.name)}.tmp-*"):
        with contextlib.suppress(OSError):
            if entry.lstat().st_mtime < cutoff:
                _remove(entry)


def _glob_escape(text: str) -> str:
    """``text`` with glob metacharacters escaped."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _rename_over(source: Path, target: Path) -> None:
    """``os.replace``: atomic on POSIX for a file or symlink over a file or symlink."""
    source.replace(target)


def _publish(new: Path, final: Path) -> None:
    """Atomically put ``new`` (file or symlink) at ``final``.

    A file or symlink is swapped in one ``os.replace``. A plain directory at ``final``
    (not ours: ours are symlinks) cannot be replaced atomically: it is renamed aside
    first, so for an instant ``final`` is missing (never partial).
    """
    if final.is_dir() and not final.is_symlink():
        aside = _temp_sibling(final, "old")
        _rename_over(final, aside)
        try:
            _rename_over(new, final)
        except BaseException:
            _rename_over(aside, final)
            raise
        shutil.rmtree(aside, ignore_errors=True)
    else:
        _rename_over(new, final)
    fsync_path(final.parent)


LOCK_NAME = ".parquet-publish.lock"


def _lock(final: Path) -> FileLock:
    """Serializes publishing (and pruning) among writers in ``final``'s directory (one
    hidden lock file per directory; held for milliseconds, not while writing data)."""
    return FileLock(final.parent / LOCK_NAME)


def _prune_versions(final: Path, keep_previous: int) -> None:
    """Delete Dask versions of ``final`` except the published one, the newest
    ``keep_previous`` others (so readers of the previous version can finish) and those
    still being written (``*.partial``, unless left by a writer killed over an hour ago).
    Best effort: a failure to delete is ignored. Called under :func:`_lock`."""
    versions = _versions_dir(final)
    if not versions.is_dir():
        return
    current = final.resolve() if final.is_symlink() else None
    cutoff = time.time() - STALE_TEMP_SECONDS
    done: list[Path] = []
    for entry in versions.iterdir():
        with contextlib.suppress(OSError):
            if entry.name.endswith(PARTIAL_SUFFIX):
                if entry.lstat().st_mtime < cutoff:
                    _remove(entry)
            elif entry.resolve() != current:
                done.append(entry)
    for old in sorted(done, key=lambda v: v.name, reverse=True)[keep_previous:]:
        with contextlib.suppress(OSError):
            _remove(old)
    with contextlib.suppress(OSError):
        versions.rmdir()  # only succeeds when empty


def _to_native(frame: Any) -> Any:
    if isinstance(frame, nw.DataFrame | nw.LazyFrame):
        silence_narwhals_dask_warning()
        return nw.to_native(frame)
    return frame


def _to_polars(native: Any) -> pl.DataFrame | pl.LazyFrame | None:
    """Polars frames as they are; pandas / pyarrow data converted; else None."""
    if isinstance(native, pl.DataFrame | pl.LazyFrame):
        return native
    if isinstance(native, pd.DataFrame):
        named_index = any(name is not None for name in native.index.names)
        return pl.from_pandas(native, include_index=named_index)
    if isinstance(native, pa.Table | pa.RecordBatch):
        converted = pl.from_arrow(native)
        return converted if isinstance(converted, pl.DataFrame) else converted.to_frame()
    return None


def write_parquet(
    frame: Any,
    path: PathArg,
    *,
    config: EngineConfig | None = None,
    keep_previous: int = 1,
    publish: bool = True,
) -> Written:
    """Write a frame as Parquet at ``path``, atomically; the old data stays until then.

    - ``pl.LazyFrame`` (streamed with ``sink_parquet``), ``pl.DataFrame``, and pandas /
      pyarrow data: one file, written to a hidden temporary sibling, fsynced, then renamed
      over ``path`` (``os.replace``).
    - ``dd.DataFrame``: a directory of ``part.N.parquet`` files, written into a fresh
      hidden version directory ``.<name>.versions/<id>.partial/``, fsynced, renamed to
      ``<id>/`` and published by replacing ``path`` with a relative symlink to it
      (``os.replace`` of a temporary symlink). A named index is written as a column.
    - narwhals frames: by their native frame.

    Guarantee (POSIX, local or shared file system): at every instant ``path`` is the
    complete old table or the complete new one, never partial, missing or mixed, also
    when a file replaces a directory or vice versa. A failure at any point (including a
    computation that raises halfway or a killed process) leaves the old table intact;
    temporaries are removed on error, and those of a killed writer are hidden from
    readers and cleaned up by a later write after ``STALE_TEMP_SECONDS``. Publishing is
    serialized by a hidden lock file in the directory (the last writer wins) and
    never deletes another writer's version in progress. Readers resolve the symlink
    (:func:`parquet_files`), so a lazy Dask read stays on its version; ``keep_previous``
    superseded versions are kept for such readers, older ones deleted. (A lazy Polars
    scan of a single file reads whichever complete file is at ``path`` when collected.)

    Exception: a *plain* directory at ``path`` (not written by this module, or on a file
    system without symlinks) is renamed aside to ``.<name>.old-<id>`` before the new data
    is renamed in: ``path`` is missing for that instant, and after a crash right then
    the old data is in that ``.old-`` directory.

    Every file is written with Parquet page checksums.

    ``publish=False`` (write-audit-publish): the new version is written and flushed but
    ``path`` keeps the current table; :attr:`Written.staged` is where the new version
    is (a hidden ``.<name>.staged-<id>`` file, or a version directory), for
    :func:`publish_staged` once it passed its checks. A staged version that is never
    published stays for diagnosis (the newest :data:`KEEP_STAGED` per table).

    ``config`` supplies the Dask scheduler address. Returns a :class:`Written` whose
    rows and schema are read back from the footers of what was written.
    """
    start = time.perf_counter()
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(final)
    native = _to_native(frame)
    polars_frame = _to_polars(native)
    if polars_frame is not None:
        staged = _write_file(polars_frame, final, keep_previous, publish)
        engine = Engine.POLARS
    elif isinstance(native, dd.DataFrame):
        staged = _write_directory(native, final, config, keep_previous, publish)
        engine = Engine.DASK
    else:
        raise TypeError(
            f"cannot write {type(frame).__name__} as Parquet: expected a Polars DataFrame/"
            "LazyFrame, a Dask DataFrame, pandas / pyarrow data, or a narwhals frame of those"
        )
    files = parquet_files(staged or final)
    schema, rows = _footers(files)
    return Written(
        path=final,
        rows=rows,
        schema={f.name: str(f.type) for f in schema},
        size_mb=_files_size_mb(files),
        engine=engine,
        seconds=time.perf_counter() - start,
        files=len(files),
        staged=staged,
    )


#: Unpublished (staged) versions kept per table, newest first, for diagnosis.
KEEP_STAGED = 2
STAGED_TAG = "staged"


def _prune_staged(final: Path, keep: int = KEEP_STAGED) -> None:
    """Delete staged files of ``final`` beyond the newest ``keep`` (best effort)."""
    staged = sorted(
        final.parent.glob(f".{_glob_escape(final.name)}.{STAGED_TAG}-*"),
        key=lambda p: p.lstat().st_mtime_ns,
        reverse=True,
    )
    for old in staged[keep:]:
        with contextlib.suppress(OSError):
            _remove(old)


def publish_staged(staged: PathArg, path: PathArg, *, keep_previous: int = 1) -> None:
    """Publish a version written with ``write_parquet(..., publish=False)`` at ``path``,
    atomically (same guarantee as :func:`write_parquet`)."""
    staged, final = Path(staged), Path(path)
    if not staged.exists():
        raise FileNotFoundError(f"no staged version at {staged} (published already?)")
    with _lock(final):
        if staged.is_dir():
            link = _temp_sibling(final)
            try:
                link.symlink_to(os.path.relpath(staged, final.parent), target_is_directory=True)
            except (OSError, NotImplementedError):
                _publish_directory(staged, final)
            else:
                _publish(link, final)
        else:
            _publish(staged, final)
        _prune_versions(final, keep_previous)


def _write_file(
    frame: pl.DataFrame | pl.LazyFrame, final: Path, keep_previous: int, publish: bool
) -> Path | None:
    tmp = _temp_sibling(final, STAGED_TAG if not publish else "tmp")
    try:
        if isinstance(frame, pl.LazyFrame):
            frame = frame.collect()
        frame.write_parquet(tmp, use_pyarrow=True, pyarrow_options=dict(PAGE_CHECKSUM_OPTIONS))
        fsync_path(tmp)
        if not publish:
            _prune_staged(final)
            return tmp
        with _lock(final):
            _publish(tmp, final)
            _prune_versions(final, keep_previous)
    except BaseException:
        _remove(tmp)  # gone already once published
        raise
    return None


def _write_directory(
    frame: dd.DataFrame,
    final: Path,
    config: EngineConfig | None,
    keep_previous: int,
    publish: bool,
) -> Path | None:
    if frame.index.name is not None:
        frame = frame.reset_index()
    versions = _versions_dir(final)
    version = versions / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
    partial = version.with_name(version.name + PARTIAL_SUFFIX)
    link = _temp_sibling(final)
    versions.mkdir(parents=True, exist_ok=True)
    published = False
    try:
        with dask_scheduler(config):
            frame.to_parquet(str(partial), write_index=False, **PAGE_CHECKSUM_OPTIONS)
        for part in partial.iterdir():
            fsync_path(part)
        fsync_path(partial)
        if not publish:
            _rename_over(partial, version)
            return version
        with _lock(final):
            _rename_over(partial, version)
            try:
                link.symlink_to(os.path.relpath(version, final.parent), target_is_directory=True)
            except (OSError, NotImplementedError):  # no symlinks here: move the directory
                _publish_directory(version, final)
            else:
                _publish(link, final)
            published = True
            _prune_versions(final, keep_previous)
        return None
    except BaseException:
        if not published:
            for leftover in (link, partial, version):
                _remove(leftover)
            with contextlib.suppress(OSError):
                versions.rmdir()  # only when empty (no published version)
        raise


def _publish_directory(version: Path, final: Path) -> None:
    """Without symlinks: move the finished directory to ``final`` (briefly missing)."""
    aside = _temp_sibling(final, "old")
    had_old = final.exists() or final.is_symlink()
    if had_old:
        _rename_over(final, aside)
    try:
        _rename_over(version, final)
    except BaseException:
        if had_old:
            _rename_over(aside, final)
        raise
    _remove(aside)
    fsync_path(final.parent)
