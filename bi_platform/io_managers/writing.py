"""Atomic Parquet writes: :func:`write_parquet` publishes a Polars/pandas/Arrow frame as
one file (temporary file renamed over the target) and a Dask frame as a versioned
directory behind a symlink swapped atomically; :func:`publish_staged` publishes a
version written with ``publish=False``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import narwhals as nw
import pandas as pd
import polars as pl
import pyarrow as pa
from filelock import FileLock

from bi_platform.io_managers.engine_config import Engine, EngineConfig, dask_scheduler
from bi_platform.io_managers.integrity import (
    PAGE_CHECKSUM_OPTIONS,
)
from bi_platform.io_managers.parquet_paths import (
    PathArg,
    files_size_mb,
    parquet_files,
    read_footers,
)
from bi_platform.lib.files import fsync_path
from bi_platform.lib.warning_filters import silence_narwhals_dask_warning

silence_narwhals_dask_warning()

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
STALE_TEMP_SECONDS = 3600.0
"""Hidden temporaries older than this, left by a killed writer, are removed."""
PARTIAL_SUFFIX = ".partial"


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

    The :class:`Written` rows and schema are read back from the footers of what was
    written.

    Args:
        frame: A Polars, Dask, pandas, pyarrow or narwhals frame.
        path: The target path.
        config: Engine flags (for the Dask scheduler).
        keep_previous: Superseded Dask versions kept for readers still on them.
        publish: Publish now (``False``: stage only, see above).

    Returns:
        What was written.
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
    schema, rows = read_footers(files)
    return Written(
        path=final,
        rows=rows,
        schema={f.name: str(f.type) for f in schema},
        size_mb=files_size_mb(files),
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
    atomically (same guarantee as :func:`write_parquet`).

    Args:
        staged: ``Written.staged`` of the staged write.
        path: The target path.
        keep_previous: Superseded Dask versions kept for readers still on them.
    """
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
